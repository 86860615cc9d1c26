// The SSRF policy's address checks (audit L3). Only the check function sees these addresses;
// nothing here connects anywhere or resolves a name.
#include "http/destination.h"

#include <gtest/gtest.h>

namespace gantry::http {
namespace {

namespace ip = boost::asio::ip;

AddressKind kind(const char *literal) { return classify_address(ip::make_address(literal)); }

TEST(Destination, BlocksEverySpecialPurposeIpv4Range) {
  struct Case {
    const char *addr;
    AddressKind want;
  };
  const Case cases[] = {
      {"0.0.0.0", AddressKind::kSpecial},         {"0.1.2.3", AddressKind::kSpecial},
      {"10.0.0.5", AddressKind::kPrivate},        {"10.255.255.255", AddressKind::kPrivate},
      {"100.64.0.1", AddressKind::kPrivate},      {"100.127.255.254", AddressKind::kPrivate},
      {"127.0.0.1", AddressKind::kLoopback},      {"127.255.0.9", AddressKind::kLoopback},
      {"169.254.169.254", AddressKind::kPrivate}, {"172.16.0.1", AddressKind::kPrivate},
      {"172.31.255.255", AddressKind::kPrivate},  {"192.0.0.8", AddressKind::kSpecial},
      {"192.0.2.1", AddressKind::kSpecial},       {"192.88.99.1", AddressKind::kSpecial},
      {"192.168.1.1", AddressKind::kPrivate},     {"198.18.0.1", AddressKind::kSpecial},
      {"198.19.255.255", AddressKind::kSpecial},  {"198.51.100.7", AddressKind::kSpecial},
      {"203.0.113.9", AddressKind::kSpecial},     {"224.0.0.1", AddressKind::kSpecial},
      {"239.255.255.250", AddressKind::kSpecial}, {"240.0.0.1", AddressKind::kSpecial},
      {"255.255.255.255", AddressKind::kSpecial},
  };
  for (const Case &c : cases)
    EXPECT_EQ(kind(c.addr), c.want) << c.addr;
  // Neighbours just outside the ranges are global.
  for (const char *g :
       {"8.8.8.8", "1.1.1.1", "9.255.255.255", "11.0.0.1", "100.63.255.255", "100.128.0.1",
        "172.15.255.255", "172.32.0.1", "192.0.1.1", "192.0.3.1", "192.88.98.1", "192.169.0.1",
        "198.17.255.255", "198.20.0.1", "198.51.99.1", "203.0.112.1", "223.255.255.255"})
    EXPECT_EQ(kind(g), AddressKind::kGlobal) << g;
}

TEST(Destination, BlocksSpecialIpv6RangesAndUnwrapsEmbeddedIpv4) {
  struct Case {
    const char *addr;
    AddressKind want;
  };
  const Case cases[] = {
      {"::", AddressKind::kSpecial},
      {"::1", AddressKind::kLoopback},
      {"::127.0.0.1", AddressKind::kLoopback},        // IPv4-compatible (was accepted)
      {"::169.254.169.254", AddressKind::kPrivate},   // IPv4-compatible
      {"::ffff:127.0.0.1", AddressKind::kLoopback},   // v4-mapped
      {"::ffff:7f00:1", AddressKind::kLoopback},      // v4-mapped, hex form
      {"::ffff:10.0.0.5", AddressKind::kPrivate},     // v4-mapped
      {"::ffff:0:127.0.0.1", AddressKind::kLoopback}, // SIIT
      {"64:ff9b::a9fe:a9fe", AddressKind::kPrivate},  // NAT64 of 169.254.169.254 (was accepted)
      {"64:ff9b::7f00:1", AddressKind::kLoopback},    // NAT64 of 127.0.0.1
      {"64:ff9b::c000:201", AddressKind::kSpecial},   // NAT64 of 192.0.2.1
      {"2002:7f00:1::", AddressKind::kLoopback},      // 6to4 of 127.0.0.1 (was accepted)
      {"2002:a9fe:a9fe::1", AddressKind::kPrivate},   // 6to4 of 169.254.169.254
      {"2001:0:7f00:1::f7f7:f7f7", AddressKind::kLoopback}, // Teredo, server 127.0.0.1
      {"2001:0:808:808::f5f6:fffe", AddressKind::kPrivate}, // Teredo, client ~ = 10.9.0.1
      {"fc00::1", AddressKind::kPrivate},                   // ULA
      {"fd00::1", AddressKind::kPrivate},                   // ULA
      {"fe80::1", AddressKind::kPrivate},                   // link-local
      {"febf::1", AddressKind::kPrivate},                   // link-local, top of fe80::/10
      {"fec0::1", AddressKind::kPrivate},                   // site-local (was accepted)
      {"ff02::1", AddressKind::kSpecial},                   // multicast
      {"ff0e::1", AddressKind::kSpecial},                   // multicast
      {"100::1", AddressKind::kSpecial},                    // discard-only 100::/64
      {"2001:db8::1", AddressKind::kSpecial},               // documentation
      {"2001:2::1", AddressKind::kSpecial},                 // benchmarking (2001::/23)
      {"2001:10::1", AddressKind::kSpecial},                // ORCHID (2001::/23)
      {"3fff::1", AddressKind::kSpecial},                   // documentation 3fff::/20
      {"4000::1", AddressKind::kSpecial},                   // outside 2000::/3
  };
  for (const Case &c : cases)
    EXPECT_EQ(kind(c.addr), c.want) << c.addr;
  // Local-use NAT64 64:ff9b:1::/48 leads into a local network whatever IPv4 it carries.
  for (const char *l : {"64:ff9b:1::808:808", "64:ff9b:1:808:8:800::", "64:ff9b:1::7f00:1"})
    EXPECT_NE(kind(l), AddressKind::kGlobal) << l;
  // Global unicast, including embedded forms that carry a public IPv4.
  for (const char *g :
       {"2606:4700::1111", "2a00:1450:4001::200e", "2001:4860:4860::8888", "2002:808:808::1",
        "64:ff9b::808:808", "::ffff:8.8.8.8", "2001:0:808:808::f7f7:f7f7"})
    EXPECT_EQ(kind(g), AddressKind::kGlobal) << g;
}

TEST(Destination, PolicyOpensOnlyLoopbackOrPrivateOnRequest) {
  const auto lo = ip::make_address("127.0.0.1");
  const auto priv = ip::make_address("10.0.0.5");
  const auto special = ip::make_address("198.18.0.1");
  const auto global = ip::make_address("8.8.8.8");
  const DestinationPolicy strict;
  for (const auto &a : {lo, priv, special}) {
    Status st = check_address(a, strict, "h");
    ASSERT_FALSE(st) << a.to_string();
    EXPECT_EQ(st.error().code, ErrorCode::kPermissionDenied);
    EXPECT_EQ(st.error().param, kBlockedDestination);
  }
  EXPECT_TRUE(check_address(global, strict, "h"));
  const DestinationPolicy loopback{.allow_loopback = true};
  EXPECT_TRUE(check_address(lo, loopback, "h"));
  EXPECT_TRUE(check_address(ip::make_address("::ffff:127.0.0.1"), loopback, "h"));
  EXPECT_FALSE(check_address(priv, loopback, "h"));
  const DestinationPolicy both{.allow_loopback = true, .allow_private = true};
  EXPECT_TRUE(check_address(priv, both, "h"));
  EXPECT_FALSE(check_address(special, both, "h")) << "special-purpose ranges never open";
}

TEST(Destination, LiteralAddressAcceptsEveryFormTheSystemResolverWould) {
  for (const char *lit : {"127.0.0.1", "2130706433", "0177.0.0.1", "0x7f.1", "127.1", "0x7f000001"})
    EXPECT_EQ(literal_address(lit), ip::make_address("127.0.0.1")) << lit;
  EXPECT_EQ(literal_address("0"), ip::make_address("0.0.0.0"));
  EXPECT_EQ(literal_address("::127.0.0.1"), ip::make_address("::127.0.0.1"));
  EXPECT_FALSE(literal_address("example.com"));
  EXPECT_FALSE(literal_address("localhost"));
  EXPECT_FALSE(literal_address("1.2.3.4.5"));
}

// Audit H7: the submission check never resolves. "localhost" used to be looked up (and refused
// as loopback) on the HTTP I/O thread; now a name passes here and is checked at delivery.
TEST(Destination, SubmissionCheckDoesNoDns) {
  const DestinationPolicy strict;
  EXPECT_TRUE(check_webhook_url("http://localhost:9/h", strict));
  EXPECT_TRUE(check_webhook_url("https://hooks.example.com/h", strict));
  for (const char *bad :
       {"http://127.0.0.1:9/h", "http://2130706433/", "http://0177.0.0.1/", "http://0x7f.1/",
        "http://127.1/", "http://0/", "http://[::1]/", "http://[::127.0.0.1]/",
        "http://[64:ff9b::a9fe:a9fe]/", "http://[2002:7f00:1::]/", "http://198.18.0.1/",
        "https://169.254.169.254/latest/meta-data", "http://[fd00::1]/",
        "http://[::ffff:7f00:1]/"}) {
    Status st = check_webhook_url(bad, strict);
    ASSERT_FALSE(st) << bad;
    EXPECT_EQ(st.error().code, ErrorCode::kPermissionDenied) << bad;
  }
  for (const char *bad : {"ftp://h/x", "http://", "not a url", "http:///x"}) {
    Status st = check_webhook_url(bad, strict);
    ASSERT_FALSE(st) << bad;
    EXPECT_EQ(st.error().code, ErrorCode::kInvalidArgument) << bad;
  }
  EXPECT_TRUE(check_webhook_url("http://[2606:4700::1111]:8080/h", strict));
  EXPECT_TRUE(check_webhook_url("http://[::1]:9/h", {.allow_loopback = true}));
}

} // namespace
} // namespace gantry::http
