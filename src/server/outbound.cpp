#include "server/outbound.h"

namespace gantry::server {

namespace {
http::Headers to_headers(const std::vector<std::pair<std::string, std::string>> &headers) {
  http::Headers hs;
  for (const auto &[k, v] : headers)
    hs.push_back({k, v});
  return hs;
}
} // namespace

Outbound::Outbound(const ServerConfig &config, const Clock &clock,
                   std::unique_ptr<http::Resolver> resolver)
    : tls_ca_file_(config.tls_ca_file), resolver_(std::move(resolver)) {
  if (!resolver_)
    resolver_ = std::make_unique<http::AsioResolver>();
  client_ = std::make_unique<http::OutboundClient>(http::OutboundClient::Options{}, clock);
  http::WebhookClientOptions wo;
  wo.policy.allow_loopback = config.jobs.webhook_allow_loopback;
  wo.policy.allow_private = config.jobs.webhook_allow_private;
  wo.tls_ca_file = config.tls_ca_file;
  webhooks_ = std::make_unique<http::WebhookClient>(wo, *resolver_, *client_, clock);
}

Outbound::Post Outbound::alert_post() {
  return [this](const std::string &url, const std::string &body,
                const std::vector<std::pair<std::string, std::string>> &headers) -> Result<int> {
    http::ClientOptions base;
    base.tls_ca_file = tls_ca_file_;
    base.timeout = std::chrono::seconds(5);
    base.total_timeout = std::chrono::seconds(15);
    base.max_response_body = 64 * 1024;
    GANTRY_ASSIGN_OR_RETURN(http::ParsedUrl u, http::parse_url(url, base));
    http::Headers hs = to_headers(headers);
    hs.push_back({"Content-Type", "application/json"});
    GANTRY_ASSIGN_OR_RETURN(auto resp,
                            client_->request(u.options, http::Method::kPost, u.target, body, hs));
    return resp.status;
  };
}

Outbound::Post Outbound::webhook_post() {
  return [this](const std::string &url, const std::string &body,
                const std::vector<std::pair<std::string, std::string>> &headers) -> Result<int> {
    GANTRY_ASSIGN_OR_RETURN(auto resp, webhooks_->post(url, body, to_headers(headers)));
    return resp.status;
  };
}

} // namespace gantry::server
