#include "http/transport.h"

#include <map>
#include <mutex>

#include <boost/asio/connect.hpp>
#include <boost/asio/ssl/host_name_verification.hpp>
#include <boost/beast/http/error.hpp>

#include "http/client.h"
#include "http/upstream.h"

namespace gantry::http::transport {

namespace bhttp = boost::beast::http;

void Transport::close() {
  if (open()) {
    beast::error_code ec;
    lowest().socket().shutdown(tcp::socket::shutdown_both, ec);
    lowest().socket().close(ec);
  }
  tls.reset();
  tcp.reset();
  buffer.clear();
}

bhttp::verb to_verb(Method m) {
  switch (m) {
  case Method::kGet: return bhttp::verb::get;
  case Method::kHead: return bhttp::verb::head;
  case Method::kPost: return bhttp::verb::post;
  case Method::kPut: return bhttp::verb::put;
  case Method::kDelete: return bhttp::verb::delete_;
  case Method::kPatch: return bhttp::verb::patch;
  case Method::kOptions: return bhttp::verb::options;
  case Method::kOther: return bhttp::verb::unknown;
  }
  return bhttp::verb::unknown;
}

Error classed(std::string_view cls, std::string message) {
  return classed_error(cls, std::move(message));
}

std::string authority(const std::string &host, std::uint16_t port, bool tls) {
  std::string h = host.find(':') != std::string::npos ? "[" + host + "]" : host;
  if (port != (tls ? 443 : 80))
    h += ":" + std::to_string(port);
  return h;
}

Result<std::shared_ptr<ssl::context>> tls_context(const std::string &ca_file) {
  static std::mutex mu;
  static std::map<std::string, std::shared_ptr<ssl::context>> cache; // bounded below
  std::lock_guard<std::mutex> lk(mu);
  if (auto it = cache.find(ca_file); it != cache.end())
    return it->second;
  auto ctx = std::make_shared<ssl::context>(ssl::context::tls_client);
  ctx->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                   ssl::context::no_sslv3 | ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1);
  beast::error_code ec;
  ctx->set_default_verify_paths(ec); // the system store; a missing one only fails verification
  if (!ca_file.empty()) {
    ctx->load_verify_file(ca_file, ec);
    if (ec)
      return Err(classed(kTlsFailed, "tls_ca_file '" + ca_file + "': " + ec.message()));
  }
  ctx->set_verify_mode(ssl::verify_peer);
  if (cache.size() < 8)
    cache.emplace(ca_file, ctx);
  return ctx;
}

Result<std::vector<tcp::endpoint>> endpoints(Transport &t, const std::string &host,
                                             std::uint16_t port,
                                             const std::string &connect_address) {
  beast::error_code ec;
  std::vector<tcp::endpoint> out;
  if (!connect_address.empty()) {
    auto a = asio::ip::make_address(connect_address, ec);
    if (ec)
      return Err(classed(kConnectFailed, "Bad connect address '" + connect_address + "'"));
    out.emplace_back(a, port);
    return out;
  }
  tcp::resolver resolver(t.ioc);
  auto results = resolver.resolve(host, std::to_string(port), ec);
  if (ec)
    return Err(classed(kConnectFailed, "Cannot resolve " + host + ": " + ec.message()));
  for (const auto &r : results)
    out.push_back(r.endpoint());
  return out;
}

Status connect(Transport &t, const std::vector<tcp::endpoint> &to, const ConnectSpec &spec,
               const FailStep &fail) {
  const std::string where = spec.host + ":" + std::to_string(spec.port);
  t.tcp.emplace(t.ioc);
  t.tcp->expires_after(spec.limit);
  // tcp_stream's own async_connect: it honours expires_after, the raw socket's would not.
  beast::error_code ec =
      run(t, [&](auto handler) { t.tcp->async_connect(to, std::move(handler)); });
  if (ec)
    return Err(fail(kConnectFailed, "Cannot connect to " + where, ec));
  t.tcp->socket().set_option(tcp::no_delay(true), ec);
  if (!spec.tls)
    return Ok();
  GANTRY_ASSIGN_OR_RETURN(t.ctx, tls_context(spec.tls_ca_file));
  t.tls.emplace(std::move(*t.tcp), *t.ctx);
  t.tcp.reset();
  prepare_tls(*t.tls, spec.host);
  t.lowest().expires_after(spec.limit);
  ec = run(t, [&](auto handler) {
    t.tls->async_handshake(ssl::stream_base::client, std::move(handler));
  });
  if (ec)
    return Err(fail(kTlsFailed, "TLS handshake with " + where, ec));
  return Ok();
}

Phase phase(std::chrono::milliseconds timeout, std::string_view cls, Deadline total,
            const Clock &clock) {
  if (total == Deadline::max())
    return {timeout, cls};
  const auto left = std::max<std::chrono::steady_clock::duration>(total - clock.now(),
                                                                  std::chrono::milliseconds(1));
  if (left < timeout)
    return {left, kTotalTimeout};
  return {timeout, cls};
}

Error step_failed(const Phase &ph, bool cancelled, std::string_view cls, const std::string &what,
                  beast::error_code ec) {
  namespace bhttp = boost::beast::http;
  if (cancelled)
    return classed(kCancelledCall, what + ": cancelled");
  if (ec == beast::error::timeout)
    return classed(ph.cls, what + ": " + std::string(ph.cls));
  if (ec.category() == bhttp::make_error_code(bhttp::error::bad_version).category() &&
      ec != bhttp::error::end_of_stream && ec != bhttp::error::partial_message)
    return classed(kBadResponse, what + ": " + ec.message());
  return classed(cls, what + ": " + ec.message());
}

void prepare_tls(beast::ssl_stream<beast::tcp_stream> &tls, const std::string &host) {
  beast::error_code not_ip;
  (void)asio::ip::make_address(host, not_ip);
  if (not_ip) // SNI carries names only (RFC 6066)
    SSL_set_tlsext_host_name(tls.native_handle(), host.c_str());
  tls.set_verify_mode(ssl::verify_peer);
  tls.set_verify_callback(ssl::host_name_verification(host));
}

} // namespace gantry::http::transport
