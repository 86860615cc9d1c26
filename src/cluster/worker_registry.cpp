#include "cluster/worker_registry.h"

namespace gantry::cluster {

Status check_worker(const WorkerInfo &w, const WorkerLimits &limits) {
  auto bad = [](const char *field, const std::string &why) {
    return Error{ErrorCode::kInvalidArgument, std::string("worker ") + field + ": " + why, field};
  };
  if (w.node_id.empty() || w.node_id.size() > limits.max_field_bytes)
    return bad("node_id", "must be 1.." + std::to_string(limits.max_field_bytes) + " bytes");
  if (w.url.size() > limits.max_field_bytes ||
      !(w.url.starts_with("http://") || w.url.starts_with("https://")))
    return bad("url", "must be an http(s) URL of at most " +
                          std::to_string(limits.max_field_bytes) + " bytes");
  if (w.models.empty())
    return bad("models", "a worker serves at least one model");
  if (static_cast<int>(w.models.size()) > limits.max_models_per_worker)
    return bad("models", "at most " + std::to_string(limits.max_models_per_worker) + " per worker");
  for (const auto &m : w.models)
    if (m.empty() || m.size() > limits.max_field_bytes)
      return bad("models",
                 "each name must be 1.." + std::to_string(limits.max_field_bytes) + " bytes");
  return Ok();
}

} // namespace gantry::cluster
