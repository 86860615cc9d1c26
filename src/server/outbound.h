// The server's outbound HTTP stack, built once from the configuration: one OutboundClient (the
// keep-alive pool), the webhook resolver, and the posters handed to the control plane (budget
// alerts) and the jobs service (tenant webhooks). Everything that leaves Gantry goes through
// here or through observe::make_http_poster (Sentry), which shares the client code.
//
// Threading: the posters are called from the control plane's and the webhook workers' threads;
// Outbound outlives both (the gateway declares it first).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/clock.h"
#include "core/result.h"
#include "http/client.h"
#include "http/resolver.h"
#include "http/webhook_client.h"
#include "server/config.h"

namespace gantry::server {

class Outbound {
public:
  using Post =
      std::function<Result<int>(const std::string &url, const std::string &body,
                                const std::vector<std::pair<std::string, std::string>> &headers)>;

  // `resolver` may be injected (tests); by default an AsioResolver.
  Outbound(const ServerConfig &config, const Clock &clock,
           std::unique_ptr<http::Resolver> resolver = nullptr);

  // Budget alerts to the operator's alerts.webhook_url (http or https; the operator's network is
  // allowed: the URL is configuration, not tenant input).
  Post alert_post();
  // Tenant webhooks: resolved off the I/O threads, every address checked, the connection pinned
  // to a checked one; errors carry their class (see http/webhook_client.h).
  Post webhook_post();

private:
  const std::string tls_ca_file_;
  std::unique_ptr<http::Resolver> resolver_;
  std::unique_ptr<http::OutboundClient> client_;
  std::unique_ptr<http::WebhookClient> webhooks_;
};

} // namespace gantry::server
