#include "autoscale/policy.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "support/fake_clock.h"

namespace gantry::autoscale {
namespace {

using namespace std::chrono_literals;

PolicyConfig base() {
  PolicyConfig c;
  c.min_replicas = 0;
  c.max_replicas = 10;
  c.target_ongoing_requests = 4;
  c.target_queue_wait = 5s;
  c.upscale_delay = 10s;
  c.downscale_delay = 60s;
  c.downscale_to_zero_delay = 300s;
  c.max_scale_step = 10;
  return c;
}

// `ongoing` requests running on `ready` replicas, nothing waiting.
Signals load(int64_t ongoing, int ready) {
  Signals s;
  s.running_requests = ongoing;
  s.replicas.ready = ready;
  return s;
}

Signals idle(int ready) { return load(0, ready); }

class PolicyTest : public ::testing::Test {
protected:
  FakeClock clock;

  // Evaluates once a second for `d`; returns the last decision.
  Decision run_for(Policy &p, std::chrono::seconds d, const Signals &s) {
    Decision last;
    for (auto t = 0s; t < d; t += 1s) {
      clock.advance(1s);
      last = p.evaluate(s);
    }
    return last;
  }
};

TEST_F(PolicyTest, StartsFromTheReplicasItFindsWithinBounds) {
  PolicyConfig c = base();
  c.min_replicas = 2;
  c.max_replicas = 5;
  Policy p(c, clock);
  Decision d = p.evaluate(load(8, 0)); // nothing running yet: starts at min, demand asks 2
  EXPECT_EQ(d.previous, 2);
  Policy q(c, clock);
  d = q.evaluate(load(20, 9)); // more running than max: clamped
  EXPECT_EQ(d.previous, 5);
  EXPECT_EQ(d.desired, 5);
  EXPECT_EQ(d.reason, Reason::kSteady);
}

TEST_F(PolicyTest, AnyDemandAtZeroScalesUpAtOnce) {
  Policy p(base(), clock);
  EXPECT_EQ(p.evaluate(idle(0)).desired, 0);
  Signals s;
  s.waiting_requests = 1;
  Decision d = p.evaluate(s); // no time passed: the upscale delay does not apply
  EXPECT_EQ(d.desired, 1);
  EXPECT_EQ(d.reason, Reason::kScaleFromZero);
  EXPECT_TRUE(d.changed());

  Policy jobs(base(), clock);
  Signals j;
  j.queued_jobs = 30; // a backlog of jobs asks for ceil(30 / 4) = 8 at once
  d = jobs.evaluate(j);
  EXPECT_EQ(d.desired, 8);
  EXPECT_EQ(d.reason, Reason::kScaleFromZero);
}

TEST_F(PolicyTest, ScaleFromZeroIsBoundedByTheStep) {
  PolicyConfig c = base();
  c.max_scale_step = 3;
  Policy p(c, clock);
  Signals s;
  s.waiting_requests = 100;
  EXPECT_EQ(p.evaluate(s).desired, 3);
}

TEST_F(PolicyTest, TargetOngoingRequestsSetsTheRecommendation) {
  PolicyConfig c = base();
  c.target_ongoing_requests = 2.5;
  Policy p(c, clock);
  Signals s = load(10, 1);
  s.waiting_requests = 4;
  s.queued_jobs = 1; // 15 ongoing / 2.5 = 6
  Decision d = p.evaluate(s);
  EXPECT_EQ(d.recommended, 6);
  EXPECT_EQ(d.trigger, Trigger::kOngoingRequests);
  EXPECT_EQ(d.desired, 1); // the delay has not passed
  EXPECT_EQ(d.reason, Reason::kScaleUpPending);
}

TEST_F(PolicyTest, UpscaleWaitsForItsDelay) {
  Policy p(base(), clock); // upscale_delay 10 s
  p.evaluate(load(4, 1));
  Decision d = p.evaluate(load(16, 1));
  EXPECT_EQ(d.reason, Reason::kScaleUpPending);
  clock.advance(9999ms);
  d = p.evaluate(load(16, 1));
  EXPECT_EQ(d.desired, 1) << "applied before upscale_delay_s";
  clock.advance(1ms);
  d = p.evaluate(load(16, 1));
  EXPECT_EQ(d.desired, 4);
  EXPECT_EQ(d.reason, Reason::kScaleUp);
  EXPECT_EQ(d.previous, 1);
}

TEST_F(PolicyTest, UpscaleAppliesOnlyWhatHeldTheWholeDelay) {
  Policy p(base(), clock);
  p.evaluate(load(4, 1));
  p.evaluate(load(40, 1)); // asks 10
  clock.advance(5s);
  p.evaluate(load(12, 1)); // asks 3
  clock.advance(5s);
  Decision d = p.evaluate(load(40, 1)); // asks 10 again
  EXPECT_EQ(d.desired, 3) << "a brief burst to 10 must not be applied in full";
}

TEST_F(PolicyTest, MaxScaleStepLimitsEachDecision) {
  PolicyConfig c = base();
  c.max_scale_step = 2;
  Policy p(c, clock);
  p.evaluate(load(4, 1));
  Decision d = run_for(p, 11s, load(40, 1));
  EXPECT_EQ(d.desired, 3);
  d = run_for(p, 11s, load(40, 3)); // the wait restarts after each step
  EXPECT_EQ(d.desired, 5);
  d = run_for(p, 60s, load(40, 5));
  EXPECT_EQ(d.desired, 10);
  // Down, likewise: 10 → 8 after the downscale delay.
  d = run_for(p, 61s, load(4, 10));
  EXPECT_EQ(d.desired, 8);
  EXPECT_EQ(d.reason, Reason::kScaleDown);
}

TEST_F(PolicyTest, MaxReplicasCapsTheCount) {
  PolicyConfig c = base();
  c.max_replicas = 3;
  Policy p(c, clock);
  p.evaluate(load(1, 1));
  Decision d = run_for(p, 20s, load(1000, 1));
  EXPECT_EQ(d.desired, 3);
  EXPECT_EQ(d.recommended, 3);
  d = p.evaluate(load(1000, 3));
  EXPECT_EQ(d.reason, Reason::kAtMax);
  EXPECT_EQ(d.desired, 3);
}

TEST_F(PolicyTest, MinReplicasKeepsAFloorWhenIdle) {
  PolicyConfig c = base();
  c.min_replicas = 2;
  Policy p(c, clock);
  p.evaluate(load(20, 5));
  Decision d = run_for(p, 3600s, idle(5));
  EXPECT_EQ(d.desired, 2);
  EXPECT_EQ(d.reason, Reason::kAtMin);
}

TEST_F(PolicyTest, DownscaleWaitsForItsDelayAndKeepsThePeak) {
  Policy p(base(), clock);             // downscale_delay 60 s
  p.evaluate(load(32, 8));             // 8 replicas, steady
  Decision d = p.evaluate(load(8, 8)); // asks 2
  EXPECT_EQ(d.reason, Reason::kScaleDownPending);
  d = run_for(p, 30s, load(8, 8));
  d = p.evaluate(load(20, 8)); // a moment at 5
  EXPECT_EQ(d.reason, Reason::kScaleDownPending);
  d = run_for(p, 29s, load(8, 8));
  EXPECT_EQ(d.desired, 8) << "applied before downscale_delay_s";
  d = run_for(p, 1s, load(8, 8));
  EXPECT_EQ(d.desired, 5) << "down to the largest recommendation of the window, not to 2";
  EXPECT_EQ(d.reason, Reason::kScaleDown);
}

TEST_F(PolicyTest, ScalesToZeroOnlyAfterTheIdleDelay) {
  Policy p(base(), clock); // downscale_delay 60 s, to zero 300 s
  p.evaluate(load(12, 3));
  Decision d = run_for(p, 61s, idle(3));
  EXPECT_EQ(d.desired, 1) << "the ordinary downscale stops at one";
  d = run_for(p, 200s, idle(1));
  EXPECT_EQ(d.desired, 1);
  EXPECT_EQ(d.reason, Reason::kScaleToZeroPending);
  // One request restarts the idle clock.
  d = p.evaluate(load(1, 1));
  EXPECT_EQ(d.desired, 1);
  d = run_for(p, 299s, idle(1));
  EXPECT_EQ(d.desired, 1) << "a request 299 s ago must keep the last replica";
  // The idle clock starts at the first evaluation that saw no demand, a second after the request.
  d = run_for(p, 2s, idle(1));
  EXPECT_EQ(d.desired, 0);
  EXPECT_EQ(d.reason, Reason::kScaleToZero);
  EXPECT_EQ(d.trigger, Trigger::kIdle);
  d = p.evaluate(idle(0));
  EXPECT_EQ(d.reason, Reason::kSteady);
}

TEST_F(PolicyTest, ZeroDelayToZeroStillRespectsTheStep) {
  PolicyConfig c = base();
  c.downscale_to_zero_delay = 0s;
  c.max_scale_step = 1;
  Policy p(c, clock);
  p.evaluate(load(12, 3));
  Decision d = run_for(p, 61s, idle(3));
  EXPECT_EQ(d.desired, 2); // one step after downscale_delay, not straight to zero
}

TEST_F(PolicyTest, OscillatingLoadDoesNotFlap) {
  // Load swings between 2 and 9 replicas' worth every 4 s, faster than either delay: the count
  // stays where it was.
  Policy p(base(), clock);
  p.evaluate(load(20, 5));
  int changes = 0;
  for (int i = 0; i < 3600; ++i) {
    clock.advance(1s);
    const bool high = (i / 4) % 2 == 0;
    Decision d = p.evaluate(load(high ? 36 : 8, 5));
    changes += d.changed() ? 1 : 0;
  }
  EXPECT_EQ(changes, 0);
  EXPECT_EQ(p.desired(), 5);
}

TEST_F(PolicyTest, SlowOscillationAroundTheTargetStaysBelowOneChangePerDelay) {
  // A swing that outlasts the upscale delay but not the downscale delay: up once, then stays.
  Policy p(base(), clock);
  p.evaluate(load(20, 5));
  int changes = 0;
  for (int i = 0; i < 3600; ++i) {
    clock.advance(1s);
    const bool high = (i / 30) % 2 == 0;
    Decision d = p.evaluate(load(high ? 28 : 20, p.desired()));
    changes += d.changed() ? 1 : 0;
  }
  EXPECT_EQ(changes, 1);
  EXPECT_EQ(p.desired(), 7);
}

TEST_F(PolicyTest, QueueWaitAddsAReplicaWhenTheCountLooksSufficient) {
  Policy p(base(), clock);
  Signals s = load(6, 2); // 6 + 2 waiting = 8 ongoing: 2 replicas look enough
  s.waiting_requests = 2;
  s.oldest_wait_s = 4;
  p.evaluate(s);
  Decision d = run_for(p, 30s, s);
  EXPECT_EQ(d.desired, 2);
  s.oldest_wait_s = 6; // over target_queue_wait_s
  d = p.evaluate(s);
  EXPECT_EQ(d.trigger, Trigger::kQueueWait);
  EXPECT_EQ(d.recommended, 3);
  d = run_for(p, 10s, s);
  EXPECT_EQ(d.desired, 3);
  // The third replica is starting: the wait is expected to end, so no fourth is asked for.
  s.replicas.starting = 1;
  d = run_for(p, 30s, s);
  EXPECT_EQ(d.desired, 3);
  EXPECT_EQ(d.trigger, Trigger::kOngoingRequests);
}

TEST_F(PolicyTest, QueueWaitOffWhenZero) {
  PolicyConfig c = base();
  c.target_queue_wait = 0s;
  Policy p(c, clock);
  Signals s = load(6, 2);
  s.waiting_requests = 2;
  s.oldest_wait_s = 600;
  p.evaluate(s);
  EXPECT_EQ(run_for(p, 30s, s).desired, 2);
}

TEST_F(PolicyTest, FullKvCacheWithWaitingRequestsAddsAReplica) {
  Policy p(base(), clock);
  Signals s = load(5, 2);
  s.waiting_requests = 1;
  s.kv_usage = 0.5;
  p.evaluate(s);
  EXPECT_EQ(run_for(p, 30s, s).desired, 2);
  s.kv_usage = 0.95;
  Decision d = run_for(p, 11s, s);
  EXPECT_EQ(d.trigger, Trigger::kKvCache);
  EXPECT_EQ(d.desired, 3);
}

TEST_F(PolicyTest, DetailNamesTheNumbers) {
  Policy p(base(), clock);
  Signals s = load(7, 2);
  s.waiting_requests = 3;
  Decision d = p.evaluate(s);
  EXPECT_NE(d.detail.find("ongoing 10"), std::string::npos) << d.detail;
  EXPECT_NE(d.detail.find("asks for 3"), std::string::npos) << d.detail;
}

TEST(PolicyConfigTest, ValidateNamesTheKey) {
  auto key_of = [](const PolicyConfig &c) {
    Status st = validate(c);
    return st.ok() ? std::string("ok") : st.error().param;
  };
  PolicyConfig c;
  EXPECT_EQ(key_of(c), "ok");
  c.min_replicas = 3;
  c.max_replicas = 2;
  EXPECT_EQ(key_of(c), "min_replicas");
  EXPECT_NE(validate(c).error().message.find("above max_replicas"), std::string::npos);
  c = PolicyConfig{};
  c.min_replicas = -1;
  EXPECT_EQ(key_of(c), "min_replicas");
  c = PolicyConfig{};
  c.max_replicas = 0;
  EXPECT_EQ(key_of(c), "max_replicas");
  c = PolicyConfig{};
  c.target_ongoing_requests = 0;
  EXPECT_EQ(key_of(c), "target_ongoing_requests");
  c.target_ongoing_requests = std::numeric_limits<double>::infinity();
  EXPECT_EQ(key_of(c), "target_ongoing_requests");
  c.target_ongoing_requests = std::nan("");
  EXPECT_EQ(key_of(c), "target_ongoing_requests");
  c = PolicyConfig{};
  c.upscale_delay = -1ms;
  EXPECT_EQ(key_of(c), "upscale_delay_s");
  c = PolicyConfig{};
  c.downscale_delay = -1ms;
  EXPECT_EQ(key_of(c), "downscale_delay_s");
  c = PolicyConfig{};
  c.downscale_to_zero_delay = -1ms;
  EXPECT_EQ(key_of(c), "downscale_to_zero_delay_s");
  c = PolicyConfig{};
  c.target_queue_wait = -1ms;
  EXPECT_EQ(key_of(c), "target_queue_wait_s");
  c = PolicyConfig{};
  c.max_scale_step = 0;
  EXPECT_EQ(key_of(c), "max_scale_step");
}

} // namespace
} // namespace gantry::autoscale
