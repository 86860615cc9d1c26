// Which IP addresses outbound webhooks may reach (SSRF policy; audit H6, L3). Only global unicast
// is allowed: every special-purpose range of the IANA registries is refused, IPv4 embedded in
// IPv6 (IPv4-compatible ::a.b.c.d, v4-mapped, SIIT, NAT64 64:ff9b::/96 and 64:ff9b:1::/48, 6to4
// 2002::/16, Teredo 2001::/32) is judged by the IPv4 inside, and loopback or private ranges open
// only by configuration (jobs.webhook_allow_loopback / webhook_allow_private).
//
// These functions never resolve names: literal_address() parses, and the webhook client checks
// what its resolver answered (webhook_client.h).
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include <boost/asio/ip/address.hpp>

#include "core/result.h"

namespace gantry::http {

// Error::param of a refused destination (the delivery's error class).
inline constexpr std::string_view kBlockedDestination = "blocked_destination";

enum class AddressKind {
  kGlobal,   // public unicast
  kLoopback, // 127.0.0.0/8, ::1
  kPrivate,  // RFC 1918, CGNAT 100.64/10, link-local, ULA fc00::/7, site-local fec0::/10
  kSpecial,  // everything else that is not global: this-network, documentation, benchmarking,
             // multicast, reserved, broadcast, discard-only, ORCHID, unspecified...
};

AddressKind classify_address(const boost::asio::ip::address &a);
std::string_view address_kind_name(AddressKind k);

struct DestinationPolicy {
  bool allow_loopback = false;
  bool allow_private = false;
};

// Ok when `policy` lets webhooks reach `a`; else kPermissionDenied with param
// kBlockedDestination. `what` names the destination in the message (the URL's host).
Status check_address(const boost::asio::ip::address &a, const DestinationPolicy &policy,
                     std::string_view what);

// The address when `host` is an IP literal in any form the system resolver would accept as one:
// IPv6 (without brackets) and the inet_aton IPv4 forms ("2130706433", "0177.0.0.1", "0x7f.1",
// "127.1"); std::nullopt for a DNS name.
std::optional<boost::asio::ip::address> literal_address(std::string_view host);

// The check at submission (no DNS: it runs on an HTTP I/O thread, audit H7): the URL must be
// http:// or https:// with a host, and a literal host must pass check_address. Names are
// resolved and checked at delivery. Errors are 400 (syntax) or 403 (refused range).
Status check_webhook_url(std::string_view url, const DestinationPolicy &policy);

} // namespace gantry::http
