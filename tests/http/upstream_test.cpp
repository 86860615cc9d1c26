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

#include "test_receivers.h"

namespace gantry::http {
namespace {

using namespace std::chrono_literals;

struct Step {
  std::string bytes;
  std::chrono::milliseconds pause{0}; // before writing
};

// Serves each accepted connection with `script(request_index)`; a connection stays open for
// the next request while `keep_alive`.
class ScriptServer {
public:
  using Script = std::function<std::vector<Step>(int request)>;
  explicit ScriptServer(Script script, bool keep_alive = true)
      : script_(std::move(script)), keep_alive_(keep_alive) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    ::setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(fd_, reinterpret_cast<sockaddr *>(&a), sizeof a);
    ::listen(fd_, 16);
    socklen_t len = sizeof a;
    ::getsockname(fd_, reinterpret_cast<sockaddr *>(&a), &len);
    port_ = ntohs(a.sin_port);
    thread_ = std::thread([this] { loop(); });
  }
  ~ScriptServer() {
    stop_ = true;
    ::shutdown(fd_, SHUT_RDWR);
    ::close(fd_);
    thread_.join();
    for (auto &t : conns_)
      t.join();
  }
  uint16_t port() const { return port_; }
  int accepted() const { return accepted_; }

private:
  void loop() {
    while (!stop_) {
      int c = ::accept(fd_, nullptr, nullptr);
      if (c < 0)
        return;
      ++accepted_;
      conns_.emplace_back([this, c] { serve(c); });
    }
  }
  void serve(int c) {
    std::string buf;
    char tmp[4096];
    while (!stop_) {
      size_t head_end;
      while ((head_end = buf.find("\r\n\r\n")) == std::string::npos) {
        ssize_t n = ::recv(c, tmp, sizeof tmp, 0);
        if (n <= 0) {
          ::close(c);
          return;
        }
        buf.append(tmp, n);
      }
      size_t body = 0;
      if (auto p = buf.find("Content-Length: "); p != std::string::npos && p < head_end)
        body = std::stoul(buf.substr(p + 16));
      while (buf.size() < head_end + 4 + body) {
        ssize_t n = ::recv(c, tmp, sizeof tmp, 0);
        if (n <= 0) {
          ::close(c);
          return;
        }
        buf.append(tmp, n);
      }
      buf.erase(0, head_end + 4 + body);
      for (const Step &s : script_(requests_++)) {
        if (s.pause.count() > 0)
          std::this_thread::sleep_for(s.pause);
        if (stop_ || ::send(c, s.bytes.data(), s.bytes.size(), MSG_NOSIGNAL) < 0) {
          ::close(c);
          return;
        }
      }
      if (!keep_alive_)
        break;
    }
    ::close(c);
  }

  Script script_;
  bool keep_alive_;
  int fd_ = -1;
  uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<int> accepted_{0};
  std::atomic<int> requests_{0};
  std::thread thread_;
  std::vector<std::thread> conns_;
};

std::string fixed(std::string body) {
  return "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " +
         std::to_string(body.size()) + "\r\n\r\n" + body;
}

UpstreamOptions opts(uint16_t port) {
  UpstreamOptions o;
  o.port = port;
  o.connect_timeout = 2s;
  o.first_byte_timeout = 2s;
  o.idle_timeout = 2s;
  o.total_timeout = 10s;
  return o;
}

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
