// SentryForwarder against a real local receiver (http::HttpServer on port 0) and against
// scripted posters for the rate-limit and back-pressure paths.
#include <gtest/gtest.h>

#include <future>
#include <mutex>

#include "http/server.h"
#include "observe/envelope_check.h"
#include "observe/http_poster.h"
#include "observe/sentry.h"
#include "support/fake_clock.h"

namespace gantry::observe {
namespace {

using namespace std::chrono_literals;

// Long enough for a loaded CI machine; flush() returns as soon as the queue drains.
constexpr auto kFlush = 10s;

ErrorEvent event(std::string message, std::string location = "gateway.inference") {
  ErrorEvent e;
  e.type = "internal_error";
  e.message = std::move(message);
  e.location = std::move(location);
  e.tags = {{"model", "tiny"}, {"endpoint", "/v1/chat/completions"}, {"request_id", "r1"}};
  return e;
}

struct Received {
  std::string path;
  std::string auth;
  std::string content_type;
  std::string body;
};

// A stand-in for Sentry: records each request and answers with a configurable status.
class Receiver {
public:
  Receiver()
      : server_(http::ServerOptions{},
                [this](http::Request &&req, std::shared_ptr<http::ResponseWriter> w) {
                  http::Response resp = http::Response::json(200, R"({"id":"x"})");
                  {
                    std::lock_guard<std::mutex> lk(mu_);
                    received_.push_back(
                        Received{req.path, std::string(req.header("X-Sentry-Auth").value_or("")),
                                 std::string(req.header("Content-Type").value_or("")), req.body});
                    resp.status = status_;
                    if (!retry_after_.empty())
                      resp.headers.push_back({"Retry-After", retry_after_});
                  }
                  w->respond(std::move(resp));
                }) {}

  void start() { ASSERT_TRUE(server_.start()); }
  std::uint16_t port() const { return server_.port(); }
  void answer(int status, std::string retry_after) {
    std::lock_guard<std::mutex> lk(mu_);
    status_ = status;
    retry_after_ = std::move(retry_after);
  }
  std::vector<Received> received() const {
    std::lock_guard<std::mutex> lk(mu_);
    return received_;
  }

private:
  mutable std::mutex mu_;
  std::vector<Received> received_;
  int status_ = 200;
  std::string retry_after_;
  http::HttpServer server_;
};

class SentryForwarderHttpTest : public ::testing::Test {
protected:
  void SetUp() override {
    receiver_.start();
    auto dsn = parse_dsn("http://pubkey123@127.0.0.1:" + std::to_string(receiver_.port()) + "/42");
    ASSERT_TRUE(dsn) << dsn.error().message;
    ASSERT_TRUE(check_postable_url(dsn->envelope_url()));
    forwarder_ =
        std::make_unique<SentryForwarder>(*dsn, SentryOptions{}, make_http_poster(5s), clock_);
    tracker_ = std::make_unique<ErrorTracker>(clock_, ErrorTrackerOptions{}, forwarder_.get());
  }
  void TearDown() override {
    tracker_.reset();
    forwarder_.reset();
  }

  FakeClock clock_;
  Receiver receiver_;
  std::unique_ptr<SentryForwarder> forwarder_;
  std::unique_ptr<ErrorTracker> tracker_;
};

TEST_F(SentryForwarderHttpTest, PostsNewGroupsAndRateLimitsRepeats) {
  tracker_->capture(event("KV cache full after 812 tokens"));
  ASSERT_TRUE(forwarder_->flush(kFlush));
  auto got = receiver_.received();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].path, "/api/42/envelope/");
  EXPECT_NE(got[0].auth.find("sentry_key=pubkey123"), std::string::npos) << got[0].auth;
  EXPECT_NE(got[0].auth.find("sentry_version=7"), std::string::npos) << got[0].auth;
  EXPECT_EQ(got[0].auth.rfind("Sentry ", 0), 0u) << got[0].auth;
  EXPECT_EQ(got[0].content_type, "application/x-sentry-envelope");
  testing::ParsedEnvelope p = testing::parse_envelope(got[0].body);
  ASSERT_EQ(p.error, "") << got[0].body;
  EXPECT_TRUE(testing::is_hex32(p.header.at("event_id")));
  EXPECT_EQ(p.header.at("event_id"), p.payload.at("event_id"));
  EXPECT_EQ(p.item.at("type").as_string(), "event");
  EXPECT_EQ(p.payload.at("exception").at("values").at(0).at("value").as_string(),
            "KV cache full after 812 tokens");
  EXPECT_EQ(p.payload.at("tags").at("model").as_string(), "tiny");
  EXPECT_EQ(p.payload.at("fingerprint").at(0).as_string(), tracker_->groups().at(0).fingerprint);

  // Same group within the minute: counted locally, not re-sent.
  clock_.advance(30s);
  tracker_->capture(event("KV cache full after 90 tokens"));
  tracker_->capture(event("KV cache full after 91 tokens"));
  ASSERT_TRUE(forwarder_->flush(kFlush));
  EXPECT_EQ(receiver_.received().size(), 1u);
  EXPECT_EQ(forwarder_->stats().suppressed_repeats, 2u);
  EXPECT_EQ(tracker_->groups().at(0).count, 3u);

  // A new group goes out at once, even inside the window.
  tracker_->capture(event("engine step failed", "engine.step"));
  ASSERT_TRUE(forwarder_->flush(kFlush));
  ASSERT_EQ(receiver_.received().size(), 2u);

  // After the window, the first group may be reported again.
  clock_.advance(31s);
  tracker_->capture(event("KV cache full after 7 tokens"));
  ASSERT_TRUE(forwarder_->flush(kFlush));
  got = receiver_.received();
  ASSERT_EQ(got.size(), 3u);
  testing::ParsedEnvelope again = testing::parse_envelope(got[2].body);
  ASSERT_EQ(again.error, "");
  EXPECT_EQ(again.payload.at("exception").at("values").at(0).at("value").as_string(),
            "KV cache full after 7 tokens");
  EXPECT_NE(again.payload.at("event_id"), p.payload.at("event_id"));

  const SentryStats s = forwarder_->stats();
  EXPECT_EQ(s.sent, 3u);
  EXPECT_EQ(s.enqueued, 3u);
  EXPECT_EQ(s.failed, 0u);
}

TEST_F(SentryForwarderHttpTest, HonoursRetryAfterFromA429) {
  receiver_.answer(429, "120");
  tracker_->capture(event("first"));
  ASSERT_TRUE(forwarder_->flush(kFlush));
  ASSERT_EQ(receiver_.received().size(), 1u);
  EXPECT_EQ(forwarder_->stats().rate_limited, 1u);

  receiver_.answer(200, "");
  clock_.advance(119s);
  tracker_->capture(event("second", "elsewhere")); // a new group, but Sentry asked for quiet
  ASSERT_TRUE(forwarder_->flush(kFlush));
  EXPECT_EQ(receiver_.received().size(), 1u);
  EXPECT_EQ(forwarder_->stats().dropped_paused, 1u);

  clock_.advance(1s);
  tracker_->capture(event("second", "elsewhere")); // no longer new, but never sent: goes now
  ASSERT_TRUE(forwarder_->flush(kFlush));
  EXPECT_EQ(receiver_.received().size(), 2u);
  EXPECT_EQ(forwarder_->stats().sent, 1u);
}

// A poster the test scripts: records calls, and can hold the forwarder thread at a gate.
class ScriptedPoster {
public:
  HttpPoster poster() {
    return [this](const std::string &url, const std::string &body,
                  const http::Headers &) -> Result<PostResponse> {
      std::unique_lock<std::mutex> lk(mu_);
      urls_.push_back(url);
      bodies_.push_back(body);
      if (entered_) {
        entered_->set_value();
        entered_.reset();
      }
      gate_cv_.wait(lk, [&] { return open_; });
      if (throw_next_) {
        throw_next_ = false;
        throw std::runtime_error("transport exploded");
      }
      if (fail_next_) {
        fail_next_ = false;
        return Error::io("connection refused");
      }
      return PostResponse{200, "", ""};
    };
  }
  std::future<void> close_gate() {
    std::lock_guard<std::mutex> lk(mu_);
    open_ = false;
    entered_.emplace();
    return entered_->get_future();
  }
  void open_gate() {
    {
      std::lock_guard<std::mutex> lk(mu_);
      open_ = true;
    }
    gate_cv_.notify_all();
  }
  void fail_next() {
    std::lock_guard<std::mutex> lk(mu_);
    fail_next_ = true;
  }
  void throw_next() {
    std::lock_guard<std::mutex> lk(mu_);
    throw_next_ = true;
  }
  std::size_t calls() const {
    std::lock_guard<std::mutex> lk(mu_);
    return urls_.size();
  }

private:
  mutable std::mutex mu_;
  std::condition_variable gate_cv_;
  bool open_ = true;
  bool fail_next_ = false;
  bool throw_next_ = false;
  std::optional<std::promise<void>> entered_;
  std::vector<std::string> urls_, bodies_;
};

SentryDsn test_dsn() {
  auto dsn = parse_dsn("http://k@127.0.0.1:9/1");
  if (!dsn)
    throw std::logic_error(dsn.error().message);
  return *dsn;
}

TEST(SentryForwarder, DropsAndCountsWhenTheQueueIsFull) {
  FakeClock clock;
  ScriptedPoster script;
  SentryOptions options;
  options.queue_capacity = 2;
  SentryForwarder forwarder(test_dsn(), options, script.poster(), clock);
  ErrorTracker tracker(clock, {}, &forwarder);

  std::future<void> entered = script.close_gate();
  tracker.capture(event("a", "A"));
  ASSERT_EQ(entered.wait_for(kFlush), std::future_status::ready) << "the post never started";
  // The first event is in flight (held at the gate); two fit in the queue, the third does not.
  tracker.capture(event("b", "B"));
  tracker.capture(event("c", "C"));
  tracker.capture(event("d", "D"));
  EXPECT_EQ(forwarder.stats().dropped_queue_full, 1u);
  EXPECT_FALSE(forwarder.flush(0ms));
  script.open_gate();
  ASSERT_TRUE(forwarder.flush(kFlush));
  EXPECT_EQ(script.calls(), 3u);
  EXPECT_EQ(forwarder.stats().sent, 3u);
  EXPECT_EQ(forwarder.stats().enqueued, 3u);
}

TEST(SentryForwarder, KeepsForwardingAfterTransportFailuresAndThrows) {
  FakeClock clock;
  ScriptedPoster script;
  SentryForwarder forwarder(test_dsn(), SentryOptions{}, script.poster(), clock);
  ErrorTracker tracker(clock, {}, &forwarder);

  script.fail_next();
  tracker.capture(event("a", "A"));
  ASSERT_TRUE(forwarder.flush(kFlush));
  script.throw_next();
  tracker.capture(event("b", "B"));
  ASSERT_TRUE(forwarder.flush(kFlush));
  tracker.capture(event("c", "C"));
  ASSERT_TRUE(forwarder.flush(kFlush));
  const SentryStats s = forwarder.stats();
  EXPECT_EQ(s.failed, 2u);
  EXPECT_EQ(s.sent, 1u);
  EXPECT_EQ(script.calls(), 3u);
}

TEST(SentryForwarder, BoundsThePerGroupTable) {
  FakeClock clock;
  ScriptedPoster script;
  SentryOptions options;
  options.max_tracked_groups = 4;
  options.queue_capacity = 100;
  SentryForwarder forwarder(test_dsn(), options, script.poster(), clock);
  ErrorTracker tracker(clock, {}, &forwarder);
  for (int i = 0; i < 10; ++i)
    tracker.capture(event("e", "loc" + std::to_string(i)));
  ASSERT_TRUE(forwarder.flush(kFlush));
  EXPECT_EQ(script.calls(), 10u);
  // Group 0 was forgotten by the bound, so its repeat is sent instead of suppressed.
  tracker.capture(event("e", "loc0"));
  ASSERT_TRUE(forwarder.flush(kFlush));
  EXPECT_EQ(script.calls(), 11u);
  // Group 9 is still tracked: suppressed.
  tracker.capture(event("e", "loc9"));
  ASSERT_TRUE(forwarder.flush(kFlush));
  EXPECT_EQ(script.calls(), 11u);
  EXPECT_EQ(forwarder.stats().suppressed_repeats, 1u);
}

} // namespace
} // namespace gantry::observe
