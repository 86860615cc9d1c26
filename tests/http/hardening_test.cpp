// Regression tests for the HTTP layer's resource bounds and request hygiene (security audit 1:
// H1, H2, L5, M6, L1). Each test plays the audit's attack against an in-process server on an
// ephemeral loopback port.
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <sstream>
#include <thread>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>
#include <gtest/gtest.h>

#include "http/client.h"
#include "http/router.h"
#include "http/server.h"

namespace gantry::http {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
namespace asio = boost::asio;
using tcp = asio::ip::tcp;

template <typename F> bool eventually(F &&condition, std::chrono::milliseconds limit = 3000ms) {
  auto end = Clock::now() + limit;
  while (Clock::now() < end) {
    if (condition())
      return true;
    std::this_thread::sleep_for(1ms);
  }
  return condition();
}

// A raw client socket, for requests HttpClient would refuse to send.
class Raw {
public:
  explicit Raw(std::uint16_t port) : sock_(ioc_) {
    sock_.connect({asio::ip::make_address("127.0.0.1"), port});
  }
  bool send(std::string_view data) {
    boost::system::error_code ec;
    asio::write(sock_, asio::buffer(data.data(), data.size()), ec);
    return !ec;
  }
  bool readable(int timeout_ms) {
    pollfd p{sock_.native_handle(), POLLIN, 0};
    return ::poll(&p, 1, timeout_ms) > 0;
  }
  // Reads until `until` appears, EOF, or the time limit; returns what arrived.
  std::string read(std::string_view until = {}, std::chrono::milliseconds limit = 3000ms) {
    auto end = Clock::now() + limit;
    while (Clock::now() < end) {
      if (!until.empty() && got_.find(until) != std::string::npos)
        break;
      if (!readable(20))
        continue;
      char buf[4096];
      boost::system::error_code ec;
      std::size_t n = sock_.read_some(asio::buffer(buf), ec);
      if (ec) {
        eof_ = true;
        break;
      }
      got_.append(buf, n);
    }
    return got_;
  }
  bool eof() const { return eof_; }
  void close() {
    boost::system::error_code ec;
    sock_.close(ec);
  }

private:
  asio::io_context ioc_;
  tcp::socket sock_;
  std::string got_;
  bool eof_ = false;
};

std::size_t count_of(const std::string &hay, std::string_view needle) {
  std::size_t n = 0;
  for (auto pos = hay.find(needle); pos != std::string::npos; pos = hay.find(needle, pos + 1))
    ++n;
  return n;
}

Handler test_routes() {
  Router router;
  router.get("/healthz", [](Request &&, std::shared_ptr<ResponseWriter> w) {
    w->respond(Response::text(200, "ok"));
  });
  router.get("/v1/models", [](Request &&req, std::shared_ptr<ResponseWriter> w) {
    w->respond(Response::text(200, req.path));
  });
  router.get("/v1/jobs/{id}", [](Request &&req, std::shared_ptr<ResponseWriter> w) {
    w->respond(Response::text(200, std::string(req.path_param("id"))));
  });
  router.post("/echo", [](Request &&req, std::shared_ptr<ResponseWriter> w) {
    w->respond(Response::text(200, std::move(req.body)));
  });
  return std::move(router).into_handler();
}

class HardeningTest : public ::testing::Test {
protected:
  void start(ServerOptions o = {}) {
    o.port = 0;
    server_ = std::make_unique<HttpServer>(o, test_routes());
    Status s = server_->start();
    ASSERT_TRUE(s.ok()) << s.error().message;
  }
  void TearDown() override {
    if (server_)
      server_->shutdown(500ms);
  }
  bool healthz_ok() {
    ClientOptions co;
    co.port = server_->port();
    co.timeout = 3000ms;
    HttpClient c(co);
    auto r = c.get("/healthz");
    return r.ok() && r->status == 200;
  }
  // Streams `prefix` then filler in 4 KiB writes (up to 4 MiB) until the server answers;
  // returns the bytes sent by then, and the answer in `answer`.
  std::size_t flood(Raw &raw, const std::string &prefix, std::string &answer) {
    std::size_t sent = prefix.size();
    EXPECT_TRUE(raw.send(prefix));
    const std::string filler(4096, 'a');
    bool probed = false;
    while (sent < 4 * 1024 * 1024) {
      if (!raw.send(filler))
        break;
      sent += filler.size();
      if (!probed && sent > 8 * 1024) {
        // The service stays up while the attack runs.
        EXPECT_TRUE(healthz_ok());
        probed = true;
      }
      if (raw.readable(5))
        break;
    }
    answer = raw.read("\r\n\r\n");
    return sent;
  }
  std::unique_ptr<HttpServer> server_;
};

// H1, extension variant: a chunk-size line that never ends.
TEST_F(HardeningTest, EndlessChunkExtensionIsRefused) {
  start();
  Raw raw(server_->port());
  std::string answer;
  std::size_t sent =
      flood(raw, "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1;", answer);
  EXPECT_EQ(answer.rfind("HTTP/1.1 431", 0), 0u) << answer.substr(0, 200);
  EXPECT_LE(sent, 64u * 1024) << "the server kept buffering the chunk-size line";
  raw.read({}, 3000ms);
  EXPECT_TRUE(raw.eof()) << "connection left open";
  EXPECT_TRUE(healthz_ok());
}

// H1, trailer variant: a trailer section that never ends.
TEST_F(HardeningTest, EndlessTrailerSectionIsRefused) {
  start();
  Raw raw(server_->port());
  std::string answer;
  std::size_t sent = flood(
      raw,
      "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-T: ", answer);
  EXPECT_EQ(answer.rfind("HTTP/1.1 431", 0), 0u) << answer.substr(0, 200);
  EXPECT_LE(sent, 64u * 1024) << "the server kept buffering the trailer";
  raw.read({}, 3000ms);
  EXPECT_TRUE(raw.eof());
  EXPECT_TRUE(healthz_ok());
}

// Chunked bodies larger than the header limit still work: the bound is on framing only.
TEST_F(HardeningTest, LargeChunkedBodyStillAccepted) {
  start();
  Raw raw(server_->port());
  std::string body(100 * 1024, 'z');
  std::ostringstream req;
  req << "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
      << std::hex << body.size() << "\r\n"
      << body << "\r\n0\r\n\r\n";
  ASSERT_TRUE(raw.send(req.str()));
  std::string got = raw.read(body);
  EXPECT_EQ(got.rfind("HTTP/1.1 200", 0), 0u) << got.substr(0, 200);
}

// H2: at max_connections the listener pauses; waiting clients are served once some close.
TEST_F(HardeningTest, ConnectionCapPausesAcceptingUntilOneCloses) {
  ServerOptions o;
  o.max_connections = 4;
  o.header_timeout = 10'000ms;
  start(o);
  std::vector<std::unique_ptr<Raw>> idle;
  for (int i = 0; i < 4; ++i)
    idle.push_back(std::make_unique<Raw>(server_->port()));
  ASSERT_TRUE(eventually([&] { return server_->stats().active_connections == 4; }));
  // Two more clients: the kernel completes their handshakes, but the server does not take them.
  Raw extra1(server_->port());
  Raw extra2(server_->port());
  ASSERT_TRUE(extra1.send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"));
  ASSERT_TRUE(extra2.send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"));
  EXPECT_FALSE(extra1.readable(200));
  EXPECT_EQ(server_->stats().connections_accepted, 4u);
  EXPECT_GE(server_->stats().accept_pauses, 1u);
  idle[0]->close();
  idle[1]->close();
  EXPECT_NE(extra1.read("ok").find("ok"), std::string::npos);
  EXPECT_NE(extra2.read("ok").find("ok"), std::string::npos);
  EXPECT_LE(server_->stats().active_connections, 4u);
}

// H2: with descriptors exhausted, failed accepts back off instead of spinning on a core.
TEST(HardeningProcessTest, AcceptErrorsDoNotBusyLoop) {
#if defined(__SANITIZE_ADDRESS__)
  // A CPU-time bound means nothing under the sanitizers' overhead, and UBSan's vptr check trips
  // on Boost.System's error_category in the forked child once its descriptors run out.
  GTEST_SKIP() << "CPU-time bound; checked in the plain build";
#endif
  int ports[2];
  ASSERT_EQ(::pipe(ports), 0);
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    ::close(ports[0]);
    rlimit rl{48, 48};
    ::setrlimit(RLIMIT_NOFILE, &rl);
    ServerOptions o;
    o.max_connections = 1000; // above the descriptor limit on purpose
    o.header_timeout = 30'000ms;
    HttpServer server(o, test_routes());
    std::uint16_t port = server.start().ok() ? server.port() : 0;
    (void)!::write(ports[1], &port, sizeof port);
    ::pause();
    ::_exit(0);
  }
  ::close(ports[1]);
  std::uint16_t port = 0;
  ASSERT_EQ(::read(ports[0], &port, sizeof port), static_cast<ssize_t>(sizeof port));
  ::close(ports[0]);
  ASSERT_NE(port, 0);
  auto cpu_seconds = [child] {
    std::ifstream f("/proc/" + std::to_string(child) + "/stat");
    std::string all((std::istreambuf_iterator<char>(f)), {});
    std::istringstream rest(all.substr(all.rfind(')') + 2));
    std::string field;
    unsigned long utime = 0, stime = 0;
    for (int i = 3; i <= 15; ++i) {
      rest >> field;
      if (i == 14)
        utime = std::stoul(field);
      if (i == 15)
        stime = std::stoul(field);
    }
    return static_cast<double>(utime + stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
  };
  std::vector<std::unique_ptr<Raw>> conns;
  for (int i = 0; i < 80; ++i)
    conns.push_back(std::make_unique<Raw>(port));
  std::this_thread::sleep_for(300ms); // let the server run into EMFILE
  double before = cpu_seconds();
  std::this_thread::sleep_for(1000ms);
  double used = cpu_seconds() - before;
  EXPECT_LT(used, 0.3) << "server spent " << used << " s of CPU in 1 s with descriptors exhausted";
  // Once descriptors are free again, new clients are served.
  conns.clear();
  Raw probe(port);
  ASSERT_TRUE(probe.send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"));
  EXPECT_NE(probe.read("ok", 5000ms).find("ok"), std::string::npos);
  ::kill(child, SIGKILL);
  int st = 0;
  ::waitpid(child, &st, 0);
}

// L5: the audit's desync: "Transfer-Encoding: gzip" and a body that looks like a request.
TEST_F(HardeningTest, NonChunkedTransferEncodingIsRefusedAndCloses) {
  start();
  Raw raw(server_->port());
  ASSERT_TRUE(raw.send("POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n"
                       "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"));
  std::string got = raw.read({}, 3000ms);
  EXPECT_TRUE(raw.eof());
  EXPECT_EQ(count_of(got, "HTTP/1.1 "), 1u) << got;
  EXPECT_EQ(got.rfind("HTTP/1.1 501", 0), 0u) << got;
  EXPECT_EQ(server_->stats().unsupported_encodings, 1u);
}

TEST_F(HardeningTest, ChunkedListedTwiceIsRefused) {
  start();
  Raw raw(server_->port());
  ASSERT_TRUE(raw.send("POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
                       "0\r\n\r\n"));
  std::string got = raw.read({}, 3000ms);
  EXPECT_EQ(got.rfind("HTTP/1.1 501", 0), 0u) << got;
}

// L5: Upgrade is ignored; the request is answered as plain HTTP/1.1, never with 101.
TEST_F(HardeningTest, UpgradeHeaderIsIgnored) {
  start();
  Raw raw(server_->port());
  ASSERT_TRUE(raw.send("GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\n"
                       "Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n"));
  std::string got = raw.read("ok");
  EXPECT_EQ(got.rfind("HTTP/1.1 200", 0), 0u) << got;
}

// M6: bodies in flight share one budget; beyond it, 503 + Retry-After before any body byte.
TEST_F(HardeningTest, InflightBodyBudgetGives503) {
  ServerOptions o;
  o.max_inflight_body_bytes = 1024 * 1024;
  start(o);
  const std::string head = "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 800000\r\n"
                           "Expect: 100-continue\r\n\r\n";
  Raw a(server_->port());
  ASSERT_TRUE(a.send(head));
  // The interim response means the server accepted the head and reserved the body.
  ASSERT_NE(a.read("100 Continue").find("100 Continue"), std::string::npos);
  Raw b(server_->port());
  ASSERT_TRUE(b.send(head));
  std::string got = b.read("\r\n\r\n");
  EXPECT_EQ(got.rfind("HTTP/1.1 503", 0), 0u) << got;
  EXPECT_NE(got.find("Retry-After: 1"), std::string::npos) << got;
  EXPECT_EQ(server_->stats().body_budget_refusals, 1u);
  EXPECT_TRUE(healthz_ok());
  // The first upload completes and gives its share back.
  ASSERT_TRUE(a.send(std::string(800000, 'q')));
  EXPECT_NE(a.read("qqqq").find("HTTP/1.1 200"), std::string::npos);
  Raw c(server_->port());
  ASSERT_TRUE(c.send(head));
  EXPECT_NE(c.read("100 Continue").find("100 Continue"), std::string::npos);
}

// M6: the pre-body hook answers while the client has sent only the head of an 8 MiB upload.
TEST_F(HardeningTest, OnHeadersRefusesBeforeTheBody) {
  ServerOptions o;
  o.on_headers = [](const Request &req) -> std::optional<Response> {
    if (!req.header("Authorization"))
      return Response::text(401, "no key");
    return std::nullopt;
  };
  start(o);
  Raw raw(server_->port());
  ASSERT_TRUE(raw.send("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 8388608\r\n\r\n"));
  std::string got = raw.read("no key");
  EXPECT_EQ(got.rfind("HTTP/1.1 401", 0), 0u) << got;
  EXPECT_NE(got.find("Connection: close"), std::string::npos) << got;
  EXPECT_EQ(server_->stats().head_refusals, 1u);
  // With a key, the body is read and handled as before.
  Raw ok(server_->port());
  ASSERT_TRUE(ok.send("POST /echo HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k\r\n"
                      "Content-Length: 5\r\n\r\nhello"));
  EXPECT_NE(ok.read("hello").find("HTTP/1.1 200"), std::string::npos);
}

// L1: one spelling per path, so routing, labels and idempotency scopes cannot be split.
TEST_F(HardeningTest, PathIsNormalisedOrRefused) {
  start();
  ClientOptions co;
  co.port = server_->port();
  HttpClient c(co);
  auto slashes = c.get("//v1///models");
  ASSERT_TRUE(slashes.ok());
  EXPECT_EQ(slashes->status, 200);
  EXPECT_EQ(slashes->body, "/v1/models");
  for (const char *bad : {"/v1/jobs/a%2Fb", "/v1/jobs/a%2fb", "/v1/../v1/models", "/v1/./models",
                          "/v1/jobs/%2e%2e"}) {
    auto r = c.get(bad);
    ASSERT_TRUE(r.ok()) << bad;
    EXPECT_EQ(r->status, 400) << bad;
  }
  auto encoded_in_query = c.get("/v1/jobs/7?x=1%2F2");
  ASSERT_TRUE(encoded_in_query.ok());
  EXPECT_EQ(encoded_in_query->status, 200);
  EXPECT_EQ(encoded_in_query->body, "7");
}

} // namespace
} // namespace gantry::http
