// The outbound client against local receivers on 127.0.0.1: TLS verification with a test CA,
// SNI/Host while connecting to a pinned address, the response body cap (audit L4), deadlines,
// and keep-alive reuse in the pool.
#include "http/client.h"

#include <gtest/gtest.h>

#include "http/test_receivers.h"

namespace gantry::http {
namespace {

using namespace std::chrono_literals;
using testing::Receiver;
using testing::SilentReceiver;
using testing::TestCerts;

ClientOptions tls_options(uint16_t port) {
  ClientOptions o;
  o.host = "localhost"; // the certificate's name; resolved nowhere: connect_address pins it
  o.connect_address = "127.0.0.1";
  o.port = port;
  o.tls = true;
  o.timeout = 5s;
  return o;
}

TEST(HttpClientTls, VerifiesThePeerAgainstTheCaFile) {
  TestCerts certs;
  ASSERT_TRUE(certs.ok()) << "openssl CLI failed to make the test CA";
  Receiver rx({.status = 200, .body = "hello", .tls = &certs});

  // Without the test CA the self-made chain is not trusted: the handshake fails, no request.
  {
    HttpClient c(tls_options(rx.port()));
    auto r = c.get("/x");
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().param, kTlsFailed) << r.error().message;
  }
  EXPECT_EQ(rx.requests(), 0);

  // With it, the request goes through; Host names the origin, not the pinned address.
  ClientOptions o = tls_options(rx.port());
  o.tls_ca_file = certs.ca();
  {
    HttpClient c(o); // closed at the end of the scope: the receiver serves one at a time
    auto r = c.get("/x");
    ASSERT_TRUE(r) << r.error().message;
    EXPECT_EQ(r->status, 200);
    EXPECT_EQ(r->body, "hello");
  }
  ASSERT_EQ(rx.hosts().size(), 1u);
  EXPECT_EQ(rx.hosts()[0], "localhost:" + std::to_string(rx.port()));

  // The certificate must match the host name: the same server under another name fails.
  ClientOptions wrong = o;
  wrong.host = "127.0.0.1"; // not in the certificate's subjectAltName
  HttpClient w(wrong);
  auto bad = w.get("/x");
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().param, kTlsFailed) << bad.error().message;
}

TEST(HttpClientTls, ParseUrlTakesHttpsAndIpv6Literals) {
  auto a = parse_url("https://example.com/api/1/envelope/?k=v");
  ASSERT_TRUE(a);
  EXPECT_TRUE(a->options.tls);
  EXPECT_EQ(a->options.port, 443);
  EXPECT_EQ(a->options.host, "example.com");
  EXPECT_EQ(a->target, "/api/1/envelope/?k=v");
  auto b = parse_url("http://[::1]:8080");
  ASSERT_TRUE(b);
  EXPECT_FALSE(b->options.tls);
  EXPECT_EQ(b->options.host, "::1") << "brackets are stripped";
  EXPECT_EQ(b->options.port, 8080);
  EXPECT_EQ(b->target, "/");
  EXPECT_FALSE(parse_url("ftp://h/x"));
  EXPECT_FALSE(parse_url("http:///x"));
}

TEST(OutboundClient, ReusesKeepAliveConnectionsPerOrigin) {
  TestCerts certs;
  ASSERT_TRUE(certs.ok());
  Receiver rx({.status = 200, .body = "ok", .tls = &certs});
  SystemClock clock;
  OutboundClient pool({}, clock);
  ClientOptions o = tls_options(rx.port());
  o.tls_ca_file = certs.ca();
  for (int i = 0; i < 3; ++i) {
    auto r = pool.request(o, Method::kPost, "/hook", "{}", {});
    ASSERT_TRUE(r) << r.error().message;
    EXPECT_EQ(r->status, 200);
  }
  EXPECT_EQ(pool.connections_opened(), 1) << "one TLS connection carried all three requests";
  EXPECT_EQ(rx.connections(), 1);
  EXPECT_EQ(pool.idle_connections(), 1);
}

// Audit L4: a receiver answering 200 with a 200 MiB body made the client buffer all of it
// (kMaxResponseBody was 256 MiB). Now it keeps the cap and stops reading.
TEST(HttpClient, KeepsAtMostTheBodyCapAndStopsReading) {
  constexpr uint64_t kHuge = 200ull << 20;
  Receiver rx({.status = 200, .huge_body = kHuge});
  ClientOptions o;
  o.port = rx.port();
  o.max_response_body = 64 * 1024;
  HttpClient c(o);
  auto r = c.post("/hook", "{}");
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body.size(), 64u * 1024) << "exactly the cap is kept";
  EXPECT_TRUE(r->body_truncated);
  // The client closed the connection instead of reading on: the receiver could not send the
  // 200 MiB (at most socket buffers' worth beyond the cap went out).
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (!rx.huge_done() && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(10ms);
  EXPECT_TRUE(rx.huge_done());
  EXPECT_LT(rx.body_bytes_sent(), kHuge / 4);
}

TEST(HttpClient, FirstByteDeadlineEndsASilentReceiver) {
  SilentReceiver silent;
  ClientOptions o;
  o.port = silent.port();
  o.first_byte_timeout = 200ms;
  HttpClient c(o);
  const auto t0 = std::chrono::steady_clock::now();
  auto r = c.post("/hook", "{}");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().param, kTimeout) << r.error().message;
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 3s);

  // The total deadline bounds the whole request even when each phase would allow more.
  ClientOptions t = o;
  t.first_byte_timeout = 10s;
  t.total_timeout = 300ms;
  HttpClient c2(t);
  const auto t1 = std::chrono::steady_clock::now();
  auto r2 = c2.post("/hook", "{}");
  ASSERT_FALSE(r2);
  EXPECT_EQ(r2.error().param, kTimeout) << r2.error().message;
  EXPECT_LT(std::chrono::steady_clock::now() - t1, 3s);
}

TEST(HttpClient, RefusedConnectionIsConnectFailed) {
  ClientOptions o;
  o.port = 1; // nothing listens on 127.0.0.1:1
  HttpClient c(o);
  auto r = c.get("/");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().param, kConnectFailed);
}

} // namespace
} // namespace gantry::http
