// HTTP/1.1 server over Boost.Beast/Asio. This header stays free of Boost so that other
// modules can include it cheaply; the implementation is in server.cpp.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "core/result.h"
#include "http/body_sink.h"
#include "http/request.h"
#include "http/response.h"
#include "http/response_writer.h"

namespace gantry::http {

// Immutable after HttpServer is constructed; validated by start().
struct ServerOptions {
  std::string host = "127.0.0.1";
  std::uint16_t port = 0; // 0 picks an ephemeral port; read it back with HttpServer::port()
  int io_threads = 2;     // one io_context per thread; a connection stays on one thread
  int backlog = 1024;

  std::size_t max_header_bytes = 16 * 1024;     // over → 431 and close
  std::size_t max_body_bytes = 8 * 1024 * 1024; // over → 413 and close
  // A stalled reader must not make us buffer without bound: once this many response bytes
  // are queued and unsent, the connection is dropped and the writer reports closed.
  std::size_t max_pending_write_bytes = 8 * 1024 * 1024;

  // Timeouts are wall-clock network deadlines enforced by Asio timers.
  std::chrono::milliseconds header_timeout{10'000}; // from the first byte of a request head
  std::chrono::milliseconds body_timeout{30'000};   // from the end of the head
  std::chrono::milliseconds idle_timeout{60'000};   // keep-alive wait for the next request
  std::chrono::milliseconds write_timeout{30'000};  // one queued write may not stall longer
  // After an error response that closes the connection (413, 400), unread request bytes are
  // drained for this long so that the client sees the response instead of a reset.
  std::chrono::milliseconds linger_timeout{1'000};

  // Resource bounds (audit H2, M6). At max_connections the listener pauses until a
  // connection closes: pending clients wait in the kernel backlog instead of being accepted
  // and dropped, which would cost a file descriptor and a reset each. 0 = automatic:
  // min(RLIMIT_NOFILE - 128, 10000), the reserve being for SQLite, logs and outbound clients.
  std::size_t max_connections = 0;
  // Sum of the bodies being read across all connections (declared Content-Length, or
  // max_body_bytes for a chunked body). A request that does not fit gets 503 + Retry-After
  // before its body is read.
  std::size_t max_inflight_body_bytes = 256 * 1024 * 1024;
  // Called once a request head is complete, before the body is read (the Request has no
  // body yet). A returned response is sent instead and the connection closes, so a caller
  // can refuse e.g. unauthenticated uploads without buffering them.
  std::function<std::optional<Response>(const Request &)> on_headers;

  // Bodies streamed to a sink instead of buffered (Batch API uploads). `streamed_body_limit`
  // says, from the head alone, that a request's body streams and how large it may be (0: it is
  // buffered under max_body_bytes); `body_sink` then opens the sink. A streamed body is
  // refused with 413 past its limit, and once a piece was handed over, a client that sends
  // nothing more for body_timeout is answered 408 and the sink aborted.
  std::function<std::size_t(const Request &)> streamed_body_limit;
  BodySinkFactory body_sink;

  // Renders 400/413/431/500 bodies the server raises itself (default: error_response).
  ErrorRenderer error_renderer;
};

// A snapshot of the server's counters; each degraded path has its own.
struct ServerStats {
  std::uint64_t active_connections = 0;
  std::uint64_t connections_accepted = 0;
  std::uint64_t requests_served = 0;    // responses fully written
  std::uint64_t requests_in_flight = 0; // handed to a handler, response not finished
  std::uint64_t header_timeouts = 0;
  std::uint64_t body_timeouts = 0;
  std::uint64_t idle_timeouts = 0;
  std::uint64_t write_timeouts = 0;
  std::uint64_t payload_too_large = 0;
  std::uint64_t headers_too_large = 0;
  std::uint64_t bad_requests = 0;
  std::uint64_t client_disconnects = 0;    // peer left before its response finished
  std::uint64_t slow_client_overflows = 0; // dropped for exceeding max_pending_write_bytes
  std::uint64_t abandoned_responses = 0;   // handler dropped the writer without answering
  std::uint64_t accept_pauses = 0;         // listener paused at max_connections
  std::uint64_t accept_errors = 0;         // accept failed (EMFILE…); retried after a back-off
  std::uint64_t body_budget_refusals = 0;  // 503: max_inflight_body_bytes exhausted
  std::uint64_t head_refusals = 0;         // answered by on_headers before the body was read
  std::uint64_t unsupported_encodings = 0; // 501: Transfer-Encoding other than "chunked"
};

// Created, started and shut down from one control thread; it runs its own I/O threads.
class HttpServer {
public:
  HttpServer(ServerOptions options, Handler handler);
  ~HttpServer(); // shutdown(0) if still running
  HttpServer(const HttpServer &) = delete;
  HttpServer &operator=(const HttpServer &) = delete;

  // Binds host:port and starts the I/O threads. Bind/listen failures come back as kIo errors.
  [[nodiscard]] Status start();
  // The bound port (useful with port 0); 0 before start().
  std::uint16_t port() const;

  // Closes the listening socket and idle keep-alive connections. Requests in flight continue;
  // their responses carry "Connection: close".
  void stop_accepting();
  // stop_accepting(), then waits up to `grace` for in-flight requests (including SSE streams)
  // to finish, then closes every connection (writers report closed) and joins the I/O
  // threads. Returns true if nothing was in flight when the connections were closed.
  bool shutdown(std::chrono::milliseconds grace);

  ServerStats stats() const;

private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

} // namespace gantry::http
