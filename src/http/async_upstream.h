// The asynchronous twin of UpstreamClient (upstream.h), for remote model backends: the same
// requests, deadlines, error classes, keep-alive pool and cancellation, driven by Asio/Beast
// operations on an IoLoop instead of a blocked thread. A call costs no thread while it waits
// for the upstream; each step completes by calling back.
//
// - One origin per client, http:// or https:// (the transport's TLS setup: system CA store
//   plus an optional CA file, SNI, host-name checks).
// - Deadlines as in UpstreamOptions: connect (TCP + TLS), first byte, idle (between two body
//   reads), total. Error::param classes are upstream.h's and client.h's.
// - A kept-alive connection the server had closed is retried once on a fresh one, as in the
//   blocking client, before any byte of the response arrived.
// - A connection goes back to the pool only when its response was read to the end and the
//   server keeps it alive.
//
// Threading: call(), start() and cancel() from any thread. Every callback of a call runs on a loop
// thread (never inside the method that asked for it), one at a time; read_some() and
// read_all() are called from the call's own callbacks (the head's, or the previous read's).
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "core/clock.h"
#include "core/result.h"
#include "http/io_loop.h"
#include "http/request.h"
#include "http/upstream.h"

namespace gantry::http {

class AsyncUpstreamCall : public std::enable_shared_from_this<AsyncUpstreamCall> {
public:
  using HeadDone = std::function<void(Status)>;
  // A piece of the body (valid until the next read), or std::nullopt at its end.
  using PieceDone = std::function<void(Result<std::optional<std::string_view>>)>;
  using BodyDone = std::function<void(Result<std::string>)>;

  ~AsyncUpstreamCall(); // returns the connection to its pool when the body was read to the end
  AsyncUpstreamCall(const AsyncUpstreamCall &) = delete;
  AsyncUpstreamCall &operator=(const AsyncUpstreamCall &) = delete;

  // Sends the request on a kept-alive or a new connection; `done` runs once the response head
  // arrived (then status() and headers() are set) or the call failed. Once.
  void start(HeadDone done);

  // Valid once the head callback reported success.
  int status() const { return status_; }
  const Headers &headers() const { return headers_; }
  std::optional<std::string_view> header(std::string_view name) const {
    return find_header(headers_, name);
  }
  // The next piece of the body (at most 16 KiB).
  void read_some(PieceDone done);
  // The rest of the body; more than `max_bytes` is kResponseTooLarge (and the rest unread).
  void read_all(std::size_t max_bytes, BodyDone done);
  // Aborts the pending step (it fails with kCancelledCall) and every later one. Any thread.
  void cancel();
  bool cancelled() const { return cancelled_.load(); }

  struct Impl; // async_upstream.cpp: the connection, parser and step state
  explicit AsyncUpstreamCall(std::unique_ptr<Impl> impl); // by AsyncUpstreamClient::start

private:
  friend struct Steps;
  std::unique_ptr<Impl> impl_;
  int status_ = 0;
  Headers headers_;
  std::atomic<bool> cancelled_{false};
};

// The bytes of an outbound request: request line, Host, User-Agent, `headers` (a later one
// replaces an earlier one of the same name; Content-Length, Transfer-Encoding and any name or
// value with CR/LF dropped), Content-Length, body.
std::string serialize_request(Method method, std::string_view target, std::string_view host,
                              const Headers &headers, std::string_view body);

// Thread-safe. Outlives its calls' callbacks only as long as its owner keeps it: calls hold the
// keep-alive pool (shared), not the client.
class AsyncUpstreamClient {
public:
  AsyncUpstreamClient(IoLoop &loop, UpstreamOptions options, const Clock &clock);
  ~AsyncUpstreamClient();
  AsyncUpstreamClient(const AsyncUpstreamClient &) = delete;
  AsyncUpstreamClient &operator=(const AsyncUpstreamClient &) = delete;

  // A request, not sent yet: the caller keeps it (for cancel()) before it calls start(). It
  // runs on `on` (a loop that outlives it; the caller's thread's IoLoop::current(), say), or
  // on the client's own loop when null. A loop other than the client's own must be run by one
  // thread (an HTTP server I/O thread's is): a call started on that thread takes its first step
  // at once instead of posting it.
  std::shared_ptr<AsyncUpstreamCall> call(Method method, std::string_view target, std::string body,
                                          const Headers &headers, IoLoop *on = nullptr);

  const UpstreamOptions &options() const;
  int connections_opened() const;
  int idle_connections() const;

  struct Pool; // async_upstream.cpp

private:
  std::shared_ptr<Pool> pool_;
};

} // namespace gantry::http
