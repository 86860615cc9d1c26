// The in-process WorkerRegistry: a map of node → (info, expiry) on an injected Clock, for tests of
// the roles' logic (the gateway's routing updates, the worker's heartbeat) without Redis. Same
// bounds and TTL semantics as the Redis adapter.
//
// Threading: thread-safe (one mutex).
#pragma once

#include <map>
#include <mutex>

#include "cluster/worker_registry.h"
#include "core/clock.h"

namespace gantry::cluster {

class MemoryWorkerRegistry final : public WorkerRegistry {
public:
  MemoryWorkerRegistry(const Clock &clock, WorkerLimits limits = {})
      : clock_(clock), limits_(limits) {}

  Status announce(const WorkerInfo &w, std::chrono::milliseconds ttl) override;
  Status withdraw(std::string_view node_id) override;
  Result<std::vector<WorkerInfo>> live() override;

private:
  void prune(std::chrono::steady_clock::time_point now); // under mu_

  const Clock &clock_;
  const WorkerLimits limits_;
  std::mutex mu_;
  std::map<std::string, std::pair<WorkerInfo, std::chrono::steady_clock::time_point>, std::less<>>
      workers_; // bounded by limits_.max_workers
};

} // namespace gantry::cluster
