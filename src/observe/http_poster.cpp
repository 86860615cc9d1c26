#include "observe/http_poster.h"

#include <exception>

#include <boost/url/parse.hpp>

#include "http/client.h"

namespace gantry::observe {

namespace {

struct Target {
  std::string host;
  std::uint16_t port = 80;
  std::string path; // origin-form: path plus query
};

Result<Target> parse_target(std::string_view url) {
  auto parsed = boost::urls::parse_uri(url);
  if (!parsed)
    return Err(ErrorCode::kInvalidArgument, "not a URL: " + std::string(url));
  const boost::urls::url_view &u = *parsed;
  if (u.scheme_id() == boost::urls::scheme::https) {
    return Err(ErrorCode::kUnsupported,
               "https is not supported by the built-in HTTP client; use an http:// DSN that "
               "points at a TLS-terminating proxy");
  }
  if (u.scheme_id() != boost::urls::scheme::http)
    return Err(ErrorCode::kInvalidArgument,
               "only http:// URLs can be posted to: " + std::string(url));
  Target t;
  t.host = u.host_address(); // without the brackets of an IPv6 literal
  if (t.host.empty())
    return Err(ErrorCode::kInvalidArgument, "URL without a host: " + std::string(url));
  if (u.has_port())
    t.port = u.port_number();
  t.path = std::string(u.encoded_path());
  if (t.path.empty())
    t.path = "/";
  if (u.has_query())
    t.path += "?" + std::string(u.encoded_query());
  return t;
}

} // namespace

Status check_postable_url(std::string_view url) {
  GANTRY_TRY(parse_target(url));
  return Ok();
}

HttpPoster make_http_poster(std::chrono::milliseconds timeout) {
  return [timeout](const std::string &url, const std::string &body,
                   const http::Headers &headers) -> Result<PostResponse> {
    GANTRY_ASSIGN_OR_RETURN(Target target, parse_target(url));
    try {
      http::HttpClient client(http::ClientOptions{target.host, target.port, timeout});
      GANTRY_ASSIGN_OR_RETURN(http::ClientResponse r, client.post(target.path, body, headers));
      PostResponse out;
      out.status = r.status;
      out.retry_after = std::string(r.header("Retry-After").value_or(""));
      out.sentry_rate_limits = std::string(r.header("X-Sentry-Rate-Limits").value_or(""));
      return out;
    } catch (const std::exception &e) {
      // Asio may throw (e.g. resource exhaustion); the forwarder expects values.
      return Err(Error::io(std::string("sentry post failed: ") + e.what()));
    }
  };
}

} // namespace gantry::observe
