// The bounded-LRU bookkeeping the shared cache and idempotency adapters run inside their Lua
// scripts, so a namespace in Redis holds what the embedded adapters hold: at most max_bytes
// (keys + values + a fixed per-entry overhead) and max_entries, the least recently used going
// first, entries expiring on the node's Clock (so a FakeClock drives the contract suites).
//
// Layout under a namespace `ns` (e.g. "gantry:cache:resp:"): ns.."e:"..key is the entry's hash,
// ns.."lru" a sorted set of keys by last use (ns.."tick" is the use counter), ns.."sz" the bytes
// charged per key and ns.."bytes" their sum. Each entry also carries a Redis TTL a minute past
// its own expiry, so entries nobody reads again do not outlive their TTL by much; their charge
// stays counted until LRU eviction reaches them, which keeps the bound conservative.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>

#include "store/redis/redis_client.h"

namespace gantry::store {

// Entries and charged bytes of a namespace, for stats(); zeros when Redis cannot be reached.
struct LruUsage {
  uint64_t entries = 0;
  uint64_t bytes = 0;
};
inline LruUsage lru_usage(RedisClient &redis, const std::string &ns) {
  LruUsage u;
  auto r = redis.pipeline({{"ZCARD", ns + "lru"}, {"GET", ns + "bytes"}});
  if (r && r->size() == 2) {
    u.entries = static_cast<uint64_t>(std::max<int64_t>(0, (*r)[0].as_int()));
    u.bytes = static_cast<uint64_t>(std::max<int64_t>(0, (*r)[1].as_int()));
  }
  return u;
}

inline constexpr const char *kLruLua = R"lua(
local function lru_drop(ns, k)
  local sz = redis.call('HGET', ns .. 'sz', k)
  if sz then
    redis.call('HDEL', ns .. 'sz', k)
    redis.call('DECRBY', ns .. 'bytes', sz)
  end
  redis.call('ZREM', ns .. 'lru', k)
  redis.call('DEL', ns .. 'e:' .. k)
end
local function lru_touch(ns, k)
  redis.call('ZADD', ns .. 'lru', redis.call('INCR', ns .. 'tick'), k)
end
local function lru_charge(ns, k, bytes)
  local old = tonumber(redis.call('HGET', ns .. 'sz', k) or '0')
  redis.call('HSET', ns .. 'sz', k, bytes)
  redis.call('INCRBY', ns .. 'bytes', bytes - old)
end
-- Evicts least recently used entries until both bounds hold; returns how many went.
local function lru_make_room(ns, max_bytes, max_entries)
  local evicted = 0
  while true do
    local bytes = tonumber(redis.call('GET', ns .. 'bytes') or '0')
    local n = redis.call('ZCARD', ns .. 'lru')
    if (max_bytes <= 0 or bytes <= max_bytes) and (max_entries <= 0 or n <= max_entries) then
      break
    end
    if n == 0 then
      redis.call('SET', ns .. 'bytes', 0)
      break
    end
    local victim = redis.call('ZPOPMIN', ns .. 'lru')
    lru_drop(ns, victim[1])
    evicted = evicted + 1
  end
  return evicted
end
)lua";

} // namespace gantry::store
