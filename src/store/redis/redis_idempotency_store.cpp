#include "store/redis/redis_idempotency_store.h"

#include <algorithm>
#include <cstdio>

#include "store/redis/redis_lru.h"

namespace gantry::store {
namespace {

using Outcome = control::IdempotencyStore::Outcome;

// ARGV: ns, now, key, digest, in-flight ttl ms, max bytes, max entries, charge.
// {'first', evicted}, {'M'} mismatch, {'F'} in flight, {'N'} not stored, {'D', bytes} replay.
constexpr const char *kBegin = R"lua(
local ns, now, k, d = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
local ttl, max_bytes, max_entries, charge =
  tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local e = ns .. 'e:' .. k
local v = redis.call('HMGET', e, 's', 'd', 'x', 'r')
if v[1] then
  if tonumber(v[3]) > now then
    lru_touch(ns, k)
    if v[2] ~= d then return {'M'} end
    if v[1] == 'D' then return {'D', v[4]} end
    return {v[1]}
  end
  lru_drop(ns, k)
elseif redis.call('HEXISTS', ns .. 'sz', k) == 1 then
  lru_drop(ns, k)
end
redis.call('HSET', e, 's', 'F', 'd', d, 'x', now + ttl)
redis.call('PEXPIRE', e, ttl + 60000)
lru_charge(ns, k, charge)
lru_touch(ns, k)
return {'first', lru_make_room(ns, max_bytes, max_entries)}
)lua";

// ARGV: ns, now, key, state ('D' | 'N'), response bytes, ttl ms, max bytes, max entries, charge
// beyond the digest (key + overhead + response). {1, evicted}, or {0} when the claim is gone.
constexpr const char *kComplete = R"lua(
local ns, now, k, state, bytes = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4], ARGV[5]
local ttl, max_bytes, max_entries, charge =
  tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local e = ns .. 'e:' .. k
local d = redis.call('HGET', e, 'd')
if not d then return {0} end
redis.call('HSET', e, 's', state, 'r', bytes, 'x', now + ttl)
redis.call('PEXPIRE', e, ttl + 60000)
lru_charge(ns, k, charge + #d)
lru_touch(ns, k)
return {1, lru_make_room(ns, max_bytes, max_entries)}
)lua";

constexpr const char *kAbandon = R"lua(
lru_drop(ARGV[1], ARGV[2])
return 1
)lua";

const RedisScript &begin_script() {
  static const RedisScript s(std::string(kLruLua) + kBegin);
  return s;
}
const RedisScript &complete_script() {
  static const RedisScript s(std::string(kLruLua) + kComplete);
  return s;
}
const RedisScript &abandon_script() {
  static const RedisScript s(std::string(kLruLua) + kAbandon);
  return s;
}

} // namespace

RedisIdempotencyStore::RedisIdempotencyStore(std::shared_ptr<RedisClient> redis, const Clock &clock,
                                             control::IdempotencyLimits limits,
                                             std::chrono::seconds in_flight_ttl)
    : redis_(std::move(redis)), clock_(clock), limits_(limits),
      in_flight_ttl_(std::min(in_flight_ttl, limits.ttl)), ns_(redis_->prefix() + "idem:") {}

control::IdempotencyStore::Begin RedisIdempotencyStore::begin(const std::string &key,
                                                              const std::string &body_digest) {
  const size_t charge =
      key.size() + body_digest.size() + control::MemoryIdempotencyStore::kEntryOverhead;
  auto r = redis_->eval(begin_script(), {},
                        {ns_, std::to_string(clock_.unix_millis()), key, body_digest,
                         std::to_string(in_flight_ttl_.count() * 1000),
                         std::to_string(limits_.max_bytes), std::to_string(limits_.max_entries),
                         std::to_string(charge)});
  Begin b;
  if (!r || r->elements.empty()) {
    // Redis is unreachable: run the request unprotected rather than fail it.
    ++unprotected_;
    b.outcome = Outcome::kFirst;
    return b;
  }
  const std::string &tag = r->elements[0].str;
  if (tag == "first") {
    if (r->elements.size() > 1)
      evictions_ += static_cast<uint64_t>(r->elements[1].as_int());
    b.outcome = Outcome::kFirst;
  } else if (tag == "M") {
    b.outcome = Outcome::kMismatch;
  } else if (tag == "F") {
    b.outcome = Outcome::kInFlight;
  } else if (tag == "N") {
    b.outcome = Outcome::kNotStored;
  } else if (tag == "D" && r->elements.size() > 1) {
    auto decoded = control::decode_stored_response(r->elements[1].str);
    if (!decoded) {
      // Bytes another version wrote, or corrupted: tell the client to use a new key rather
      // than run the request a second time under this one.
      b.outcome = Outcome::kNotStored;
      return b;
    }
    b.outcome = Outcome::kReplay;
    b.response = std::make_shared<const control::StoredResponse>(std::move(decoded).value());
  } else {
    b.outcome = Outcome::kInFlight;
  }
  return b;
}

void RedisIdempotencyStore::complete(const std::string &key,
                                     const control::StoredResponse &response) {
  const bool keep =
      !response.truncated && control::encoded_size(response) <= limits_.max_entry_bytes;
  std::string bytes = keep ? control::encode_stored_response(response) : std::string();
  if (keep)
    ++stored_;
  else
    ++too_large_;
  const size_t charge = key.size() + control::MemoryIdempotencyStore::kEntryOverhead + bytes.size();
  auto r = redis_->eval(complete_script(), {},
                        {ns_, std::to_string(clock_.unix_millis()), key, keep ? "D" : "N",
                         std::move(bytes), std::to_string(limits_.ttl.count() * 1000),
                         std::to_string(limits_.max_bytes), std::to_string(limits_.max_entries),
                         std::to_string(charge)});
  if (r && r->elements.size() > 1)
    evictions_ += static_cast<uint64_t>(r->elements[1].as_int());
}

void RedisIdempotencyStore::abandon(const std::string &key) {
  (void)redis_->eval(abandon_script(), {}, {ns_, key});
}

control::IdempotencyStats RedisIdempotencyStore::stats() {
  control::IdempotencyStats s;
  s.stored = stored_.load();
  s.too_large = too_large_.load();
  s.evictions = evictions_.load();
  s.max_bytes = limits_.max_bytes;
  const LruUsage u = lru_usage(*redis_, ns_);
  s.entries = u.entries;
  s.bytes = u.bytes;
  return s;
}

} // namespace gantry::store
