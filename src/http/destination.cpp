#include "http/destination.h"

#include <arpa/inet.h>

#include <array>
#include <cstdint>

#include "http/client.h"

namespace gantry::http {

namespace ip = boost::asio::ip;

namespace {

AddressKind worst(AddressKind a, AddressKind b) {
  // kSpecial (never allowed) > kPrivate > kLoopback > kGlobal, by how much opens them.
  auto rank = [](AddressKind k) {
    switch (k) {
    case AddressKind::kGlobal: return 0;
    case AddressKind::kLoopback: return 1;
    case AddressKind::kPrivate: return 2;
    case AddressKind::kSpecial: return 3;
    }
    return 3;
  };
  return rank(a) >= rank(b) ? a : b;
}

bool in_v4(uint32_t a, uint32_t net, int bits) {
  const uint32_t mask = bits == 0 ? 0 : ~uint32_t{0} << (32 - bits);
  return (a & mask) == (net & mask);
}

constexpr uint32_t v4(uint32_t a, uint32_t b, uint32_t c, uint32_t d) {
  return a << 24 | b << 16 | c << 8 | d;
}

AddressKind classify_v4(uint32_t a) {
  if (in_v4(a, v4(127, 0, 0, 0), 8))
    return AddressKind::kLoopback;
  struct Range {
    uint32_t net;
    int bits;
    AddressKind kind;
  };
  static constexpr Range kRanges[] = {
      {v4(0, 0, 0, 0), 8, AddressKind::kSpecial},       // "this network"
      {v4(10, 0, 0, 0), 8, AddressKind::kPrivate},      // RFC 1918
      {v4(100, 64, 0, 0), 10, AddressKind::kPrivate},   // shared address space (CGNAT)
      {v4(169, 254, 0, 0), 16, AddressKind::kPrivate},  // link-local (cloud metadata)
      {v4(172, 16, 0, 0), 12, AddressKind::kPrivate},   // RFC 1918
      {v4(192, 0, 0, 0), 24, AddressKind::kSpecial},    // IETF protocol assignments
      {v4(192, 0, 2, 0), 24, AddressKind::kSpecial},    // TEST-NET-1
      {v4(192, 31, 196, 0), 24, AddressKind::kSpecial}, // AS112-v4
      {v4(192, 52, 193, 0), 24, AddressKind::kSpecial}, // AMT
      {v4(192, 88, 99, 0), 24, AddressKind::kSpecial},  // 6to4 relay anycast (deprecated)
      {v4(192, 168, 0, 0), 16, AddressKind::kPrivate},  // RFC 1918
      {v4(192, 175, 48, 0), 24, AddressKind::kSpecial}, // direct delegation AS112
      {v4(198, 18, 0, 0), 15, AddressKind::kSpecial},   // benchmarking
      {v4(198, 51, 100, 0), 24, AddressKind::kSpecial}, // TEST-NET-2
      {v4(203, 0, 113, 0), 24, AddressKind::kSpecial},  // TEST-NET-3
      {v4(224, 0, 0, 0), 4, AddressKind::kSpecial},     // multicast
      {v4(240, 0, 0, 0), 4, AddressKind::kSpecial},     // reserved, 255.255.255.255 broadcast
  };
  for (const Range &r : kRanges) {
    if (in_v4(a, r.net, r.bits))
      return r.kind;
  }
  return AddressKind::kGlobal;
}

using Bytes = std::array<unsigned char, 16>;

uint32_t v4_at(const Bytes &b, int at) {
  return uint32_t{b[at]} << 24 | uint32_t{b[at + 1]} << 16 | uint32_t{b[at + 2]} << 8 |
         uint32_t{b[at + 3]};
}

bool prefix(const Bytes &b, std::initializer_list<unsigned> head) {
  int i = 0;
  for (unsigned v : head) {
    if (b[i++] != v)
      return false;
  }
  return true;
}

bool zeros(const Bytes &b, int from, int to) {
  for (int i = from; i < to; ++i) {
    if (b[i] != 0)
      return false;
  }
  return true;
}

AddressKind classify_v6(const Bytes &b) {
  if (zeros(b, 0, 15) && b[15] == 1)
    return AddressKind::kLoopback; // ::1
  if (zeros(b, 0, 16))
    return AddressKind::kSpecial; // ::
  if (zeros(b, 0, 10) && b[10] == 0xff && b[11] == 0xff)
    return classify_v4(v4_at(b, 12)); // ::ffff:a.b.c.d (v4-mapped)
  if (zeros(b, 0, 12))
    return classify_v4(v4_at(b, 12)); // ::a.b.c.d (IPv4-compatible, deprecated)
  if (zeros(b, 0, 8) && b[8] == 0xff && b[9] == 0xff && b[10] == 0 && b[11] == 0)
    return classify_v4(v4_at(b, 12)); // ::ffff:0:a.b.c.d (SIIT)
  if (prefix(b, {0x00, 0x64, 0xff, 0x9b}) && zeros(b, 4, 12))
    return classify_v4(v4_at(b, 12)); // 64:ff9b::/96 (NAT64 well-known prefix)
  if (prefix(b, {0x00, 0x64, 0xff, 0x9b, 0x00, 0x01})) {
    // 64:ff9b:1::/48, local-use NAT64 (RFC 8215): a translator into a local network, whatever
    // IPv4 it carries (at bits 48-63 + 72-87 for a /48, or the last 32 for a /96).
    const uint32_t at48 = uint32_t{b[6]} << 24 | uint32_t{b[7]} << 16 | uint32_t{b[9]} << 8 | b[10];
    return worst(AddressKind::kPrivate, worst(classify_v4(at48), classify_v4(v4_at(b, 12))));
  }
  if (prefix(b, {0x20, 0x02}))
    return classify_v4(v4_at(b, 2)); // 2002::/16, 6to4
  if (prefix(b, {0x20, 0x01, 0x00, 0x00})) {
    // Teredo 2001::/32: the server's IPv4 at bits 32-63, the client's inverted in the last 32.
    return worst(classify_v4(v4_at(b, 4)), classify_v4(~v4_at(b, 12)));
  }
  if ((b[0] & 0xfe) == 0xfc)
    return AddressKind::kPrivate; // fc00::/7, unique local
  if (b[0] == 0xfe && (b[1] & 0xc0) == 0x80)
    return AddressKind::kPrivate; // fe80::/10, link-local
  if (b[0] == 0xfe && (b[1] & 0xc0) == 0xc0)
    return AddressKind::kPrivate; // fec0::/10, site-local (deprecated)
  if ((b[0] & 0xe0) != 0x20)
    return AddressKind::kSpecial; // outside 2000::/3 global unicast: ff00::/8, 100::/64, ...
  if (prefix(b, {0x20, 0x01, 0x0d, 0xb8}))
    return AddressKind::kSpecial; // 2001:db8::/32, documentation
  if (b[0] == 0x20 && b[1] == 0x01 && b[2] < 0x02)
    return AddressKind::kSpecial; // 2001::/23, IETF protocol assignments (ORCHID, benchmarking)
  if (b[0] == 0x3f && b[1] == 0xff && (b[2] & 0xf0) == 0x00)
    return AddressKind::kSpecial; // 3fff::/20, documentation
  return AddressKind::kGlobal;
}

} // namespace

AddressKind classify_address(const ip::address &a) {
  if (a.is_v4())
    return classify_v4(a.to_v4().to_uint());
  return classify_v6(a.to_v6().to_bytes());
}

std::string_view address_kind_name(AddressKind k) {
  switch (k) {
  case AddressKind::kGlobal: return "global";
  case AddressKind::kLoopback: return "loopback";
  case AddressKind::kPrivate: return "private";
  case AddressKind::kSpecial: return "special-purpose";
  }
  return "special-purpose";
}

Status check_address(const ip::address &a, const DestinationPolicy &policy, std::string_view what) {
  const AddressKind k = classify_address(a);
  if (k == AddressKind::kGlobal || (k == AddressKind::kLoopback && policy.allow_loopback) ||
      (k == AddressKind::kPrivate && policy.allow_private)) {
    return Ok();
  }
  std::string msg = "webhook host '" + std::string(what) + "' is in a " +
                    std::string(address_kind_name(k)) +
                    " address range, which this server does not call";
  if (k == AddressKind::kLoopback)
    msg += " (jobs.webhook_allow_loopback)";
  else if (k == AddressKind::kPrivate)
    msg += " (jobs.webhook_allow_private)";
  return Error{ErrorCode::kPermissionDenied, std::move(msg), std::string(kBlockedDestination)};
}

std::optional<ip::address> literal_address(std::string_view host) {
  const std::string h(host);
  boost::system::error_code ec;
  if (h.find(':') != std::string::npos) {
    auto a = ip::make_address_v6(h, ec);
    if (ec)
      return std::nullopt;
    return ip::address(a);
  }
  in_addr v4{};
  if (::inet_aton(h.c_str(), &v4) == 0) // the legacy forms getaddrinfo also accepts
    return std::nullopt;
  return ip::address(ip::address_v4(ntohl(v4.s_addr)));
}

Status check_webhook_url(std::string_view url, const DestinationPolicy &policy) {
  auto parsed = parse_url(url);
  if (!parsed)
    return Error::invalid("webhook must be an http:// or https:// URL with a host", "webhook");
  const std::string &host = parsed->options.host;
  if (auto a = literal_address(host)) {
    Status st = check_address(*a, policy, host);
    if (!st) {
      Error e = st.take_error();
      e.param = "webhook";
      return e;
    }
  }
  return Ok();
}

} // namespace gantry::http
