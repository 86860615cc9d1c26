// Posts webhooks to tenant-chosen URLs without letting the tenant reach the server's own network
// (audit H6, L3, L4): the host is resolved once on the Resolver (never on an HTTP I/O thread),
// EVERY answer is checked against the DestinationPolicy, and the connection goes to a checked
// address (pinned) while Host and SNI keep the name, so a rebinding answer cannot slip in
// between check and connect. One total deadline covers DNS, connect, TLS, write and the
// response head; the body is capped (64 KiB by default) and never read past the cap.
//
// Errors carry their class in Error::param: blocked_destination, connect_failed, timeout,
// tls_failed, bad_response. Thread-safe.
#pragma once

#include <chrono>
#include <string>

#include "core/clock.h"
#include "core/result.h"
#include "http/client.h"
#include "http/destination.h"
#include "http/resolver.h"

namespace gantry::http {

struct WebhookClientOptions {
  DestinationPolicy policy;
  std::string tls_ca_file;                       // extra trusted CAs for https receivers
  std::chrono::milliseconds deadline{10'000};    // per attempt, DNS included
  std::chrono::milliseconds dns_deadline{2'000}; // the resolver's share of it
  std::chrono::milliseconds connect_timeout{3'000};
  std::uint64_t max_response_body = 64 * 1024;
};

class WebhookClient {
public:
  WebhookClient(WebhookClientOptions options, Resolver &resolver, OutboundClient &client,
                const Clock &clock);

  Result<ClientResponse> post(const std::string &url, std::string body, Headers headers);

private:
  const WebhookClientOptions options_;
  Resolver &resolver_;
  OutboundClient &client_;
  const Clock &clock_;
};

} // namespace gantry::http
