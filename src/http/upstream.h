// The outbound client of remote model backends: streaming HTTP/1.1 requests to one origin with
// a bounded keep-alive pool, where each phase has its own deadline and its own error, and a
// request can be aborted at once from another thread.
//
// - http:// and https:// (verified against the system CA store plus an optional CA file, with
//   SNI and host-name checks), like HttpClient.
// - Deadlines: connect (TCP + TLS), first byte (request sent → response head), idle (gap
//   between two reads of the body) and total (the whole call). Each failure carries its class
//   in Error::param (kConnectTimeout, kFirstByteTimeout, kIdleTimeout, kTotalTimeout, or
//   client.h's kConnectFailed / kTlsFailed / kBadResponse; kUpstreamReset after the request
//   was sent; kCancelledCall).
// - The body is read piece by piece (chunked decoding by Beast's incremental parser); nothing
//   buffers a whole stream. read_all() takes a cap: beyond it, kResponseTooLarge.
// - A connection goes back to the pool only when its response was read to the end and the
//   server keeps it alive.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/clock.h"
#include "core/result.h"
#include "http/request.h"

namespace gantry::http {

inline constexpr std::string_view kConnectTimeout = "connect_timeout";
inline constexpr std::string_view kFirstByteTimeout = "first_byte_timeout";
inline constexpr std::string_view kIdleTimeout = "idle_timeout";
inline constexpr std::string_view kTotalTimeout = "total_timeout";
inline constexpr std::string_view kUpstreamReset = "upstream_reset";
inline constexpr std::string_view kCancelledCall = "cancelled";
inline constexpr std::string_view kResponseTooLarge = "response_too_large";

struct UpstreamOptions {
  std::string host = "127.0.0.1"; // Host header, SNI, certificate name
  std::uint16_t port = 0;
  bool tls = false;
  std::string tls_ca_file;
  std::chrono::milliseconds connect_timeout{5'000};
  std::chrono::milliseconds first_byte_timeout{120'000};
  std::chrono::milliseconds idle_timeout{60'000};
  std::chrono::milliseconds total_timeout{600'000}; // 0 = none
  int max_idle = 32;                                // keep-alive connections kept
  std::chrono::milliseconds keep_idle{30'000};      // older idle connections are closed
};

// Aborts a call from any thread. Shared between the caller and the call.
class CancelSignal {
public:
  void cancel();
  bool cancelled() const;

  // Used by UpstreamClient: `abort` runs (once) when cancel() is called while attached.
  void attach(std::function<void()> abort);
  void detach();

private:
  mutable std::mutex mu_;
  bool cancelled_ = false;
  std::function<void()> abort_;
};

struct UpstreamConnection; // upstream.cpp
class UpstreamClient;

// One request in flight, after its response head arrived. Owned by one thread.
class UpstreamCall {
public:
  ~UpstreamCall(); // returns the connection to its pool when the body was read to the end
  UpstreamCall(const UpstreamCall &) = delete;
  UpstreamCall &operator=(const UpstreamCall &) = delete;

  int status() const { return status_; }
  const Headers &headers() const { return headers_; }
  std::optional<std::string_view> header(std::string_view name) const {
    return find_header(headers_, name);
  }
  // The next piece of the body (at most 16 KiB), std::nullopt at its end.
  Result<std::optional<std::string>> read_some();
  // The rest of the body; more than `max_bytes` is kResponseTooLarge (and the rest unread).
  Result<std::string> read_all(std::size_t max_bytes);

private:
  friend class UpstreamClient;
  struct Parser;
  UpstreamCall(UpstreamClient &client, std::unique_ptr<UpstreamConnection> conn,
               std::unique_ptr<Parser> parser, std::shared_ptr<CancelSignal> cancel,
               std::chrono::steady_clock::time_point deadline);

  UpstreamClient &client_;
  std::unique_ptr<UpstreamConnection> conn_;
  std::unique_ptr<Parser> parser_;
  std::shared_ptr<CancelSignal> cancel_;
  std::chrono::steady_clock::time_point deadline_; // total; max() = none
  int status_ = 0;
  Headers headers_;
  bool done_ = false;
  bool failed_ = false;
};

// Thread-safe: any number of threads start calls; each call holds its connection exclusively.
class UpstreamClient {
public:
  UpstreamClient(UpstreamOptions options, const Clock &clock);
  ~UpstreamClient();
  UpstreamClient(const UpstreamClient &) = delete;
  UpstreamClient &operator=(const UpstreamClient &) = delete;

  // Sends the request and waits for the response head. `cancel` (optional) aborts it, and the
  // body reads after it, at once.
  Result<std::unique_ptr<UpstreamCall>> start(Method method, std::string_view target,
                                              std::string body, Headers headers,
                                              std::shared_ptr<CancelSignal> cancel = nullptr);

  const UpstreamOptions &options() const { return options_; }
  int connections_opened() const;
  int idle_connections() const;

private:
  friend class UpstreamCall;
  std::unique_ptr<UpstreamConnection> take();
  void put_back(std::unique_ptr<UpstreamConnection> conn);

  const UpstreamOptions options_;
  const Clock &clock_;
  mutable std::mutex mu_;
  std::vector<std::pair<std::unique_ptr<UpstreamConnection>, std::chrono::steady_clock::time_point>>
      idle_; // bounded by max_idle
  int opened_ = 0;
};

} // namespace gantry::http
