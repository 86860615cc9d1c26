// What the asynchronous call path of RemoteBackend adds (remote_call.h): many calls in flight
// on one I/O thread, the pool's wait queue without a blocked thread (a slot freed wakes the
// next call; a full queue is a 429; a queued call cancels at once), cancels racing completions,
// and a backend destroyed with calls in flight. Upstreams are nginx and a silent socket on
// 127.0.0.1.
#include <gtest/gtest.h>

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <condition_variable>
#include <mutex>
#include <random>
#include <thread>

#include "backend/remote/remote_backend.h"
#include "http/client.h"
#include "http/server.h"
#include "integration/nginx_process.h"

namespace gantry::testing {
namespace {

using namespace std::chrono_literals;
using backend::remote::RemoteBackend;
using backend::remote::RemoteModelConfig;

const char *kBody =
    R"({"id":"x","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,)"
    R"("message":{"role":"assistant","content":"fixed"},"finish_reason":"stop"}],)"
    R"("usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6}})";

// Counts every callback, so a second on_done would show.
class Sink final : public backend::CallSink {
public:
  void on_event(const backend::ChoiceEvent &e) override {
    std::lock_guard<std::mutex> lk(mu_);
    text += e.text;
  }
  void on_done(const backend::CallSummary &s) override {
    std::lock_guard<std::mutex> lk(mu_);
    summary = s;
    ++done;
    cv_.notify_all();
  }
  bool wait(std::chrono::milliseconds t = 30s) {
    std::unique_lock<std::mutex> lk(mu_);
    return cv_.wait_for(lk, t, [&] { return done > 0; });
  }
  std::string text;
  backend::CallSummary summary;
  int done = 0;

private:
  std::mutex mu_;
  std::condition_variable cv_;
};

api::InferenceRequest chat() {
  api::InferenceRequest r;
  r.endpoint = api::Endpoint::kChatCompletions;
  r.model = "remote";
  r.messages = {{"user", "Once upon"}};
  r.max_tokens = 8;
  return r;
}

RemoteModelConfig config_for(const std::string &url) {
  RemoteModelConfig c;
  c.name = "remote";
  backend::remote::RemoteEndpointConfig e;
  e.url = url;
  e.model = "m";
  c.endpoints.push_back(e);
  c.probe_path = "";
  return c;
}

struct Started {
  std::shared_ptr<Sink> sink = std::make_shared<Sink>();
  std::unique_ptr<backend::CallHandle> handle;
  std::optional<Error> refused;
};

Started start(RemoteBackend &b) {
  Started s;
  auto p = b.prepare(chat(), {});
  EXPECT_TRUE(p.ok());
  auto h = b.start(*p, s.sink);
  if (h)
    s.handle = std::move(*h);
  else
    s.refused = h.error();
  return s;
}

std::unique_ptr<NginxProcess> fixed_upstream() {
  NginxOptions o;
  o.locations = R"(location / { default_type application/json; return 200 ')" + std::string(kBody) +
                R"('; })";
  auto ngx = NginxProcess::start(o);
  EXPECT_TRUE(ngx.ok()) << ngx.error().message;
  return ngx ? std::move(*ngx) : nullptr;
}

// Listens and never answers: calls stay in flight until cancelled.
struct SilentSocket {
  SilentSocket() {
    fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr *>(&a), sizeof a), 0);
    EXPECT_EQ(::listen(fd, 64), 0);
    socklen_t len = sizeof a;
    ::getsockname(fd, reinterpret_cast<sockaddr *>(&a), &len);
    url = "http://127.0.0.1:" + std::to_string(ntohs(a.sin_port)) + "/v1";
  }
  ~SilentSocket() { ::close(fd); }
  int fd = -1;
  std::string url;
};

template <typename F> bool poll(F &&f, std::chrono::milliseconds limit = 10s) {
  const auto end = std::chrono::steady_clock::now() + limit;
  while (!f()) {
    if (std::chrono::steady_clock::now() > end)
      return false;
    std::this_thread::sleep_for(2ms);
  }
  return true;
}

TEST(RemoteAsync, TwoHundredCallsInFlightOnOneIoThread) {
  if (!NginxProcess::available())
    GTEST_SKIP() << "nginx not installed";
  auto ngx = fixed_upstream();
  ASSERT_TRUE(ngx);
  SystemClock clock;
  auto cfg = config_for(ngx->url() + "/v1");
  cfg.io_threads = 1;
  auto b = RemoteBackend::create(cfg, clock);
  ASSERT_TRUE(b.ok()) << b.error().message;
  std::vector<Started> calls;
  for (int i = 0; i < 200; ++i)
    calls.push_back(start(**b));
  for (auto &c : calls) {
    ASSERT_FALSE(c.refused) << c.refused->message;
    ASSERT_TRUE(c.sink->wait()) << "no summary in time";
    ASSERT_FALSE(c.sink->summary.error) << c.sink->summary.error->error.message;
    EXPECT_EQ(c.sink->text, "fixed");
    EXPECT_EQ(c.sink->summary.usage.completion_tokens, 1);
  }
  EXPECT_TRUE((*b)->wait_idle(5s));
  EXPECT_EQ((*b)->stats().in_flight, 0);
}

TEST(RemoteAsync, MaxConcurrentQueuesCallsAndWakesThemAsSlotsFree) {
  if (!NginxProcess::available())
    GTEST_SKIP() << "nginx not installed";
  auto ngx = fixed_upstream();
  ASSERT_TRUE(ngx);
  SystemClock clock;
  auto cfg = config_for(ngx->url() + "/v1");
  cfg.endpoints[0].max_concurrent = 2;
  cfg.pool.max_queue = 100;
  cfg.pool.max_queue_wait = 20s;
  auto b = RemoteBackend::create(cfg, clock);
  ASSERT_TRUE(b.ok());
  std::vector<Started> calls;
  for (int i = 0; i < 60; ++i)
    calls.push_back(start(**b));
  for (auto &c : calls) {
    ASSERT_TRUE(c.sink->wait());
    ASSERT_FALSE(c.sink->summary.error) << c.sink->summary.error->error.message;
  }
  const auto ps = (*b)->pool_stats();
  EXPECT_EQ(ps.queued, 0);
  EXPECT_EQ(ps.queue_rejected, 0u);
  EXPECT_EQ(ps.endpoints[0].requests, 60u);
}

TEST(RemoteAsync, FullQueueIsA429AndAQueuedCallCancelsAtOnce) {
  SilentSocket up;
  SystemClock clock;
  auto cfg = config_for(up.url);
  cfg.endpoints[0].max_concurrent = 1;
  cfg.pool.max_queue = 1;
  cfg.pool.max_queue_wait = 30s;
  cfg.first_byte_timeout = 30s;
  auto b = RemoteBackend::create(cfg, clock);
  ASSERT_TRUE(b.ok());
  auto holder = start(**b);
  ASSERT_TRUE(poll([&] { return (*b)->pool_stats().endpoints[0].in_flight == 1; }));
  auto queued = start(**b);
  ASSERT_TRUE(poll([&] { return (*b)->pool_stats().queued == 1; }));
  auto refused = start(**b);
  ASSERT_TRUE(refused.sink->wait());
  ASSERT_TRUE(refused.sink->summary.error);
  EXPECT_EQ(refused.sink->summary.error->error.code, ErrorCode::kQueueFull);
  EXPECT_EQ((*b)->pool_stats().queue_rejected, 1u);

  queued.handle->cancel();
  ASSERT_TRUE(queued.sink->wait(5s)) << "a queued call ends when cancelled, not at its deadline";
  ASSERT_TRUE(queued.sink->summary.error);
  EXPECT_EQ(queued.sink->summary.error->error.code, ErrorCode::kCancelled);
  EXPECT_EQ((*b)->pool_stats().queued, 0);
  EXPECT_EQ(holder.sink->done, 0) << "the call holding the slot is untouched";

  holder.handle->cancel();
  ASSERT_TRUE(holder.sink->wait(5s));
  EXPECT_EQ(holder.sink->summary.error->error.code, ErrorCode::kCancelled);
  EXPECT_TRUE((*b)->wait_idle(5s));
  EXPECT_EQ((*b)->stats().cancelled, 2u);
}

TEST(RemoteAsync, CancelRacingCompletionEndsEachCallOnce) {
  if (!NginxProcess::available())
    GTEST_SKIP() << "nginx not installed";
  auto ngx = fixed_upstream();
  ASSERT_TRUE(ngx);
  SystemClock clock;
  auto b = RemoteBackend::create(config_for(ngx->url() + "/v1"), clock);
  ASSERT_TRUE(b.ok());
  std::mt19937 rng(11);
  int answered = 0, cancelled = 0;
  std::vector<Started> calls;
  for (int i = 0; i < 300; ++i) {
    calls.push_back(start(**b));
    std::this_thread::sleep_for(std::chrono::microseconds(rng() % 300));
    calls.back().handle->cancel();
  }
  for (auto &c : calls) {
    ASSERT_TRUE(c.sink->wait());
    if (c.sink->summary.error) {
      EXPECT_EQ(c.sink->summary.error->error.code, ErrorCode::kCancelled)
          << c.sink->summary.error->error.message;
      ++cancelled;
    } else {
      EXPECT_EQ(c.sink->text, "fixed");
      ++answered;
    }
  }
  EXPECT_TRUE((*b)->wait_idle(5s));
  for (auto &c : calls)
    EXPECT_EQ(c.sink->done, 1) << "exactly one summary a call";
  EXPECT_EQ(answered + cancelled, 300);
  EXPECT_EQ((*b)->stats().cancelled, static_cast<uint64_t>(cancelled));
  EXPECT_FALSE((*b)->pool_stats().endpoints[0].ejected) << "cancels say nothing of the backend";
}

TEST(RemoteAsync, DestroyingTheBackendEndsEveryCallInFlight) {
  SilentSocket up;
  SystemClock clock;
  auto cfg = config_for(up.url);
  cfg.first_byte_timeout = 30s;
  cfg.endpoints[0].max_concurrent = 4; // some calls in flight, some queued
  std::vector<Started> calls;
  {
    auto b = RemoteBackend::create(cfg, clock);
    ASSERT_TRUE(b.ok());
    for (int i = 0; i < 12; ++i)
      calls.push_back(start(**b));
    ASSERT_TRUE(poll([&] { return (*b)->pool_stats().queued == 8; }));
  }
  for (auto &c : calls) {
    EXPECT_EQ(c.sink->done, 1) << "every call got its summary before the backend went away";
    ASSERT_TRUE(c.sink->summary.error);
    EXPECT_EQ(c.sink->summary.error->error.code, ErrorCode::kCancelled);
  }
}

// A call started by a request handler runs on the handler's own I/O thread: every step and the
// sink, with the upstream connection kept there too (no hand-off to the backend's loop and
// back, which cost more than the proxying on a 2-core machine). When the server stops, its
// threads' kept-alive connections go with it, and calls started elsewhere still run on the
// backend's own loop.
TEST(RemoteAsync, ACallStartedOnAServerIoThreadRunsThereAndOutlivesNothingOfIt) {
  auto up = fixed_upstream();
  ASSERT_TRUE(up);
  SystemClock clock;
  auto b = RemoteBackend::create(config_for(up->url() + "/v1"), clock);
  ASSERT_TRUE(b) << b.error().message;
  RemoteBackend &backend = **b;

  // Answers each request with the call's text once the call is done, and records the threads.
  struct Threads {
    std::mutex mu;
    int calls = 0, same_thread = 0;
  };
  auto threads = std::make_shared<Threads>();
  class Relay final : public backend::CallSink {
  public:
    Relay(std::shared_ptr<http::ResponseWriter> w, std::shared_ptr<Threads> t)
        : w_(std::move(w)), t_(std::move(t)), handler_(std::this_thread::get_id()) {}
    void on_event(const backend::ChoiceEvent &e) override {
      text_ += e.text;
      same_ &= std::this_thread::get_id() == handler_;
    }
    void on_done(const backend::CallSummary &s) override {
      same_ &= std::this_thread::get_id() == handler_;
      {
        std::lock_guard<std::mutex> lk(t_->mu);
        ++t_->calls;
        t_->same_thread += same_;
      }
      w_->respond(http::Response::text(s.error ? 502 : 200, text_));
    }

  private:
    std::shared_ptr<http::ResponseWriter> w_;
    std::shared_ptr<Threads> t_;
    std::thread::id handler_;
    std::string text_;
    bool same_ = true;
  };
  std::vector<std::unique_ptr<backend::CallHandle>> handles;
  std::mutex handles_mu;
  http::ServerOptions so;
  so.io_threads = 2;
  auto server = std::make_unique<http::HttpServer>(
      so, [&](http::Request &&, std::shared_ptr<http::ResponseWriter> w) {
        auto p = backend.prepare(chat(), {});
        ASSERT_TRUE(p.ok());
        auto h = backend.start(*p, std::make_shared<Relay>(w, threads));
        ASSERT_TRUE(h.ok());
        std::lock_guard<std::mutex> lk(handles_mu);
        handles.push_back(std::move(*h));
      });
  ASSERT_TRUE(server->start().ok());
  http::ClientOptions co;
  co.port = server->port();
  for (int i = 0; i < 4; ++i) { // each client connection lands on one of the two I/O threads
    http::HttpClient c(co);
    for (int j = 0; j < 5; ++j) {
      auto r = c.get("/");
      ASSERT_TRUE(r) << r.error().message;
      EXPECT_EQ(r->status, 200);
      EXPECT_EQ(r->body, "fixed");
    }
  }
  {
    std::lock_guard<std::mutex> lk(threads->mu);
    EXPECT_EQ(threads->calls, 20);
    EXPECT_EQ(threads->same_thread, 20) << "a call hopped off its handler's I/O thread";
  }
  // The server goes first: its threads' kept-alive upstream connections are dropped with it,
  // while the backend lives on.
  EXPECT_TRUE(server->shutdown(2s));
  server.reset();
  handles.clear();
  for (int i = 0; i < 3; ++i) {
    auto s = start(backend); // from this thread: the backend's own loop
    ASSERT_TRUE(s.handle) << s.refused->message;
    ASSERT_TRUE(s.sink->wait());
    EXPECT_FALSE(s.sink->summary.error) << s.sink->summary.error->error.message;
    EXPECT_EQ(s.sink->text, "fixed");
  }
}

} // namespace
} // namespace gantry::testing
