// The WorkerRegistry over Redis (issue 13, roles): each worker is a string key
// "<prefix>worker:<node>" holding its WorkerInfo as JSON, with a PX expiry that every heartbeat
// sets again — Redis's own clock expires it, so the nodes' clocks never have to agree — and a
// set "<prefix>workers" of node ids so the live ones can be listed without SCAN. Each call is one
// Lua script (one round trip): announce prunes expired ids before checking the bound, live()
// prunes the ids whose key expired and returns the others.
//
// What comes back from Redis is checked like an announcement (check_worker): a malformed or
// hostile entry is skipped and counted, never routed to.
//
// Threading: thread-safe (the client's pool).
#pragma once

#include <atomic>
#include <memory>

#include "cluster/worker_registry.h"
#include "store/redis/redis_client.h"

namespace gantry::store {

class RedisWorkerRegistry final : public cluster::WorkerRegistry {
public:
  explicit RedisWorkerRegistry(std::shared_ptr<RedisClient> redis,
                               cluster::WorkerLimits limits = {});

  Status announce(const cluster::WorkerInfo &w, std::chrono::milliseconds ttl) override;
  Status withdraw(std::string_view node_id) override;
  Result<std::vector<cluster::WorkerInfo>> live() override;

  uint64_t malformed() const { return malformed_.load(); } // entries skipped by live()

private:
  std::shared_ptr<RedisClient> redis_;
  const cluster::WorkerLimits limits_;
  const std::string ns_;
  std::atomic<uint64_t> malformed_{0};
};

} // namespace gantry::store
