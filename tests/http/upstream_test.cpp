// The upstream client against scripted servers on 127.0.0.1: each connection reads one request
// head (and its Content-Length body) and then plays a script of writes and pauses.
#include "http/upstream.h"

#include "http/client.h"

#include <gtest/gtest.h>

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <thread>

#include "script_server.h"
#include "test_receivers.h"

namespace gantry::http {
namespace {

using namespace std::chrono_literals;

using scripted::fixed;
using scripted::opts;
using scripted::ScriptServer;
using scripted::Step;

TEST(UpstreamClient, KeepAliveReusesOneConnection) {
  ScriptServer s([](int) { return std::vector<Step>{{fixed("{\"ok\":1}")}}; });
  SystemClock clock;
  UpstreamClient client(opts(s.port()), clock);
  for (int i = 0; i < 5; ++i) {
    auto call = client.start(Method::kPost, "/v1/x", "{}", {{"Content-Type", "application/json"}});
    ASSERT_TRUE(call.ok()) << call.error().message;
    EXPECT_EQ((*call)->status(), 200);
    EXPECT_EQ(*(*call)->read_all(1024), "{\"ok\":1}");
  }
  EXPECT_EQ(client.connections_opened(), 1);
  EXPECT_EQ(s.accepted(), 1);
}

TEST(UpstreamClient, ChunkedStreamArrivesPieceByPiece) {
  ScriptServer s([](int) {
    return std::vector<Step>{{"HTTP/1.1 200 OK\r\nContent-Type: "
                              "text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"},
                             {"6\r\ndata: \r\n"},
                             {"3\r\nab\n\r\n", 50ms},
                             {"0\r\n\r\n", 50ms}};
  });
  SystemClock clock;
  UpstreamClient client(opts(s.port()), clock);
  auto call = client.start(Method::kPost, "/s", "{}", {});
  ASSERT_TRUE(call.ok()) << call.error().message;
  std::string all;
  int pieces = 0;
  while (true) {
    auto p = (*call)->read_some();
    ASSERT_TRUE(p.ok()) << p.error().message;
    if (!*p)
      break;
    all += **p;
    ++pieces;
  }
  EXPECT_EQ(all, "data: ab\n");
  EXPECT_GE(pieces, 2);
  call->reset();
  EXPECT_EQ(client.idle_connections(), 1) << "read to the end: back in the pool";
}

TEST(UpstreamClient, EachTimeoutIsItsOwnError) {
  SystemClock clock;
  { // first byte
    ScriptServer s([](int) { return std::vector<Step>{{fixed("{}"), 1s}}; });
    auto o = opts(s.port());
    o.first_byte_timeout = 200ms;
    UpstreamClient client(o, clock);
    auto call = client.start(Method::kPost, "/", "{}", {});
    ASSERT_FALSE(call.ok());
    EXPECT_EQ(call.error().param, kFirstByteTimeout);
  }
  { // idle gap between chunks
    ScriptServer s([](int) {
      return std::vector<Step>{{"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n"},
                               {"0\r\n\r\n", 1s}};
    });
    auto o = opts(s.port());
    o.idle_timeout = 200ms;
    UpstreamClient client(o, clock);
    auto call = client.start(Method::kPost, "/", "{}", {});
    ASSERT_TRUE(call.ok());
    auto r = (*call)->read_all(1024);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().param, kIdleTimeout);
  }
  { // total: a trickle that never lets the idle timeout fire
    ScriptServer s([](int) {
      std::vector<Step> steps{{"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"}};
      for (int i = 0; i < 40; ++i)
        steps.push_back({"1\r\nx\r\n", 100ms});
      return steps;
    });
    auto o = opts(s.port());
    o.idle_timeout = 1s;
    o.total_timeout = 500ms;
    UpstreamClient client(o, clock);
    auto call = client.start(Method::kPost, "/", "{}", {});
    ASSERT_TRUE(call.ok());
    auto r = (*call)->read_all(1 << 20);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().param, kTotalTimeout);
  }
  { // connect: nothing listens on a closed port → refused, a connect error
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(fd, reinterpret_cast<sockaddr *>(&a), sizeof a);
    socklen_t len = sizeof a;
    ::getsockname(fd, reinterpret_cast<sockaddr *>(&a), &len);
    ::close(fd);
    UpstreamClient client(opts(ntohs(a.sin_port)), clock);
    auto call = client.start(Method::kPost, "/", "{}", {});
    ASSERT_FALSE(call.ok());
    EXPECT_EQ(call.error().param, kConnectFailed);
  }
}

TEST(UpstreamClient, CancelAbortsAPendingReadAtOnce) {
  ScriptServer s([](int) {
    return std::vector<Step>{{"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"},
                             {"0\r\n\r\n", 3s}};
  });
  SystemClock clock;
  auto o = opts(s.port());
  o.idle_timeout = 10s;
  UpstreamClient client(o, clock);
  auto cancel = std::make_shared<CancelSignal>();
  auto call = client.start(Method::kPost, "/", "{}", {}, cancel);
  ASSERT_TRUE(call.ok());
  std::thread t([&] {
    std::this_thread::sleep_for(100ms);
    cancel->cancel();
  });
  const auto t0 = std::chrono::steady_clock::now();
  auto r = (*call)->read_some();
  t.join();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().param, kCancelledCall);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);
  call->reset();
  EXPECT_EQ(client.idle_connections(), 0) << "a cancelled connection is never reused";
}

TEST(UpstreamClient, BodyCapIsAnError) {
  ScriptServer s([](int) { return std::vector<Step>{{fixed(std::string(100000, 'x'))}}; });
  SystemClock clock;
  UpstreamClient client(opts(s.port()), clock);
  auto call = client.start(Method::kGet, "/", "", {});
  ASSERT_TRUE(call.ok());
  auto r = (*call)->read_all(1000);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().param, kResponseTooLarge);
}

TEST(UpstreamClient, ServerClosingAKeptConnectionIsRetriedOnAFreshOne) {
  ScriptServer s([](int) { return std::vector<Step>{{fixed("{}")}}; }, /*keep_alive=*/false);
  SystemClock clock;
  UpstreamClient client(opts(s.port()), clock);
  for (int i = 0; i < 3; ++i) {
    auto call = client.start(Method::kPost, "/", "{}", {});
    ASSERT_TRUE(call.ok()) << i << ": " << call.error().message;
    EXPECT_TRUE((*call)->read_all(100).ok());
  }
}

TEST(UpstreamClient, HttpsVerifiesAgainstTheConfiguredCa) {
  testing::TestCerts certs;
  if (!certs.ok())
    GTEST_SKIP() << "openssl CLI unavailable";
  testing::Receiver::Options ro;
  ro.body = "{\"tls\":true}";
  ro.tls = &certs;
  testing::Receiver rx(ro);
  SystemClock clock;
  auto o = opts(rx.port());
  o.host = "localhost";
  o.tls = true;
  {
    UpstreamClient untrusted(o, clock);
    auto call = untrusted.start(Method::kGet, "/", "", {});
    ASSERT_FALSE(call.ok());
    EXPECT_EQ(call.error().param, kTlsFailed);
  }
  o.tls_ca_file = certs.ca();
  UpstreamClient trusted(o, clock);
  auto call = trusted.start(Method::kGet, "/", "", {});
  ASSERT_TRUE(call.ok()) << call.error().message;
  EXPECT_EQ(*(*call)->read_all(100), "{\"tls\":true}");
}

} // namespace
} // namespace gantry::http
