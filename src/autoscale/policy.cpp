#include "autoscale/policy.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace gantry::autoscale {

std::string_view to_string(Reason r) {
  switch (r) {
  case Reason::kSteady: return "steady";
  case Reason::kAtMax: return "at_max";
  case Reason::kAtMin: return "at_min";
  case Reason::kScaleFromZero: return "scale_from_zero";
  case Reason::kScaleUp: return "scale_up";
  case Reason::kScaleUpPending: return "scale_up_pending";
  case Reason::kScaleDown: return "scale_down";
  case Reason::kScaleDownPending: return "scale_down_pending";
  case Reason::kScaleToZero: return "scale_to_zero";
  case Reason::kScaleToZeroPending: return "scale_to_zero_pending";
  }
  return "unknown";
}

std::string_view to_string(Trigger t) {
  switch (t) {
  case Trigger::kOngoingRequests: return "ongoing_requests";
  case Trigger::kQueueWait: return "queue_wait";
  case Trigger::kKvCache: return "kv_cache";
  case Trigger::kIdle: return "idle";
  }
  return "unknown";
}

namespace {

int64_t demand_of(const Signals &s) {
  return s.running_requests + s.waiting_requests + s.queued_jobs;
}

double seconds(std::chrono::milliseconds d) { return static_cast<double>(d.count()) / 1000.0; }

} // namespace

Policy::Policy(PolicyConfig config, const Clock &clock) : config_(config), clock_(clock) {}

std::pair<int, Trigger> Policy::recommend(const Signals &s) const {
  const int64_t demand = demand_of(s);
  if (demand <= 0)
    return {0, Trigger::kIdle};
  const double per_replica = config_.target_ongoing_requests;
  // Capped so that an absurd backlog cannot overflow; the bounds clamp it anyway.
  const double raw = std::ceil(static_cast<double>(demand) / per_replica);
  int want = static_cast<int>(std::min(raw, 1e6));
  Trigger trigger = Trigger::kOngoingRequests;
  // The count looks sufficient, yet work waits: every replica asked for is ready (one still
  // starting will take the queue soon, so it must not be asked for twice), so the replicas are
  // slower than the count assumes (long generations, KV memory). One more.
  const bool all_arrived = s.replicas.starting == 0 && s.replicas.ready >= desired_;
  const bool queued = s.waiting_requests + s.queued_jobs > 0;
  if (all_arrived && queued && want <= desired_) {
    if (config_.target_queue_wait.count() > 0 &&
        s.oldest_wait_s > seconds(config_.target_queue_wait)) {
      want = desired_ + 1;
      trigger = Trigger::kQueueWait;
    } else if (s.kv_usage >= kKvPressure && s.waiting_requests > 0) {
      want = desired_ + 1;
      trigger = Trigger::kKvCache;
    }
  }
  return {want, trigger};
}

bool Policy::held(const std::optional<TimePoint> &since, std::chrono::milliseconds delay) const {
  return since && clock_.now() - *since >= delay;
}

Decision Policy::evaluate(const Signals &s) {
  const TimePoint now = clock_.now();
  if (!initialized_) {
    desired_ = std::clamp(s.replicas.starting + s.replicas.ready, config_.min_replicas,
                          config_.max_replicas);
    initialized_ = true;
  }
  Decision d;
  d.previous = desired_;
  const auto [want, trigger] = recommend(s);
  const int bounded = std::clamp(want, config_.min_replicas, config_.max_replicas);
  d.recommended = bounded;
  d.trigger = trigger;
  const int64_t demand = demand_of(s);
  if (demand > 0)
    idle_since_.reset();
  else if (!idle_since_)
    idle_since_ = now;
  const int step = config_.max_scale_step;

  if (desired_ == 0 && demand > 0) {
    // Someone is waiting for a replica that does not exist: no delay can help them.
    desired_ = std::min(std::max(bounded, 1), step);
    d.reason = Reason::kScaleFromZero;
    up_since_.reset();
    down_since_.reset();
  } else if (bounded > desired_) {
    down_since_.reset();
    if (!up_since_) {
      up_since_ = now;
      up_floor_ = bounded;
    } else {
      up_floor_ = std::min(up_floor_, bounded);
    }
    if (held(up_since_, config_.upscale_delay)) {
      desired_ = std::min(up_floor_, desired_ + step);
      d.reason = Reason::kScaleUp;
      up_since_.reset();
    } else {
      d.reason = Reason::kScaleUpPending;
    }
  } else if (bounded < desired_) {
    up_since_.reset();
    if (!down_since_) {
      down_since_ = now;
      down_peak_ = bounded;
    } else {
      down_peak_ = std::max(down_peak_, bounded);
    }
    const int lower = std::max(down_peak_, desired_ - step);
    if (lower == 0) {
      // Only a model idle for downscale_to_zero_delay loses its last replica; until then the
      // ordinary downscale may take it down to one.
      if (held(idle_since_, config_.downscale_to_zero_delay)) {
        desired_ = 0;
        d.reason = Reason::kScaleToZero;
        down_since_.reset();
      } else if (desired_ > 1 && held(down_since_, config_.downscale_delay)) {
        desired_ = 1;
        d.reason = Reason::kScaleDown;
        down_since_.reset();
      } else {
        d.reason = Reason::kScaleToZeroPending;
      }
    } else if (held(down_since_, config_.downscale_delay)) {
      desired_ = lower;
      d.reason = Reason::kScaleDown;
      down_since_.reset();
    } else {
      d.reason = Reason::kScaleDownPending;
    }
  } else {
    up_since_.reset();
    down_since_.reset();
    d.reason = want > config_.max_replicas   ? Reason::kAtMax
               : want < config_.min_replicas ? Reason::kAtMin
                                             : Reason::kSteady;
  }
  d.desired = desired_;

  char buf[320];
  std::snprintf(buf, sizeof buf,
                "ongoing %lld (running %lld, waiting %lld, jobs %lld) at %.3g per replica asks "
                "for %d; oldest wait %.1f s; kv %.2f; replicas starting %d ready %d draining %d",
                static_cast<long long>(demand), static_cast<long long>(s.running_requests),
                static_cast<long long>(s.waiting_requests), static_cast<long long>(s.queued_jobs),
                config_.target_ongoing_requests, want, s.oldest_wait_s, s.kv_usage,
                s.replicas.starting, s.replicas.ready, s.replicas.draining);
  d.detail = buf;
  return d;
}

} // namespace gantry::autoscale
