// The knobs of one model's scaling policy (docs/AUTOSCALING.md), parsed once from the
// `[autoscale.<model>]` table and validated before the policy sees them.
#pragma once

#include <chrono>
#include <string>

#include "core/result.h"

namespace gantry::autoscale {

struct PolicyConfig {
  int min_replicas = 0; // 0 = scale to zero when idle
  int max_replicas = 8;
  // Running + waiting requests (and queued jobs) one replica should carry. Below the replica's
  // concurrency (max_seqs), so a rise in load finds headroom while the next replica starts.
  double target_ongoing_requests = 4;
  // When the oldest waiting job or request has waited longer than this and every replica asked
  // for is ready, one more is asked for even if the request count looks fine (long requests,
  // KV-bound replicas). 0 = off.
  std::chrono::milliseconds target_queue_wait{5'000};
  // How long a recommendation must hold before it is applied (hysteresis): up is short, because
  // waiting costs users; down is long, because a replica given back costs a cold start.
  std::chrono::milliseconds upscale_delay{5'000};
  std::chrono::milliseconds downscale_delay{300'000};
  // The last replica goes only after this long without any demand at all.
  std::chrono::milliseconds downscale_to_zero_delay{900'000};
  int max_scale_step = 4; // replicas added or removed by one decision
};

// The first violated rule, as an error whose `param` is the key at fault ("min_replicas") and
// whose message says why; the config reader prefixes the table's name.
Status validate(const PolicyConfig &c);

} // namespace gantry::autoscale
