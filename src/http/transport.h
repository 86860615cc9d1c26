// The transport both outbound clients stand on (issue 12, item 7: one outbound HTTP stack for
// backends, webhooks, budget alerts and Sentry). HttpClient (client.cpp: request/response, SSE,
// used by webhooks, alerts, Sentry and probes) and UpstreamClient (upstream.cpp: streaming calls
// to model backends with per-phase deadlines and cancellation) differ in what they do with a
// connection, not in how one is made: this is the one place that resolves, connects, sets up
// TLS (system CA store plus an optional CA file, SNI, host-name verification, TLS >= 1.2) and
// runs Beast's asynchronous operations to completion on the connection's own io_context.
//
// Internal to the http module: it includes Beast, which only client.cpp, upstream.cpp and
// async_upstream.cpp (which shares the deadline phases, failure classes and TLS setup) see.
//
// Threading: a Transport is used by one thread at a time (it may move between threads while
// idle, e.g. through a pool); tls_context() is safe from any thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/verb.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>

#include "core/clock.h"
#include "core/result.h"
#include "http/request.h"

namespace gantry::http::transport {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace ssl = boost::asio::ssl;
using tcp = asio::ip::tcp;

// One connection: plain or TLS, with the read buffer that outlives each response.
struct Transport {
  asio::io_context ioc;
  std::shared_ptr<ssl::context> ctx; // declared before the streams: outlives them
  std::optional<beast::tcp_stream> tcp;
  std::optional<beast::ssl_stream<beast::tcp_stream>> tls;
  beast::flat_buffer buffer;

  // Room for a whole small response from the first read: an empty flat_buffer makes Beast read
  // 512 bytes at a time, so a response with a few headers took two reads (and a timer update
  // and an epoll wait in between) where 8 KiB take one, as nginx's and wrk's buffers do.
  Transport() { buffer.reserve(8192); }

  beast::tcp_stream &lowest() { return tls ? beast::get_lowest_layer(*tls) : *tcp; }
  bool open() const { return tcp.has_value() || tls.has_value(); }
  // Calls f with the stream requests are written to and read from.
  template <typename F> beast::error_code with(F &&f) {
    if (tls)
      return f(*tls);
    return f(*tcp);
  }
  void close();
  ~Transport() { close(); }
};

// Runs one asynchronous operation to completion on the transport's io_context: only the
// asynchronous tcp_stream operations honour expires_after(). Other handlers (a total deadline)
// may stay pending.
template <typename Initiate> beast::error_code run(Transport &t, Initiate &&initiate) {
  beast::error_code result = asio::error::would_block;
  bool done = false;
  initiate([&result, &done](beast::error_code ec, auto &&...) {
    result = ec;
    done = true;
  });
  t.ioc.restart();
  while (!done && t.ioc.run_one() > 0) {
  }
  return result;
}

boost::beast::http::verb to_verb(Method m);

// An Error of kind io whose param carries its class (client.h's kConnectFailed, kTlsFailed, ...).
Error classed(std::string_view cls, std::string message);

// The tighter of a phase's timeout and what is left of the total (Deadline::max(): none), and
// the class of the error if it fires (kTotalTimeout when the total is the tighter). Shared by the
// blocking and the asynchronous upstream clients.
using Deadline = std::chrono::steady_clock::time_point;
struct Phase {
  std::chrono::steady_clock::duration limit;
  std::string_view cls;
};
Phase phase(std::chrono::milliseconds timeout, std::string_view cls, Deadline total,
            const Clock &clock);

// The classed error of a failed step of `ph`: cancelled, the phase's timeout, a malformed
// response (Beast's HTTP errors other than a cut-off), or `cls`.
Error step_failed(const Phase &ph, bool cancelled, std::string_view cls, const std::string &what,
                  beast::error_code ec);

// SNI (for names, not literal addresses) and peer verification against `host`, on a TLS stream
// not yet handshaken.
void prepare_tls(beast::ssl_stream<beast::tcp_stream> &tls, const std::string &host);

// The Host header's value: IPv6 literals bracketed, the port only when not the scheme's default.
std::string authority(const std::string &host, std::uint16_t port, bool tls);

// The TLS client context for a CA file ("" = the system store only), shared per file (a few at
// most: they come from configuration).
Result<std::shared_ptr<ssl::context>> tls_context(const std::string &ca_file);

// Where to connect: `connect_address` when given (a webhook's address, validated and pinned by
// the caller), else a blocking lookup of `host`, for names the operator configured.
Result<std::vector<tcp::endpoint>> endpoints(Transport &t, const std::string &host,
                                             std::uint16_t port,
                                             const std::string &connect_address = {});

// How a caller turns a failed step into its Error (each client classes timeouts its own way).
// `cls` is the step's class (kConnectFailed or kTlsFailed), `what` names the step and the peer.
using FailStep = std::function<Error(std::string_view cls, std::string what, beast::error_code)>;

// TCP connect to `to`, then, when `tls`, the handshake verifying `host` (SNI for names only, as
// RFC 6066 says). Each step may take `limit`.
struct ConnectSpec {
  std::string host;
  std::uint16_t port = 0;
  bool tls = false;
  std::string tls_ca_file;
  std::chrono::steady_clock::duration limit{};
};
Status connect(Transport &t, const std::vector<tcp::endpoint> &to, const ConnectSpec &spec,
               const FailStep &fail);

} // namespace gantry::http::transport
