// A day of synthetic traffic served by replicas that an autoscale::Policy starts and stops, on a
// FakeClock (issue 14's simulation). Deterministic: the same options give the same numbers.
//
// The model, stated so its numbers can be judged:
// - Arrivals are a Poisson process whose rate follows the day: nothing from midnight to
//   `night_end_h`, then half a sine wave up to `peak_rps` and back to zero at midnight, times
//   `spike_factor` during the spike (reached and left over `spike_ramp_s`; 0 = a step).
// - A replica serves `slots` requests at once (continuous batching's sequences), each for an
//   exponentially distributed time of mean `mean_service_s`, independent of how full it is; one
//   FIFO queue feeds every ready replica (the gateway's queue). Service times are drawn per
//   request, so every run of the same options serves the same requests.
// - A started replica is ready after `cold_start_s` (process start + model load). A replica the
//   policy gives back stops taking work, finishes what it runs (draining), then exits; a draining
//   replica asked for again returns at once. Cost is the time replicas exist in any state.
// - The policy is evaluated once a second with the queue's length, the running requests and the
//   oldest wait; KV usage and tokens/s are not modelled (0).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "autoscale/policy_config.h"

namespace gantry::autoscale::sim {

struct Traffic {
  double day_hours = 24; // the whole profile scales to this length (a shortened day for tests)
  double night_end_h = 6;
  double peak_rps = 1.0; // the diurnal peak, at the middle of the active part of the day
  double spike_start_h = 11;
  double spike_minutes = 20;
  double spike_factor = 10;
  double spike_ramp_s = 120;
};

struct ReplicaModel {
  int slots = 8;
  double mean_service_s = 4;
  double cold_start_s = 30;
};

struct Options {
  Traffic traffic;
  ReplicaModel replica;
  double wait_target_s = 5; // a request waiting longer counts as late
  uint64_t seed = 1;
};

struct Result {
  std::string name;
  double replica_hours = 0;
  int64_t requests = 0;
  int64_t late = 0; // waited longer than wait_target_s
  double late_share = 0;
  double p50_wait_s = 0, p99_wait_s = 0, max_wait_s = 0;
  double p99_latency_s = 0; // wait + service
  int peak_replicas = 0;
  int64_t scale_changes = 0; // times the desired count moved (0 for fixed baselines)
};

// The requests' arrival rate at `t_s` seconds into the day.
double rate_at(const Traffic &t, double t_s);

Result run_fixed(int replicas, const Options &o);
Result run_policy(const PolicyConfig &policy, const Options &o);

} // namespace gantry::autoscale::sim

namespace gantry::autoscale::sim {

// The goal, "within 10% of fixed-max's latency at under half its replica-hours", with
// latency read as the p99 of wait + service (fixed-max's own waits are near zero, so a ratio of
// waits would compare against nothing).
bool meets_goal(const Result &policy, const Result &fixed_max);

} // namespace gantry::autoscale::sim
