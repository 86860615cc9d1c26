#include "observe/http_poster.h"

#include "http/client.h"

namespace gantry::observe {

Status check_postable_url(std::string_view url) {
  auto u = http::parse_url(url);
  if (!u)
    return Err(ErrorCode::kInvalidArgument, u.error().message);
  return Ok();
}

HttpPoster make_http_poster(std::chrono::milliseconds timeout, std::string tls_ca_file) {
  return
      [timeout, ca = std::move(tls_ca_file)](const std::string &url, const std::string &body,
                                             const http::Headers &headers) -> Result<PostResponse> {
        http::ClientOptions base;
        base.timeout = timeout;
        base.total_timeout = timeout * 3;
        base.tls_ca_file = ca;
        base.max_response_body = 64 * 1024; // Sentry answers with a small JSON id
        GANTRY_ASSIGN_OR_RETURN(http::ParsedUrl target, http::parse_url(url, base));
        http::HttpClient client(target.options);
        GANTRY_ASSIGN_OR_RETURN(http::ClientResponse r, client.post(target.target, body, headers));
        PostResponse out;
        out.status = r.status;
        out.retry_after = std::string(r.header("Retry-After").value_or(""));
        out.sentry_rate_limits = std::string(r.header("X-Sentry-Rate-Limits").value_or(""));
        return out;
      };
}

} // namespace gantry::observe
