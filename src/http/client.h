// The one outbound HTTP/1.1 client: everything that leaves Gantry (webhooks, budget alerts,
// Sentry) and the tests' and benchmarks' API client.
//
// - http:// and https:// (OpenSSL 3 through Beast's ssl_stream): the peer is verified against
//   the system CA store plus an optional CA file (`tls_ca_file`, for private CAs and tests), with
//   SNI and host-name verification.
// - Separate connect (TCP + TLS handshake), write and first-byte deadlines, and an optional total
//   deadline over the whole request, connect included.
// - The response body is capped by the caller: bytes past `max_response_body` are never
//   buffered; the connection is closed instead of read to its end (body_truncated is set).
// - `connect_address` connects to a pre-resolved, already-validated IP while the Host header,
//   SNI and certificate check still use `host` (DNS pinning against rebinding, audit H6).
// - Failures carry a coarse class in Error::param (kConnectFailed, kTimeout, kTlsFailed,
//   kBadResponse), so callers can record what went wrong without the raw error text.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "core/clock.h"
#include "core/result.h"
#include "http/request.h"

namespace gantry::http {

// Error::param of a failed client call.
inline constexpr std::string_view kConnectFailed = "connect_failed"; // DNS, TCP connect, reset
inline constexpr std::string_view kTimeout = "timeout";              // any deadline
inline constexpr std::string_view kTlsFailed = "tls_failed";         // handshake or verification
inline constexpr std::string_view kBadResponse = "bad_response";     // unparsable response

// An io Error whose param is one of the classes above (webhook deliveries record the class).
inline Error classed_error(std::string_view cls, std::string message) {
  Error e = Error::io(std::move(message));
  e.param = std::string(cls);
  return e;
}

struct ClientResponse {
  int status = 0;
  Headers headers;
  std::string body;
  bool body_truncated = false; // the body was longer than max_response_body

  std::optional<std::string_view> header(std::string_view name) const {
    return find_header(headers, name);
  }
};

struct ClientOptions {
  std::string host = "127.0.0.1"; // the Host header, SNI and the name the certificate must match
  std::uint16_t port = 0;
  bool tls = false;
  std::string tls_ca_file; // extra trusted CAs (PEM), besides the system store
  // A literal IP to connect to instead of resolving `host` (a pinned, validated address).
  std::string connect_address;
  std::chrono::milliseconds timeout{10'000};       // each phase below that is left at 0
  std::chrono::milliseconds connect_timeout{0};    // TCP connect + TLS handshake
  std::chrono::milliseconds write_timeout{0};      // sending the request
  std::chrono::milliseconds first_byte_timeout{0}; // until the response head is read
  std::chrono::milliseconds total_timeout{0};      // the whole request; 0 = none
  std::uint64_t max_response_body = 256ull << 20;  // bytes kept; the rest is never read
};

// Splits an http(s) URL into the options' host/port/tls and the origin-form target. IPv6
// literals come without their brackets. Keeps the other fields of `base`.
struct ParsedUrl {
  ClientOptions options;
  std::string target; // path and query, "/" when empty
};
Result<ParsedUrl> parse_url(std::string_view url, ClientOptions base = {});

// A Server-Sent Events stream opened by HttpClient::open_sse. Owned by one thread at a time.
// Destroying it closes the connection, which the server sees as a client disconnect.
class SseStream {
public:
  SseStream(SseStream &&) noexcept;
  SseStream &operator=(SseStream &&) noexcept;
  ~SseStream();

  int status() const;
  const Headers &headers() const;
  // The data of the next event (multi-line data joined with '\n'), std::nullopt at the end of
  // the stream, or an error (timeout, connection reset).
  Result<std::optional<std::string>> next_event();
  void close();

private:
  friend class HttpClient;
  struct Impl;
  explicit SseStream(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

struct Connection; // one open (TLS) connection with its own io_context; client.cpp

// Owned by one thread at a time. Keeps one keep-alive connection and reconnects when the
// server closed it.
class HttpClient {
public:
  explicit HttpClient(ClientOptions options);
  ~HttpClient();
  HttpClient(const HttpClient &) = delete;
  HttpClient &operator=(const HttpClient &) = delete;

  Result<ClientResponse> request(Method method, std::string_view target, std::string body = {},
                                 Headers headers = {});
  Result<ClientResponse> get(std::string_view target, Headers headers = {}) {
    return request(Method::kGet, target, {}, std::move(headers));
  }
  Result<ClientResponse> post(std::string_view target, std::string body, Headers headers = {}) {
    return request(Method::kPost, target, std::move(body), std::move(headers));
  }

  // Sends a request on a fresh connection and returns once the response head arrived; read
  // events with SseStream::next_event(). A non-2xx response is still returned (body unread).
  Result<SseStream> open_sse(Method method, std::string_view target, std::string body = {},
                             Headers headers = {});

  // Number of TCP connections this client has opened (keep-alive tests assert on it).
  int connections_opened() const;

private:
  ClientOptions options_;
  std::unique_ptr<Connection> conn_;
  int opened_ = 0;
};

// Outbound requests to any origin from any thread, with a small keep-alive pool per origin
// (scheme, host, port, pinned address, CA file). Thread-safe; a request holds its connection
// exclusively, so concurrency is limited only by the callers' threads.
class OutboundClient {
public:
  struct Options {
    int max_idle_per_origin = 2;
    int max_idle_total = 32;
    std::chrono::milliseconds idle_timeout{30'000}; // idle pooled connections older are closed
  };
  OutboundClient(Options options, const Clock &clock);
  ~OutboundClient();
  OutboundClient(const OutboundClient &) = delete;
  OutboundClient &operator=(const OutboundClient &) = delete;

  // `o` names the origin and this request's deadlines and body cap.
  Result<ClientResponse> request(const ClientOptions &o, Method method, std::string_view target,
                                 std::string body = {}, Headers headers = {});
  int connections_opened() const;
  int idle_connections() const;

private:
  struct Idle {
    std::unique_ptr<Connection> conn;
    std::chrono::steady_clock::time_point since;
  };
  std::unique_ptr<Connection> take(const std::string &key);
  void put(const std::string &key, std::unique_ptr<Connection> c);

  const Options options_;
  const Clock &clock_;
  mutable std::mutex mu_;
  std::unordered_map<std::string, std::vector<Idle>> idle_; // bounded by max_idle_*
  int idle_count_ = 0;
  int opened_ = 0;
};

} // namespace gantry::http
