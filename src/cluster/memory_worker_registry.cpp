#include "cluster/memory_worker_registry.h"

namespace gantry::cluster {

void MemoryWorkerRegistry::prune(std::chrono::steady_clock::time_point now) {
  for (auto it = workers_.begin(); it != workers_.end();)
    it = it->second.second <= now ? workers_.erase(it) : std::next(it);
}

Status MemoryWorkerRegistry::announce(const WorkerInfo &w, std::chrono::milliseconds ttl) {
  GANTRY_TRY(check_worker(w, limits_));
  std::lock_guard<std::mutex> lk(mu_);
  const auto now = clock_.now();
  prune(now);
  if (!workers_.contains(w.node_id) && static_cast<int>(workers_.size()) >= limits_.max_workers)
    return Err(Error{ErrorCode::kQueueFull,
                     "the worker registry holds " + std::to_string(limits_.max_workers) +
                         " live workers already",
                     {}});
  workers_[w.node_id] = {w, now + ttl};
  return Ok();
}

Status MemoryWorkerRegistry::withdraw(std::string_view node_id) {
  std::lock_guard<std::mutex> lk(mu_);
  if (auto it = workers_.find(node_id); it != workers_.end())
    workers_.erase(it);
  return Ok();
}

Result<std::vector<WorkerInfo>> MemoryWorkerRegistry::live() {
  std::lock_guard<std::mutex> lk(mu_);
  prune(clock_.now());
  std::vector<WorkerInfo> out;
  for (const auto &[id, entry] : workers_)
    out.push_back(entry.first);
  return out;
}

} // namespace gantry::cluster
