// The asynchronous upstream client against scripted servers on 127.0.0.1: the blocking
// client's contract (keep-alive, pieces, each deadline its own error, cancel, body cap, a stale
// kept-alive connection, TLS) plus what only the asynchronous one has: many calls in flight on
// one loop thread, and cancels racing completions.
#include "http/async_upstream.h"

#include "http/client.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <future>
#include <mutex>
#include <random>
#include <set>
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

// What one call ended with: the head's status and the whole body, or the first error.
struct Outcome {
  Result<std::string> body = std::string();
  int status = 0;
  int pieces = 0;
  std::shared_ptr<AsyncUpstreamCall> call;
};

// Starts a call that reads its body piece by piece; the future is set once, when it ends.
std::future<Outcome> fetch(AsyncUpstreamClient &client, std::string target = "/",
                           std::shared_ptr<AsyncUpstreamCall> *out = nullptr) {
  auto promise = std::make_shared<std::promise<Outcome>>();
  auto result = std::make_shared<Outcome>();
  auto fut = promise->get_future();
  auto call = std::make_shared<std::shared_ptr<AsyncUpstreamCall>>();
  auto read = std::make_shared<std::function<void()>>();
  *read = [promise, result, call, read] {
    (*call)->read_some([promise, result, call, read](auto piece) {
      if (!piece) {
        result->body = Err(piece.take_error());
      } else if (*piece) {
        result->body->append(**piece);
        ++result->pieces;
        return (*read)();
      }
      result->call = std::move(*call); // the test holds the only reference
      *read = nullptr;                 // breaks the cycle
      promise->set_value(std::move(*result));
    });
  };
  *call = client.call(Method::kPost, target, "{}", {{"Content-Type", "application/json"}});
  if (out)
    *out = *call;
  (*call)->start([promise, result, call, read](Status head) {
    if (!head) {
      result->body = Err(head.take_error());
      *read = nullptr;
      promise->set_value(std::move(*result));
      return;
    }
    result->status = (*call)->status();
    (*read)();
  });
  return fut;
}

Outcome get(std::future<Outcome> f) {
  EXPECT_EQ(f.wait_for(20s), std::future_status::ready) << "the call never ended";
  return f.get();
}

TEST(AsyncUpstreamRequest, SerializedByHandLikeBeastsFieldsSet) {
  const Headers hs = {{"Content-Type", "application/json"},
                      {"authorization", "Bearer a"},
                      {"Authorization", "Bearer b"}, // replaces the first, as fields.set did
                      {"user-agent", "custom"},
                      {"Content-Length", "999"}, // framing is the client's own
                      {"Transfer-Encoding", "chunked"},
                      {"X-Evil", "a\r\nX-Injected: 1"}, // never sent
                      {"X-Bad\nName", "v"}};
  EXPECT_EQ(serialize_request(Method::kPost, "/v1/chat/completions", "127.0.0.1:8000", hs, "{}"),
            "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nUser-Agent: custom\r\n"
            "Content-Type: application/json\r\nauthorization: Bearer b\r\n"
            "Content-Length: 2\r\n\r\n{}");
  // A GET without a body carries no Content-Length; a POST without one says 0.
  EXPECT_EQ(serialize_request(Method::kGet, "/v1/models", "h:1", {}, ""),
            "GET /v1/models HTTP/1.1\r\nHost: h:1\r\nUser-Agent: gantry\r\n\r\n");
  EXPECT_EQ(serialize_request(Method::kPost, "/x", "h:1", {}, ""),
            "POST /x HTTP/1.1\r\nHost: h:1\r\nUser-Agent: gantry\r\nContent-Length: 0\r\n\r\n");
}

TEST(AsyncUpstreamClient, KeepAliveReusesOneConnection) {
  ScriptServer s([](int) { return std::vector<Step>{{fixed("{\"ok\":1}")}}; });
  SystemClock clock;
  IoLoop loop(1);
  AsyncUpstreamClient client(loop, opts(s.port()), clock);
  for (int i = 0; i < 5; ++i) {
    auto o = get(fetch(client, "/v1/x"));
    ASSERT_TRUE(o.body.ok()) << o.body.error().message;
    EXPECT_EQ(o.status, 200);
    EXPECT_EQ(*o.body, "{\"ok\":1}");
  }
  EXPECT_EQ(client.connections_opened(), 1);
  EXPECT_EQ(s.accepted(), 1);
}

TEST(AsyncUpstreamClient, ChunkedStreamArrivesPieceByPiece) {
  ScriptServer s([](int) {
    return std::vector<Step>{{"HTTP/1.1 200 OK\r\nContent-Type: "
                              "text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"},
                             {"6\r\ndata: \r\n"},
                             {"3\r\nab\n\r\n", 50ms},
                             {"0\r\n\r\n", 50ms}};
  });
  SystemClock clock;
  IoLoop loop(1);
  AsyncUpstreamClient client(loop, opts(s.port()), clock);
  auto o = get(fetch(client));
  ASSERT_TRUE(o.body.ok()) << o.body.error().message;
  EXPECT_EQ(*o.body, "data: ab\n");
  EXPECT_GE(o.pieces, 2);
  o.call.reset();
  EXPECT_EQ(client.idle_connections(), 1) << "read to the end: back in the pool";
}

TEST(AsyncUpstreamClient, EachTimeoutIsItsOwnError) {
  SystemClock clock;
  IoLoop loop(1);
  { // first byte
    ScriptServer s([](int) { return std::vector<Step>{{fixed("{}"), 1s}}; });
    auto o = opts(s.port());
    o.first_byte_timeout = 200ms;
    AsyncUpstreamClient client(loop, o, clock);
    auto r = get(fetch(client));
    ASSERT_FALSE(r.body.ok());
    EXPECT_EQ(r.body.error().param, kFirstByteTimeout);
  }
  { // idle gap between chunks
    ScriptServer s([](int) {
      return std::vector<Step>{{"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n"},
                               {"0\r\n\r\n", 1s}};
    });
    auto o = opts(s.port());
    o.idle_timeout = 200ms;
    AsyncUpstreamClient client(loop, o, clock);
    auto r = get(fetch(client));
    ASSERT_FALSE(r.body.ok());
    EXPECT_EQ(r.body.error().param, kIdleTimeout);
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
    AsyncUpstreamClient client(loop, o, clock);
    auto r = get(fetch(client));
    ASSERT_FALSE(r.body.ok());
    EXPECT_EQ(r.body.error().param, kTotalTimeout);
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
    AsyncUpstreamClient client(loop, opts(ntohs(a.sin_port)), clock);
    auto r = get(fetch(client));
    ASSERT_FALSE(r.body.ok());
    EXPECT_EQ(r.body.error().param, kConnectFailed);
  }
}

TEST(AsyncUpstreamClient, CancelAbortsAPendingReadAtOnce) {
  ScriptServer s([](int) {
    return std::vector<Step>{{"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"},
                             {"0\r\n\r\n", 3s}};
  });
  SystemClock clock;
  IoLoop loop(1);
  auto o = opts(s.port());
  o.idle_timeout = 10s;
  AsyncUpstreamClient client(loop, o, clock);
  std::shared_ptr<AsyncUpstreamCall> call;
  auto fut = fetch(client, "/", &call);
  std::this_thread::sleep_for(100ms); // the head arrived; the read of the body waits
  const auto t0 = std::chrono::steady_clock::now();
  call->cancel();
  auto r = get(std::move(fut));
  ASSERT_FALSE(r.body.ok());
  EXPECT_EQ(r.body.error().param, kCancelledCall);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);
  call.reset();
  r.call.reset();
  EXPECT_EQ(client.idle_connections(), 0) << "a cancelled connection is never reused";
}

TEST(AsyncUpstreamClient, BodyCapIsAnError) {
  ScriptServer s([](int) { return std::vector<Step>{{fixed(std::string(100000, 'x'))}}; });
  SystemClock clock;
  IoLoop loop(1);
  AsyncUpstreamClient client(loop, opts(s.port()), clock);
  std::promise<Result<std::string>> done;
  std::shared_ptr<AsyncUpstreamCall> call;
  call = client.call(Method::kGet, "/", "", {});
  call->start([&](Status head) {
    ASSERT_TRUE(head.ok());
    call->read_all(1000, [&](Result<std::string> body) { done.set_value(std::move(body)); });
  });
  auto f = done.get_future();
  ASSERT_EQ(f.wait_for(20s), std::future_status::ready);
  auto r = f.get();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().param, kResponseTooLarge);
}

// read_all() parses what arrived with the head without another read: chunked bodies of many
// chunks, bodies longer than one read piece (16 KiB), empty ones, and a body whose rest comes
// later all read whole, and the connection goes back to the pool each time.
Result<std::string> read_all_of(AsyncUpstreamClient &client, std::size_t cap = 1 << 20) {
  std::promise<Result<std::string>> done;
  std::shared_ptr<AsyncUpstreamCall> call = client.call(Method::kGet, "/", "", {});
  call->start([&](Status head) {
    if (!head)
      return done.set_value(Err(head.take_error()));
    call->read_all(cap, [&](Result<std::string> body) { done.set_value(std::move(body)); });
  });
  auto f = done.get_future();
  EXPECT_EQ(f.wait_for(20s), std::future_status::ready);
  auto r = f.get();
  call.reset();
  return r;
}

TEST(AsyncUpstreamClient, ReadAllTakesWhatCameWithTheHeadAndTheRestLater) {
  std::string chunked = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
  std::string want_chunked;
  for (int i = 0; i < 300; ++i) {
    const std::string part = "part" + std::to_string(i) + ";";
    char size[16];
    std::snprintf(size, sizeof size, "%zx", part.size());
    chunked += std::string(size) + "\r\n" + part + "\r\n";
    want_chunked += part;
  }
  chunked += "0\r\n\r\n";
  const std::string big(40000, 'b');
  ScriptServer s([&](int request) {
    switch (request) {
    case 0: return std::vector<Step>{{chunked}};
    case 1: return std::vector<Step>{{fixed(big)}};
    case 2: return std::vector<Step>{{fixed("")}};
    case 3:
      return std::vector<Step>{{"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n01234"},
                               {"56789", 50ms}};
    default: return std::vector<Step>{{fixed(std::string(5000, 'x'))}};
    }
  });
  SystemClock clock;
  IoLoop loop(1);
  AsyncUpstreamClient client(loop, opts(s.port()), clock);
  // The script answers the requests of the one kept-alive connection in order.
  auto a = read_all_of(client);
  ASSERT_TRUE(a.ok()) << a.error().message;
  EXPECT_EQ(*a, want_chunked);
  auto b = read_all_of(client);
  ASSERT_TRUE(b.ok()) << b.error().message;
  EXPECT_EQ(*b, big);
  auto c = read_all_of(client);
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(*c, "");
  auto d = read_all_of(client);
  ASSERT_TRUE(d.ok()) << d.error().message;
  EXPECT_EQ(*d, "0123456789");
  EXPECT_EQ(client.connections_opened(), 1) << "every body was read to its end: kept alive";
  // A body over the cap that came whole with the head is refused like one read later.
  auto e = read_all_of(client, 1000);
  ASSERT_FALSE(e.ok());
  EXPECT_EQ(e.error().param, kResponseTooLarge);
}

TEST(AsyncUpstreamClient, ServerClosingAKeptConnectionIsRetriedOnAFreshOne) {
  ScriptServer s([](int) { return std::vector<Step>{{fixed("{}")}}; }, /*keep_alive=*/false);
  SystemClock clock;
  IoLoop loop(1);
  AsyncUpstreamClient client(loop, opts(s.port()), clock);
  for (int i = 0; i < 3; ++i) {
    auto r = get(fetch(client));
    ASSERT_TRUE(r.body.ok()) << i << ": " << r.body.error().message;
    EXPECT_EQ(*r.body, "{}");
  }
}

// What the asynchronous client is for: a hundred slow calls in flight at once on one thread.
TEST(AsyncUpstreamClient, ManyCallsInFlightOnOneLoopThread) {
  ScriptServer s([](int i) {
    return std::vector<Step>{{fixed("{\"n\":" + std::to_string(i) + "}"), 200ms}};
  });
  SystemClock clock;
  IoLoop loop(1);
  auto o = opts(s.port());
  o.max_idle = 128;
  // The script server starts a thread per connection: under ThreadSanitizer the hundredth
  // answered after the 2 s first-byte timeout of the other tests (the calls are what is
  // tested here, not the deadlines).
  o.connect_timeout = o.first_byte_timeout = o.idle_timeout = 20s;
  o.total_timeout = 60s;
  AsyncUpstreamClient client(loop, o, clock);
  std::vector<std::future<Outcome>> futs;
  for (int i = 0; i < 100; ++i)
    futs.push_back(fetch(client));
  std::set<std::string> bodies;
  for (auto &f : futs) {
    auto r = get(std::move(f));
    ASSERT_TRUE(r.body.ok()) << r.body.error().message;
    EXPECT_EQ(r.status, 200);
    bodies.insert(*r.body);
  }
  EXPECT_EQ(bodies.size(), 100u) << "each call got its own answer";
}

// A cancel may land before the connect, during any step, or after the end: each call ends
// exactly once, with its answer or kCancelledCall; only a call read to its end gives its
// connection back.
TEST(AsyncUpstreamClient, CancelRacingCompletionEndsEachCallOnce) {
  ScriptServer s([](int) { return std::vector<Step>{{fixed("{\"ok\":1}")}}; });
  SystemClock clock;
  IoLoop loop(2);
  AsyncUpstreamClient client(loop, opts(s.port()), clock);
  std::mt19937 rng(7);
  int answered = 0, cancelled = 0;
  for (int i = 0; i < 300; ++i) {
    std::shared_ptr<AsyncUpstreamCall> call;
    auto fut = fetch(client, "/", &call);
    std::this_thread::sleep_for(std::chrono::microseconds(rng() % 400));
    call->cancel();
    auto r = get(std::move(fut));
    if (r.body.ok()) {
      EXPECT_EQ(*r.body, "{\"ok\":1}");
      ++answered;
    } else {
      EXPECT_EQ(r.body.error().param, kCancelledCall) << r.body.error().message;
      ++cancelled;
    }
  }
  EXPECT_EQ(answered + cancelled, 300);
  EXPECT_LE(client.idle_connections(), answered) << "only answered calls give theirs back";
}

TEST(AsyncUpstreamClient, HttpsVerifiesAgainstTheConfiguredCa) {
  ::gantry::testing::TestCerts certs;
  if (!certs.ok())
    GTEST_SKIP() << "openssl CLI unavailable";
  ::gantry::testing::Receiver::Options ro;
  ro.body = "{\"tls\":true}";
  ro.tls = &certs;
  ::gantry::testing::Receiver rx(ro);
  SystemClock clock;
  IoLoop loop(1);
  auto o = opts(rx.port());
  o.host = "localhost";
  o.tls = true;
  {
    AsyncUpstreamClient untrusted(loop, o, clock);
    auto r = get(fetch(untrusted));
    ASSERT_FALSE(r.body.ok());
    EXPECT_EQ(r.body.error().param, kTlsFailed);
  }
  o.tls_ca_file = certs.ca();
  AsyncUpstreamClient trusted(loop, o, clock);
  auto r = get(fetch(trusted));
  ASSERT_TRUE(r.body.ok()) << r.body.error().message;
  EXPECT_EQ(*r.body, "{\"tls\":true}");
}

} // namespace
} // namespace gantry::http
