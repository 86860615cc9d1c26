#include "store/redis/redis_worker_registry.h"

#include "cluster/worker_record.h"

namespace gantry::store {
namespace {

// ARGV: ns, node id, value, ttl ms, max workers. 1 = registered, 0 = the registry is full.
constexpr const char *kAnnounce = R"lua(
local ns, id, v, ttl, max = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local set = ns .. 'workers'
if redis.call('SISMEMBER', set, id) == 0 then
  for _, w in ipairs(redis.call('SMEMBERS', set)) do
    if redis.call('EXISTS', ns .. 'worker:' .. w) == 0 then redis.call('SREM', set, w) end
  end
  if redis.call('SCARD', set) >= max then return 0 end
  redis.call('SADD', set, id)
end
redis.call('SET', ns .. 'worker:' .. id, v, 'PX', ttl)
return 1
)lua";

// ARGV: ns. The values of the live workers; ids whose key expired leave the set.
constexpr const char *kLive = R"lua(
local ns = ARGV[1]
local set = ns .. 'workers'
local out = {}
for _, w in ipairs(redis.call('SMEMBERS', set)) do
  local v = redis.call('GET', ns .. 'worker:' .. w)
  if v then out[#out + 1] = v else redis.call('SREM', set, w) end
end
return out
)lua";

constexpr const char *kWithdraw = R"lua(
redis.call('DEL', ARGV[1] .. 'worker:' .. ARGV[2])
redis.call('SREM', ARGV[1] .. 'workers', ARGV[2])
return 1
)lua";

const RedisScript &script(const char *src) {
  static const RedisScript announce(kAnnounce), live(kLive), withdraw(kWithdraw);
  return src == kAnnounce ? announce : src == kLive ? live : withdraw;
}

Error unexpected(const RedisReply &r) {
  return Error{ErrorCode::kIo,
               "redis: worker registry: " + (r.str.empty() ? "unexpected reply" : r.str),
               {}};
}

} // namespace

RedisWorkerRegistry::RedisWorkerRegistry(std::shared_ptr<RedisClient> redis,
                                         cluster::WorkerLimits limits)
    : redis_(std::move(redis)), limits_(limits), ns_(redis_->prefix()) {}

Status RedisWorkerRegistry::announce(const cluster::WorkerInfo &w, std::chrono::milliseconds ttl) {
  GANTRY_TRY(cluster::check_worker(w, limits_));
  GANTRY_ASSIGN_OR_RETURN(RedisReply r, redis_->eval(script(kAnnounce), {},
                                                     {ns_, w.node_id, cluster::encode_worker(w),
                                                      std::to_string(ttl.count()),
                                                      std::to_string(limits_.max_workers)}));
  if (r.kind != RedisReply::Kind::kInteger)
    return unexpected(r);
  if (r.integer == 0)
    return Err(Error{ErrorCode::kQueueFull,
                     "the worker registry holds " + std::to_string(limits_.max_workers) +
                         " live workers already",
                     {}});
  return Ok();
}

Status RedisWorkerRegistry::withdraw(std::string_view node_id) {
  GANTRY_ASSIGN_OR_RETURN(RedisReply r,
                          redis_->eval(script(kWithdraw), {}, {ns_, std::string(node_id)}));
  if (r.kind == RedisReply::Kind::kError)
    return unexpected(r);
  return Ok();
}

Result<std::vector<cluster::WorkerInfo>> RedisWorkerRegistry::live() {
  GANTRY_ASSIGN_OR_RETURN(RedisReply r, redis_->eval(script(kLive), {}, {ns_}));
  if (r.kind != RedisReply::Kind::kArray)
    return unexpected(r);
  std::vector<cluster::WorkerInfo> out;
  for (const auto &e : r.elements) {
    if (static_cast<int>(out.size()) >= limits_.max_workers)
      break;
    auto w = cluster::decode_worker(e.str);
    if (!w || !cluster::check_worker(*w, limits_)) {
      ++malformed_;
      continue;
    }
    out.push_back(std::move(*w));
  }
  return out;
}

} // namespace gantry::store
