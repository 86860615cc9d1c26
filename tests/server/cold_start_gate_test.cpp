// The cold-start front door (issue 14 item 3) on a FakeClock: calls are held while no replica is
// ready and started the moment one is, with progress comments meanwhile; each bound (held calls,
// the wait) is enforced with a 503 and Retry-After; a cancelled held call frees its slot.
#include "server/cold_start_gate.h"

#include <gtest/gtest.h>

#include <mutex>
#include <optional>

#include "support/fake_clock.h"

namespace gantry::server {
namespace {

using namespace std::chrono_literals;

// A pool stand-in that answers every started call with one event and its summary, at once.
class EchoPool final : public backend::ModelBackend {
public:
  EchoPool() { info_.name = "stories"; }
  const backend::BackendInfo &info() const override { return info_; }
  Result<backend::PreparedCall> prepare(const api::InferenceRequest &,
                                        const backend::PrepareOptions &) override {
    return backend::PreparedCall{};
  }
  Result<std::unique_ptr<backend::CallHandle>>
  start(const backend::PreparedCall &, std::shared_ptr<backend::CallSink> sink) override {
    ++started;
    backend::ChoiceEvent ev;
    ev.text = "Once";
    ev.tokens = 1;
    sink->on_event(ev);
    sink->on_done(backend::CallSummary{});
    struct Noop final : backend::CallHandle {
      void cancel() override {}
    };
    return std::unique_ptr<backend::CallHandle>(new Noop);
  }
  Result<backend::PreparedEmbeddings> prepare_embeddings(const api::EmbeddingRequest &) override {
    return Err(Error::invalid("no"));
  }
  Status embed(const backend::PreparedEmbeddings &p, std::vector<size_t> indices,
               backend::EmbedDone done) override {
    ++embedded;
    backend::EmbedResult r;
    for (size_t i : indices)
      r.vectors.push_back({static_cast<float>(p.input_tokens.at(i))});
    done(std::move(r));
    return Ok();
  }
  void probe(backend::ProbeDone done) override { done({false, "pool probed", 0}); }
  backend::BackendStats stats() const override { return {}; }
  void stop_accepting() override {}
  bool wait_idle(std::chrono::milliseconds) override { return true; }
  void cancel_all() override {}

  int started = 0;
  int embedded = 0;

private:
  backend::BackendInfo info_;
};

struct Recorder final : backend::CallSink {
  void on_event(const backend::ChoiceEvent &ev) override {
    std::lock_guard<std::mutex> lk(mu);
    lines.push_back("event " + ev.text);
  }
  void on_done(const backend::CallSummary &s) override {
    std::lock_guard<std::mutex> lk(mu);
    done = true;
    summary = s;
  }
  void on_progress(std::string_view c) override {
    std::lock_guard<std::mutex> lk(mu);
    lines.push_back(": " + std::string(c));
  }
  std::mutex mu;
  std::vector<std::string> lines;
  bool done = false;
  backend::CallSummary summary;
};

class GateTest : public ::testing::Test {
protected:
  FakeClock clock;
  EchoPool *pool = nullptr;
  int wakes = 0;

  std::unique_ptr<ColdStartGate> make(int max_held = 2, std::chrono::milliseconds timeout = 60s) {
    auto p = std::make_unique<EchoPool>();
    pool = p.get();
    ColdStartOptions o;
    o.max_held = max_held;
    o.timeout = timeout;
    o.initial_estimate = 10s;
    return std::make_unique<ColdStartGate>(std::move(p), o, clock, [this] { ++wakes; });
  }
};

TEST_F(GateTest, AReadyPoolIsPassedStraightThrough) {
  auto g = make();
  g->set_ready(1);
  auto sink = std::make_shared<Recorder>();
  ASSERT_TRUE(g->start({}, sink));
  EXPECT_EQ(pool->started, 1);
  EXPECT_TRUE(sink->done);
  EXPECT_EQ(sink->summary.cold_start_ms, -1) << "not held, no cold start";
  EXPECT_EQ(sink->lines, std::vector<std::string>{"event Once"});
}

TEST_F(GateTest, AtZeroACallIsHeldWithProgressThenStartedWhenAReplicaIsLive) {
  auto g = make();
  auto sink = std::make_shared<Recorder>();
  ASSERT_TRUE(g->start({}, sink));
  EXPECT_EQ(pool->started, 0);
  EXPECT_EQ(g->held(), 1);
  EXPECT_EQ(wakes, 1) << "the autoscaler is woken by the first hold";
  EXPECT_EQ(g->stats().waiting, 1) << "held calls are waiting demand";
  EXPECT_TRUE(sink->lines.empty()) << "nothing is delivered inside start()";
  g->tick();
  clock.advance(1s);
  g->tick();
  clock.advance(5s);
  g->tick();
  EXPECT_EQ(sink->lines, (std::vector<std::string>{": loading model 0%", ": loading model 10%",
                                                   ": loading model 60%"}));
  clock.advance(500ms);
  g->set_ready(1);
  g->tick();
  EXPECT_EQ(pool->started, 1);
  ASSERT_TRUE(sink->done);
  EXPECT_EQ(sink->summary.cold_start_ms, 6500);
  ASSERT_EQ(sink->lines.size(), 5u);
  EXPECT_EQ(sink->lines[3], ": x-gantry-cold-start-ms 6500") << "before the first event";
  EXPECT_EQ(sink->lines[4], "event Once");
  EXPECT_EQ(g->counts().released, 1u);

  // The next cold start's progress is measured against this one (6.5 s), capped below 100.
  g->set_ready(0);
  auto next = std::make_shared<Recorder>();
  ASSERT_TRUE(g->start({}, next));
  clock.advance(3250ms);
  g->tick();
  clock.advance(10s);
  g->tick();
  EXPECT_EQ(next->lines, (std::vector<std::string>{": loading model 50%", ": loading model 99%"}));
}

TEST_F(GateTest, BeyondMaxHeldA503WithRetryAfter) {
  auto g = make(2);
  auto a = std::make_shared<Recorder>(), b = std::make_shared<Recorder>();
  ASSERT_TRUE(g->start({}, a));
  ASSERT_TRUE(g->start({}, b));
  auto refused = g->start({}, std::make_shared<Recorder>());
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, ErrorCode::kUnavailable);
  EXPECT_GT(refused.error().retry_after_ms, 0);
  EXPECT_NE(refused.error().message.find("max_held_requests"), std::string::npos);
  EXPECT_EQ(g->counts().refused, 1u);
  auto zero = make(0);
  EXPECT_FALSE(zero->start({}, std::make_shared<Recorder>())) << "max_held_requests = 0: no hold";
}

TEST_F(GateTest, AHeldCallTimesOutWithA503) {
  auto g = make(4, 30s);
  auto sink = std::make_shared<Recorder>();
  ASSERT_TRUE(g->start({}, sink));
  clock.advance(29s);
  g->tick();
  EXPECT_FALSE(sink->done);
  clock.advance(1s);
  g->tick();
  ASSERT_TRUE(sink->done);
  ASSERT_TRUE(sink->summary.error);
  EXPECT_EQ(sink->summary.error->error.code, ErrorCode::kUnavailable);
  EXPECT_GT(sink->summary.error->error.retry_after_ms, 0);
  EXPECT_NE(sink->summary.error->error.message.find("cold_start_timeout_s"), std::string::npos);
  EXPECT_EQ(g->held(), 0);
  EXPECT_EQ(g->counts().timed_out, 1u);
  g->set_ready(1);
  g->tick();
  EXPECT_EQ(pool->started, 0) << "a timed-out call is never started";
}

TEST_F(GateTest, ACancelledHeldCallFreesItsSlotAndEndsWithoutStarting) {
  auto g = make(1);
  auto sink = std::make_shared<Recorder>();
  auto h = g->start({}, sink);
  ASSERT_TRUE(h);
  EXPECT_FALSE(g->start({}, std::make_shared<Recorder>())) << "the one slot is taken";
  (*h)->cancel();
  EXPECT_EQ(g->held(), 0);
  EXPECT_FALSE(sink->done) << "delivered at the tick, not inside cancel()";
  g->tick();
  ASSERT_TRUE(sink->done);
  EXPECT_EQ(sink->summary.error->error.code, ErrorCode::kCancelled);
  EXPECT_TRUE(g->start({}, std::make_shared<Recorder>())) << "the slot is free again";
  g->set_ready(1);
  g->tick();
  EXPECT_EQ(pool->started, 1) << "only the call still held";
  EXPECT_EQ(g->counts().cancelled, 1u);
}

TEST_F(GateTest, AtZeroTheGatewayStaysReady) {
  auto g = make();
  bool ok = false;
  g->probe([&](backend::ProbeResult r) { ok = r.ok; });
  EXPECT_TRUE(ok);
  g->set_ready(1);
  g->probe([&](backend::ProbeResult r) { ok = r.ok; });
  EXPECT_FALSE(ok) << "with replicas, the pool's own probe decides";
}

// Embeddings wait too: held at zero (the caller's prepared inputs copied), answered by the pool at
// the release, bounded by the same max_held and timeout as calls.
TEST_F(GateTest, EmbeddingsAreHeldAtZeroAndAnsweredWhenAReplicaIsLive) {
  auto g = make(2, 10s);
  std::optional<Result<backend::EmbedResult>> got;
  {
    backend::PreparedEmbeddings p;
    p.input_tokens = {3, 5};
    ASSERT_TRUE(g->embed(p, {1}, [&](Result<backend::EmbedResult> r) { got = std::move(r); }));
  } // the caller's copy is gone, as in the embeddings route
  EXPECT_EQ(g->held(), 1);
  EXPECT_EQ(wakes, 1);
  g->tick();
  EXPECT_FALSE(got) << "still held";
  // A call beside it fills max_held = 2; a third request of either kind is refused.
  ASSERT_TRUE(g->start({}, std::make_shared<Recorder>()));
  auto refused = g->embed(backend::PreparedEmbeddings{}, {}, [](Result<backend::EmbedResult>) {
    ADD_FAILURE() << "a refused embedding is answered by the caller, not the gate";
  });
  ASSERT_FALSE(refused);
  EXPECT_TRUE(refused.error().retry_after_ms > 0);
  g->set_ready(1);
  g->tick();
  ASSERT_TRUE(got);
  ASSERT_TRUE(*got);
  EXPECT_EQ((*got)->vectors, (std::vector<std::vector<float>>{{5}}));
  EXPECT_EQ(pool->embedded, 1);
  EXPECT_EQ(g->counts().released, 2u);
}

TEST_F(GateTest, AHeldEmbeddingTimesOutWithA503AndShutdownAnswersTheRest) {
  auto g = make(4, 10s);
  std::optional<Result<backend::EmbedResult>> first, second;
  backend::PreparedEmbeddings p;
  p.input_tokens = {1};
  ASSERT_TRUE(g->embed(p, {0}, [&](Result<backend::EmbedResult> r) { first = std::move(r); }));
  clock.advance(6s);
  ASSERT_TRUE(g->embed(p, {0}, [&](Result<backend::EmbedResult> r) { second = std::move(r); }));
  clock.advance(4s);
  g->tick();
  ASSERT_TRUE(first);
  ASSERT_FALSE(*first);
  EXPECT_EQ(first->error().code, ErrorCode::kUnavailable);
  EXPECT_NE(first->error().message.find("cold_start_timeout_s"), std::string::npos);
  EXPECT_TRUE(first->error().retry_after_ms > 0);
  EXPECT_FALSE(second) << "held for 4 s of its 10";
  g->cancel_all();
  ASSERT_TRUE(second);
  ASSERT_FALSE(*second);
  EXPECT_NE(second->error().message.find("shutting down"), std::string::npos);
  EXPECT_EQ(g->held(), 0);
  EXPECT_EQ(pool->embedded, 0);
}

} // namespace
} // namespace gantry::server
