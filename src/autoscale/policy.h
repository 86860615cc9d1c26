// One model's scaling policy (issue 14, docs/AUTOSCALING.md): from the live signals (requests
// running and waiting, queued jobs and the oldest one's wait, KV usage, replicas by state) to a
// desired replica count with the reason. Pure logic over an injected Clock: no I/O, no threads;
// whoever evaluates it (the server's AutoscaleMonitor, the simulation in bench/autoscale_sim)
// carries the decision out or only exports it.
//
// Hysteresis: a recommendation is applied only after it held for the delay of its direction,
// and then only the part that held the whole time (the smallest recommendation seen while
// waiting to go up, the largest while waiting to go down), at most max_scale_step replicas at a
// time. A load that swings back and forth inside the delay restarts the wait and never moves the
// count. The one exception: a model at zero with any demand gets replicas at once (a request is
// waiting for it).
//
// Threading: owned by one thread (the evaluator); not thread-safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "autoscale/policy_config.h"
#include "core/clock.h"

namespace gantry::autoscale {

struct ReplicaCounts {
  int starting = 0; // asked for, not ready yet (loading the model)
  int ready = 0;    // serving
  int draining = 0; // finishing their work before they exit; no longer counted as capacity
};

// What the policy reads, sampled by the caller at one instant.
struct Signals {
  int64_t running_requests = 0;        // sequences generating
  int64_t waiting_requests = 0;        // accepted, not generating yet
  int64_t queued_jobs = 0;             // async jobs not leased yet
  double oldest_wait_s = 0;            // the oldest waiting job or request (0 when none)
  double kv_usage = 0;                 // KV blocks in use over the total, 0..1, over ready replicas
  double tokens_per_s_per_replica = 0; // generation throughput (logged; not a trigger)
  ReplicaCounts replicas;
};

// What the decision did.
enum class Reason {
  kSteady,             // the recommendation equals the desired count
  kAtMax,              // demand asks for more than max_replicas
  kAtMin,              // demand asks for fewer than min_replicas
  kScaleFromZero,      // demand while at zero: replicas at once, no delay
  kScaleUp,            // up, after upscale_delay
  kScaleUpPending,     // up is recommended; upscale_delay not over yet
  kScaleDown,          // down, after downscale_delay
  kScaleDownPending,   // down is recommended; downscale_delay not over yet
  kScaleToZero,        // the last replica goes after downscale_to_zero_delay of idleness
  kScaleToZeroPending, // idle, waiting for downscale_to_zero_delay
};

// Which signal drove the recommendation.
enum class Trigger {
  kOngoingRequests, // running + waiting + queued jobs over target_ongoing_requests
  kQueueWait,       // the oldest wait over target_queue_wait_s with every replica ready
  kKvCache,         // requests waiting while the KV cache is full
  kIdle,            // no demand at all
};

std::string_view to_string(Reason r);
std::string_view to_string(Trigger t);

struct Decision {
  int desired = 0;     // the replica count to run now
  int previous = 0;    // the desired count before this evaluation
  int recommended = 0; // what the signals ask for right now, within [min, max]
  Reason reason = Reason::kSteady;
  Trigger trigger = Trigger::kIdle;
  std::string detail; // the numbers behind it, for people
  bool changed() const { return desired != previous; }
};

// KV usage at which waiting requests count as stuck on memory rather than on slots.
inline constexpr double kKvPressure = 0.9;

class Policy {
public:
  // `config` must have passed validate().
  Policy(PolicyConfig config, const Clock &clock);

  Decision evaluate(const Signals &s);

  int desired() const { return desired_; }
  const PolicyConfig &config() const { return config_; }

private:
  using TimePoint = std::chrono::steady_clock::time_point;

  // The replica count the signals ask for (before bounds), and why.
  std::pair<int, Trigger> recommend(const Signals &s) const;
  bool held(const std::optional<TimePoint> &since, std::chrono::milliseconds delay) const;

  const PolicyConfig config_;
  const Clock &clock_;
  bool initialized_ = false;
  int desired_ = 0;
  // Since when the recommendation has been above (below) desired_, and the smallest (largest)
  // recommendation seen since: the part of the change that held the whole delay.
  std::optional<TimePoint> up_since_, down_since_;
  int up_floor_ = 0, down_peak_ = 0;
  std::optional<TimePoint> idle_since_; // no demand at all since then
};

} // namespace gantry::autoscale
