#include "cluster/worker_registry.h"

#include <algorithm>

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
  if (w.models.empty() && w.available.empty())
    return bad("models", "a worker serves at least one model");
  if (static_cast<int>(w.models.size() + w.available.size()) > limits.max_models_per_worker)
    return bad("models", "at most " + std::to_string(limits.max_models_per_worker) +
                             " per worker (loaded and available together)");
  for (const auto *names : {&w.models, &w.available})
    for (const auto &m : *names)
      if (m.empty() || m.size() > limits.max_field_bytes)
        return bad(names == &w.models ? "models" : "available",
                   "each name must be 1.." + std::to_string(limits.max_field_bytes) + " bytes");
  for (const auto &m : w.available)
    if (std::find(w.models.begin(), w.models.end(), m) != w.models.end())
      return bad("available", "'" + m + "' is listed as loaded too");
  for (const auto &[m, p] : w.prices) {
    if (std::find(w.models.begin(), w.models.end(), m) == w.models.end() &&
        std::find(w.available.begin(), w.available.end(), m) == w.available.end())
      return bad("prices",
                 "'" + m.substr(0, limits.max_field_bytes) + "' is not one of its models");
    for (const double v : {p.input_per_mtok, p.output_per_mtok, p.usd_per_hour})
      if (!(v >= 0 && v <= kMaxPrice)) // also false for NaN
        return bad("prices", "each price must be 0.." + std::to_string(kMaxPrice));
  }
  return Ok();
}

} // namespace gantry::cluster
