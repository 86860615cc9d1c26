// The simulation's model and the policy's goal on a shortened day (deterministic: no timing).
#include "autoscale_sim/simulation.h"

#include <gtest/gtest.h>

namespace gantry::autoscale::sim {
namespace {

TEST(AutoscaleSimTest, TrafficFollowsTheDay) {
  Traffic t;
  EXPECT_EQ(rate_at(t, 3 * 3600), 0) << "idle night";
  EXPECT_NEAR(rate_at(t, 15 * 3600), t.peak_rps, 1e-9) << "peak mid-afternoon";
  Traffic flat = t;
  flat.spike_factor = 1;
  const double mid = 11 * 3600 + 600, ramp = 11 * 3600 + 60;
  EXPECT_NEAR(rate_at(t, mid), 10 * rate_at(flat, mid), 1e-9) << "10x spike";
  EXPECT_NEAR(rate_at(t, ramp), 5.5 * rate_at(flat, ramp), 1e-9) << "half-way up the ramp";
  EXPECT_EQ(rate_at(t, 11 * 3600 + 1201), rate_at(flat, 11 * 3600 + 1201)) << "over after 20 min";
  Traffic shortened = t;
  shortened.day_hours = 6;
  EXPECT_NEAR(rate_at(shortened, 15 * 900), t.peak_rps, 1e-9) << "the profile scales";
}

TEST(AutoscaleSimTest, FixedReplicasCostTheirCountTimesTheDay) {
  Options o;
  o.traffic.day_hours = 2;
  o.traffic.peak_rps = 0;
  const Result r = run_fixed(3, o);
  EXPECT_EQ(r.requests, 0);
  EXPECT_DOUBLE_EQ(r.replica_hours, 6);
}

TEST(AutoscaleSimTest, OneReplicaCannotCarryTheSpike) {
  Options o;
  o.traffic.day_hours = 6;
  const Result one = run_fixed(1, o), eight = run_fixed(8, o);
  EXPECT_EQ(one.requests, eight.requests) << "both serve the same requests";
  EXPECT_GT(one.late_share, 0.05);
  EXPECT_LT(eight.late_share, 0.001);
  EXPECT_GT(one.p99_wait_s, 60);
}

TEST(AutoscaleSimTest, Deterministic) {
  Options o;
  o.traffic.day_hours = 3;
  const Result a = run_policy(PolicyConfig{}, o), b = run_policy(PolicyConfig{}, o);
  EXPECT_EQ(a.requests, b.requests);
  EXPECT_EQ(a.late, b.late);
  EXPECT_DOUBLE_EQ(a.replica_hours, b.replica_hours);
  EXPECT_EQ(a.scale_changes, b.scale_changes);
}

// The goal on a 6-hour day (the full day is in docs/BENCHMARKS.md): the default policy
// stays within 10% of fixed max_replicas' p99 latency at under half its replica-hours, and keeps
// far more requests on time than one fixed replica.
TEST(AutoscaleSimTest, DefaultPolicyBeatsTheBaselinesOnAShortenedDay) {
  Options o;
  o.traffic.day_hours = 6;
  PolicyConfig p; // the defaults, max_replicas 8
  const Result fixed_max = run_fixed(p.max_replicas, o), fixed_one = run_fixed(1, o);
  const Result policy = run_policy(p, o);
  EXPECT_TRUE(meets_goal(policy, fixed_max))
      << "policy " << policy.replica_hours << " replica-h, p99 latency " << policy.p99_latency_s
      << " s; fixed max " << fixed_max.replica_hours << " replica-h, p99 latency "
      << fixed_max.p99_latency_s << " s";
  EXPECT_LT(policy.late_share * 10, fixed_one.late_share)
      << "policy late " << policy.late_share << ", fixed 1 late " << fixed_one.late_share;
  EXPECT_GT(policy.scale_changes, 2) << "it scaled at all";
  EXPECT_LT(policy.scale_changes, 60) << "it did not thrash";
}

} // namespace
} // namespace gantry::autoscale::sim
