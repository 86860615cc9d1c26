#include "store/redis/redis_cache.h"

#include "store/redis/redis_lru.h"

namespace gantry::store {
namespace {

// ARGV: ns, now, key. {1, value} on a hit, {0, expired(0|1)} otherwise.
constexpr const char *kGet = R"lua(
local ns, now, k = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local v = redis.call('HMGET', ns .. 'e:' .. k, 'x', 'v')
if not v[1] then
  if redis.call('HEXISTS', ns .. 'sz', k) == 1 then lru_drop(ns, k) end
  return {0, 0}
end
if tonumber(v[1]) <= now then
  lru_drop(ns, k)
  return {0, 1}
end
lru_touch(ns, k)
return {1, v[2]}
)lua";

// ARGV: ns, now, key, value, ttl ms, max bytes, charge. {1, evicted} or {0} (larger than all).
constexpr const char *kPut = R"lua(
local ns, now, k, v = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
local ttl, max_bytes, charge = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
lru_drop(ns, k)
if max_bytes > 0 and charge > max_bytes then return {0} end
local e = ns .. 'e:' .. k
redis.call('HSET', e, 'x', now + ttl, 'v', v)
redis.call('PEXPIRE', e, ttl + 60000)
lru_charge(ns, k, charge)
lru_touch(ns, k)
return {1, lru_make_room(ns, max_bytes, 0)}
)lua";

// ARGV: ns, key. 1 when an entry was removed.
constexpr const char *kErase = R"lua(
local ns, k = ARGV[1], ARGV[2]
local existed = redis.call('EXISTS', ns .. 'e:' .. k)
lru_drop(ns, k)
return existed
)lua";

const RedisScript &get_script() {
  static const RedisScript s(std::string(kLruLua) + kGet);
  return s;
}
const RedisScript &put_script() {
  static const RedisScript s(std::string(kLruLua) + kPut);
  return s;
}
const RedisScript &erase_script() {
  static const RedisScript s(std::string(kLruLua) + kErase);
  return s;
}

} // namespace

RedisCache::RedisCache(std::shared_ptr<RedisClient> redis, std::string name, uint64_t max_bytes,
                       const Clock &clock)
    : redis_(std::move(redis)), ns_(redis_->prefix() + "cache:" + name + ":"),
      max_bytes_(max_bytes), clock_(clock) {}

Result<std::optional<std::string>> RedisCache::get(std::string_view key) {
  auto r =
      redis_->eval(get_script(), {}, {ns_, std::to_string(clock_.unix_millis()), std::string(key)});
  if (!r) {
    ++misses_;
    return Err(r.take_error());
  }
  if (r->elements.size() == 2 && r->elements[0].as_int() == 1) {
    ++hits_;
    return std::optional<std::string>(std::move(r->elements[1].str));
  }
  ++misses_;
  if (r->elements.size() == 2 && r->elements[1].as_int() == 1)
    ++expirations_;
  return std::optional<std::string>();
}

Status RedisCache::put(std::string_view key, std::string value, std::chrono::seconds ttl) {
  if (ttl.count() <= 0) {
    ++rejected_;
    return Ok();
  }
  const uint64_t charge = key.size() + value.size() + kEntryOverhead;
  GANTRY_ASSIGN_OR_RETURN(auto r,
                          redis_->eval(put_script(), {},
                                       {ns_, std::to_string(clock_.unix_millis()), std::string(key),
                                        std::move(value), std::to_string(ttl.count() * 1000),
                                        std::to_string(max_bytes_), std::to_string(charge)}));
  if (!r.elements.empty() && r.elements[0].as_int() == 1) {
    ++puts_;
    if (r.elements.size() > 1)
      evictions_ += static_cast<uint64_t>(r.elements[1].as_int());
  } else {
    ++rejected_;
  }
  return Ok();
}

Result<bool> RedisCache::erase(std::string_view key) {
  GANTRY_ASSIGN_OR_RETURN(auto r, redis_->eval(erase_script(), {}, {ns_, std::string(key)}));
  return r.as_int() == 1;
}

cache::CacheStats RedisCache::stats() const {
  cache::CacheStats s;
  s.hits = hits_.load();
  s.misses = misses_.load();
  s.puts = puts_.load();
  s.rejected = rejected_.load();
  s.evictions = evictions_.load();
  s.expirations = expirations_.load();
  s.max_bytes = max_bytes_;
  const LruUsage u = lru_usage(*redis_, ns_);
  s.entries = u.entries;
  s.bytes = u.bytes;
  return s;
}

} // namespace gantry::store
