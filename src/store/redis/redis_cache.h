// The shared cache::Cache: the response and embedding caches of every node in one Redis, so a
// response stored through one node is a hit through another. Bounded like MemoryCache (bytes,
// LRU) inside its namespace; one script call per get/put/erase. An error (Redis unreachable) is a
// miss for the caller, never a failed request.
//
// Threading: thread-safe.
#pragma once

#include <atomic>
#include <memory>

#include "cache/cache.h"
#include "core/clock.h"
#include "store/redis/redis_client.h"

namespace gantry::store {

class RedisCache final : public cache::Cache {
public:
  // `name` separates caches in one Redis ("resp", "emb").
  RedisCache(std::shared_ptr<RedisClient> redis, std::string name, uint64_t max_bytes,
             const Clock &clock);

  Result<std::optional<std::string>> get(std::string_view key) override;
  Status put(std::string_view key, std::string value, std::chrono::seconds ttl) override;
  Result<bool> erase(std::string_view key) override;
  // Hits, misses, puts and evictions are this node's; entries and bytes the shared namespace's.
  cache::CacheStats stats() const override;

  static constexpr uint64_t kEntryOverhead = 128; // as MemoryCache's

private:
  std::shared_ptr<RedisClient> redis_;
  std::string ns_;
  uint64_t max_bytes_;
  const Clock &clock_;
  mutable std::atomic<uint64_t> hits_{0}, misses_{0}, puts_{0}, rejected_{0}, evictions_{0},
      expirations_{0};
};

} // namespace gantry::store
