#include "http/webhook_client.h"

#include <algorithm>
#include <vector>

namespace gantry::http {

namespace ip = boost::asio::ip;
using std::chrono::duration_cast;
using std::chrono::milliseconds;

WebhookClient::WebhookClient(WebhookClientOptions options, Resolver &resolver,
                             OutboundClient &client, const Clock &clock)
    : options_(std::move(options)), resolver_(resolver), client_(client), clock_(clock) {}

Result<ClientResponse> WebhookClient::post(const std::string &url, std::string body,
                                           Headers headers) {
  const auto start = clock_.now();
  ClientOptions base;
  base.tls_ca_file = options_.tls_ca_file;
  auto parsed = parse_url(url, base);
  if (!parsed)
    return Err(classed_error(kConnectFailed, parsed.error().message));
  ClientOptions o = std::move(parsed->options);
  // Resolve once; every answer must pass, or none is used (a mixed answer is an attack or a
  // misconfiguration either way).
  std::vector<ip::address> addresses;
  if (auto literal = literal_address(o.host)) {
    addresses.push_back(*literal);
  } else {
    auto r = resolver_.resolve(o.host, std::min(options_.dns_deadline, options_.deadline));
    if (!r)
      return Err(r.take_error());
    addresses = std::move(*r);
  }
  for (const auto &a : addresses)
    GANTRY_TRY(check_address(a, options_.policy, o.host));
  o.connect_timeout = options_.connect_timeout;
  o.max_response_body = options_.max_response_body;
  headers.push_back({"Content-Type", "application/json"});
  Result<ClientResponse> last = Err(classed_error(kConnectFailed, "no address"));
  for (const auto &a : addresses) {
    const auto left = options_.deadline - duration_cast<milliseconds>(clock_.now() - start);
    if (left.count() <= 0)
      return Err(classed_error(kTimeout, "webhook deadline passed"));
    o.connect_address = a.to_string(); // pinned: the validated address, never a new lookup
    o.timeout = left;
    o.total_timeout = left;
    last = client_.request(o, Method::kPost, parsed->target, body, headers);
    // Another address is worth trying only when this one could not be reached.
    if (last || last.error().param != kConnectFailed)
      return last;
  }
  return last;
}

} // namespace gantry::http
