// The shared IdempotencyStore: an Idempotency-Key claimed through one node is in flight, replayed
// or refused on every node, and survives a node's restart. Bounded like the embedded adapter
// (bytes, entries, least recently used first) inside its Redis namespace; one script call per
// begin/complete/abandon.
//
// A key claimed by a node that dies mid-request is held in flight for at most `in_flight_ttl`
// (15 min by default, capped by ttl), after which a retry runs — the embedded adapter forgets it
// with the process. When Redis cannot be reached, begin() answers kFirst (the request runs
// without idempotency protection rather than failing) and counts it.
//
// Threading: thread-safe.
#pragma once

#include <atomic>
#include <memory>

#include "control/idempotency.h"
#include "core/clock.h"
#include "store/redis/redis_client.h"

namespace gantry::store {

class RedisIdempotencyStore final : public control::IdempotencyStore {
public:
  RedisIdempotencyStore(std::shared_ptr<RedisClient> redis, const Clock &clock,
                        control::IdempotencyLimits limits = {},
                        std::chrono::seconds in_flight_ttl = std::chrono::minutes(15));

  Begin begin(const std::string &key, const std::string &body_digest) override;
  void complete(const std::string &key, const control::StoredResponse &response) override;
  void abandon(const std::string &key) override;
  control::IdempotencyStats stats() override;
  size_t max_entry_bytes() const override { return limits_.max_entry_bytes; }

  uint64_t unprotected() const { return unprotected_.load(); } // begin()s while Redis was down

private:
  std::shared_ptr<RedisClient> redis_;
  const Clock &clock_;
  const control::IdempotencyLimits limits_;
  const std::chrono::seconds in_flight_ttl_;
  std::string ns_;
  std::atomic<uint64_t> stored_{0}, too_large_{0}, evictions_{0}, unprotected_{0};
};

} // namespace gantry::store
