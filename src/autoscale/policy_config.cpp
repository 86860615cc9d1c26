#include "autoscale/policy_config.h"

#include <cmath>

namespace gantry::autoscale {

Status validate(const PolicyConfig &c) {
  auto bad = [](const char *key, const std::string &why) { return Error::invalid(why, key); };
  if (c.min_replicas < 0)
    return bad("min_replicas", "must not be negative");
  if (c.max_replicas < 1)
    return bad("max_replicas", "must be at least 1");
  if (c.min_replicas > c.max_replicas)
    return bad("min_replicas", "is " + std::to_string(c.min_replicas) + ", above max_replicas (" +
                                   std::to_string(c.max_replicas) + ")");
  if (!(c.target_ongoing_requests > 0) || !std::isfinite(c.target_ongoing_requests))
    return bad("target_ongoing_requests", "must be a positive number");
  if (c.target_queue_wait.count() < 0)
    return bad("target_queue_wait_s", "must not be negative");
  if (c.upscale_delay.count() < 0)
    return bad("upscale_delay_s", "must not be negative");
  if (c.downscale_delay.count() < 0)
    return bad("downscale_delay_s", "must not be negative");
  if (c.downscale_to_zero_delay.count() < 0)
    return bad("downscale_to_zero_delay_s", "must not be negative");
  if (c.max_scale_step < 1)
    return bad("max_scale_step", "must be at least 1");
  return Ok();
}

} // namespace gantry::autoscale
