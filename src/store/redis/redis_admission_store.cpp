#include "store/redis/redis_admission_store.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace gantry::store {
namespace {

using control::AdmissionAsk;
using control::AdmissionLease;
using control::BudgetAlert;
using control::RateSnapshot;

// Lease ids from Redis (INCR) are below 2^53; local fallback leases have the top bit set.
constexpr uint64_t kLocalBit = uint64_t{1} << 63;

// Shared by the scripts: argument cursor, the rule list and the token bucket of
// control/rate_limiter.cpp (a bucket holds one minute's allowance, refills continuously, starts
// full; `now` never moves a bucket's time backwards).
constexpr const char *kPrelude = R"lua(
local P = ARGV[1]
local now = tonumber(ARGV[2])
local cur = 3
local function arg() local v = ARGV[cur]; cur = cur + 1; return v end
local function num() return tonumber(arg()) end
local function read_rules()
  local n = num()
  local rules = {}
  for r = 1, n do
    rules[r] = {scope = arg(), rpm = num(), tpm = num(), maxc = num()}
  end
  return rules
end
local function level(key, lf, tf, cap)
  local v = redis.call('HMGET', key, lf, tf)
  if not v[1] then return cap, now end
  local l = tonumber(v[1])
  local at = tonumber(v[2])
  if now > at then
    l = math.min(cap, l + (now - at) * cap / 60000)
    at = now
  end
  return l, at
end
local function ms_to(missing, per_minute)
  if missing <= 0 or per_minute <= 0 then return 0 end
  return math.ceil(missing * 60000 / per_minute)
end
-- Checks one rule; returns a refusal array or nil.
local function refuse(r, tokens)
  local rk = P .. 'rl:' .. r.scope
  if r.maxc > 0 then
    local ck = P .. 'cc:' .. r.scope
    redis.call('ZREMRANGEBYSCORE', ck, '-inf', now)
    if redis.call('ZCARD', ck) >= r.maxc then
      return {2, r.scope, 'concurrent', r.maxc, '0', 1000, 0}
    end
  end
  if r.rpm > 0 then
    local l = level(rk, 'r', 'ra', r.rpm)
    r.rl = l -- reused when taking, so each bucket is read once per script
    if l < 1 then
      return {2, r.scope, 'requests', r.rpm, tostring(l), ms_to(1 - l, r.rpm), ms_to(r.rpm - l, r.rpm)}
    end
  end
  if tokens and r.tpm > 0 then
    if tokens > r.tpm then
      return {2, r.scope, 'too_large', r.tpm, '0', 60000, 0}
    end
    local l = level(rk, 't', 'ta', r.tpm)
    r.tl = l
    if l < tokens then
      return {2, r.scope, 'tokens', r.tpm, tostring(l), ms_to(tokens - l, r.tpm), ms_to(r.tpm - l, r.tpm)}
    end
  end
  return nil
end
-- Drops the reservations of a quota counter whose holder stopped refreshing them (a dead node).
local function sweep(q)
  local dead = redis.call('ZRANGEBYSCORE', q .. ':r', '-inf', now)
  for _, id in ipairs(dead) do
    local amt = redis.call('HGET', q .. ':a', id)
    if amt then
      local t, u = string.match(amt, '^(%S+) (%S+)$')
      redis.call('HINCRBY', q, 'rt', -tonumber(t))
      redis.call('HINCRBYFLOAT', q, 'ru', -tonumber(u))
      redis.call('HDEL', q .. ':a', id)
    end
    redis.call('ZREM', q .. ':r', id)
  end
end
)lua";

// ARGV: prefix, now_ms, tokens, usd, lease_ttl_ms, breaker model ('' = none), rules, budgets
// (counter suffix, token quota, spend limit, expire-at ms).
// Returns {1, lease, limit_req, remaining_req, reset_req_ms, limit_tok, remaining_tok,
// reset_tok_ms}, {2, scope, what, limit, level, retry_ms, reset_ms} (rate), {3, budget index,
// 'tokens'|'usd'} (quota), {4, retry_ms} (breaker open) or {5, budget index...} (counters to seed).
constexpr const char *kReserveBody = R"lua(
local tokens = num()
local usd = num()
local ttl = num()
local model = arg()
local rules = read_rules()
local nb = num()
local budgets = {}
for b = 1, nb do
  budgets[b] = {q = P .. 'q:' .. arg(), quota = num(), spend = num(), exp = num()}
end
if model ~= '' then
  local bk = P .. 'br:' .. model
  local open_until = tonumber(redis.call('HGET', bk, 'open_until') or '0')
  if open_until > now then return {4, open_until - now} end
  if open_until > 0 then
    -- Closed by its cool-down: the next window starts clean (as SpendBreaker::check does).
    redis.call('HSET', bk, 'open_until', 0)
    redis.call('DEL', P .. 'brw:' .. model)
  end
end
for _, r in ipairs(rules) do
  local no = refuse(r, tokens)
  if no then return no end
end
local missing = {5}
for b, q in ipairs(budgets) do
  if redis.call('HEXISTS', q.q, 'seeded') == 0 then missing[#missing + 1] = b end
end
if #missing > 1 then return missing end
for b, q in ipairs(budgets) do
  sweep(q.q)
  local v = redis.call('HMGET', q.q, 'ut', 'uu', 'rt', 'ru')
  local ut, uu = tonumber(v[1] or '0'), tonumber(v[2] or '0')
  local rt, ru = tonumber(v[3] or '0'), tonumber(v[4] or '0')
  if q.quota > 0 and ut + rt >= q.quota then return {3, b, 'tokens'} end
  if q.spend > 0 and uu + ru >= q.spend then return {3, b, 'usd'} end
end
-- Everything admits: take from every scope.
local lease = redis.call('INCR', P .. 'lease_seq')
local snap = {-1, 0, 0, -1, 0, 0}
local tight_req, tight_tok = 2, 2
for _, r in ipairs(rules) do
  local rk = P .. 'rl:' .. r.scope
  if r.rpm > 0 then
    local l = r.rl - 1
    redis.call('HSET', rk, 'r', tostring(l), 'ra', now)
    if l / r.rpm < tight_req then
      tight_req = l / r.rpm
      snap[1], snap[2], snap[3] = r.rpm, math.floor(l), ms_to(r.rpm - l, r.rpm)
    end
  end
  if r.tpm > 0 then
    local l = r.tl - tokens
    redis.call('HSET', rk, 't', tostring(l), 'ta', now)
    if l / r.tpm < tight_tok then
      tight_tok = l / r.tpm
      snap[4], snap[5], snap[6] = r.tpm, math.floor(math.max(0, l)), ms_to(r.tpm - l, r.tpm)
    end
  end
  if r.rpm > 0 or r.tpm > 0 then redis.call('PEXPIRE', rk, 120000) end
  if r.maxc > 0 then
    local ck = P .. 'cc:' .. r.scope
    redis.call('ZADD', ck, now + ttl, lease)
    redis.call('PEXPIRE', ck, ttl * 2)
  end
end
for _, q in ipairs(budgets) do
  redis.call('HINCRBY', q.q, 'rt', tokens)
  redis.call('HINCRBYFLOAT', q.q, 'ru', usd)
  redis.call('ZADD', q.q .. ':r', now + ttl, lease)
  redis.call('HSET', q.q .. ':a', lease, tokens .. ' ' .. usd)
  redis.call('PEXPIRE', q.q, math.max(1000, q.exp - now))
  redis.call('PEXPIRE', q.q .. ':r', math.max(1000, q.exp - now))
  redis.call('PEXPIRE', q.q .. ':a', math.max(1000, q.exp - now))
end
return {1, lease, snap[1], snap[2], snap[3], snap[4], snap[5], snap[6]}
)lua";

// ARGV: prefix, now_ms, lease, reserved tokens, used tokens, reserved usd, used usd, breaker
// model ('' = none), breaker usd/min, window ms, cool-down ms, rules, budgets (the lease's
// counter, this period's counter, token quota, spend limit, thresholds "50,80,100", expire-at).
// Returns {budget index, threshold, used usd, used tokens, ...} for each threshold crossed.
constexpr const char *kSettleBody = R"lua(
local lease = arg()
local reserved, used = num(), num()
local reserved_usd, used_usd = num(), num()
local model = arg()
local per_min, window, cooldown = num(), num(), num()
local rules = read_rules()
for _, r in ipairs(rules) do
  if r.maxc > 0 then redis.call('ZREM', P .. 'cc:' .. r.scope, lease) end
  if r.tpm > 0 then
    local rk = P .. 'rl:' .. r.scope
    -- A negative refund (more used than reserved) is debt the bucket pays back by refilling.
    local l = math.min(r.tpm, level(rk, 't', 'ta', r.tpm) + (reserved - used))
    redis.call('HSET', rk, 't', tostring(l), 'ta', now)
    redis.call('PEXPIRE', rk, 120000)
  end
end
local alerts = {}
local nb = num()
for b = 1, nb do
  local held, q = P .. 'q:' .. arg(), P .. 'q:' .. arg()
  local quota, spend, thresholds, exp = num(), num(), arg(), num()
  if redis.call('ZREM', held .. ':r', lease) == 1 then
    redis.call('HINCRBY', held, 'rt', -reserved)
    redis.call('HINCRBYFLOAT', held, 'ru', -reserved_usd)
    redis.call('HDEL', held .. ':a', lease)
  end
  local v = redis.call('HMGET', q, 'ut', 'uu')
  local before_t, before_u = tonumber(v[1] or '0'), tonumber(v[2] or '0')
  local after_t = redis.call('HINCRBY', q, 'ut', used)
  local after_u = tonumber(redis.call('HINCRBYFLOAT', q, 'uu', used_usd))
  redis.call('HSETNX', q, 'seeded', 1)
  redis.call('PEXPIRE', q, math.max(1000, exp - now))
  for t in string.gmatch(thresholds, '%d+') do
    local pct = tonumber(t)
    local crossed = false
    if spend > 0 then
      local line = spend * pct / 100
      crossed = before_u < line and after_u >= line
    elseif quota > 0 then
      local line = quota * pct / 100
      crossed = before_t < line and after_t >= line
    end
    if crossed then
      alerts[#alerts + 1] = b
      alerts[#alerts + 1] = pct
      alerts[#alerts + 1] = tostring(after_u)
      alerts[#alerts + 1] = after_t
    end
  end
end
if model ~= '' and per_min > 0 and used_usd > 0 then
  local bk, wk = P .. 'br:' .. model, P .. 'brw:' .. model
  local slot_ms = math.max(1, math.floor(window / 60))
  local idx = math.floor(now / slot_ms)
  redis.call('HINCRBYFLOAT', wk, idx, used_usd)
  local sum = 0
  local all = redis.call('HGETALL', wk)
  for i = 1, #all, 2 do
    if tonumber(all[i]) <= idx - 60 then
      redis.call('HDEL', wk, all[i])
    else
      sum = sum + tonumber(all[i + 1])
    end
  end
  redis.call('PEXPIRE', wk, window * 2)
  local open_until = tonumber(redis.call('HGET', bk, 'open_until') or '0')
  if open_until <= now and sum > per_min * window / 60000 then
    redis.call('HSET', bk, 'open_until', now + cooldown)
    redis.call('HINCRBY', bk, 'trips', 1)
  end
end
return alerts
)lua";

// ARGV: prefix, now_ms, then (counter suffix, tokens, usd, expire-at) per counter: seeds a
// period's counter from the ledger once, whichever node gets there first.
constexpr const char *kSeedBody = R"lua(
while cur <= #ARGV do
  local q = P .. 'q:' .. arg()
  local t, u, exp = num(), num(), num()
  if redis.call('HSETNX', q, 'seeded', 1) == 1 then
    redis.call('HINCRBY', q, 'ut', t)
    redis.call('HINCRBYFLOAT', q, 'uu', u)
    redis.call('PEXPIRE', q, math.max(1000, exp - now))
  end
end
return 1
)lua";

const RedisScript &reserve_script() {
  static const RedisScript s(std::string(kPrelude) + kReserveBody);
  return s;
}
const RedisScript &settle_script() {
  static const RedisScript s(std::string(kPrelude) + kSettleBody);
  return s;
}
const RedisScript &seed_script() {
  static const RedisScript s(std::string(kPrelude) + kSeedBody);
  return s;
}

std::string num(double v) {
  char buf[40];
  std::snprintf(buf, sizeof(buf), "%.17g", v);
  return buf;
}

void push_rules(std::vector<std::string> &args, const std::vector<control::LimitRule> &rules) {
  args.push_back(std::to_string(rules.size()));
  for (const auto &r : rules) {
    args.push_back(r.scope);
    args.push_back(std::to_string(r.limits.rpm));
    args.push_back(std::to_string(r.limits.tpm));
    args.push_back(std::to_string(r.limits.max_concurrent));
  }
}

// Counters outlive their period by a margin, then Redis drops them. The scripts turn this node-time
// instant into a relative PEXPIRE, so a node clock that differs from Redis's cannot expire a live
// counter at once.
int64_t expire_at_ms(int64_t period_start_s) { return (period_start_s + 40 * 86400) * 1000; }

std::string counter_key(const control::Budget &b, int64_t start) {
  return std::string(control::to_string(b.owner_kind)) + ":" + b.owner_id + ":" +
         std::string(control::to_string(b.period)) + ":" + std::to_string(start);
}

// The refusal text of the embedded limiter, from the script's numbers.
Error rate_refusal(const RedisReply &r, int64_t tokens, RateSnapshot *refusal) {
  const std::string scope = r.elements[1].str, what = r.elements[2].str;
  const int64_t limit = r.elements[3].as_int();
  const double lvl = r.elements[4].as_double();
  const std::chrono::milliseconds retry(r.elements[5].as_int()), reset(r.elements[6].as_int());
  std::string msg;
  RateSnapshot snap;
  if (what == "concurrent") {
    msg = "Rate limit reached for " + scope + " on concurrent requests: limit " +
          std::to_string(limit) + ". Retry when a request finishes.";
  } else if (what == "requests") {
    msg = "Rate limit reached for " + scope + " on requests per minute (RPM): limit " +
          std::to_string(limit) + ". Please try again in " + control::format_reset(retry) + ".";
    snap.limit_requests = limit;
    snap.remaining_requests = 0;
    snap.reset_requests = reset;
  } else if (what == "too_large") {
    msg = "Request too large for " + scope + " on tokens per minute (TPM): limit " +
          std::to_string(limit) + ", requested " + std::to_string(tokens) +
          " (prompt + max_tokens). Lower max_tokens or the prompt.";
  } else {
    const int64_t remaining = static_cast<int64_t>(std::max(0.0, lvl));
    msg = "Rate limit reached for " + scope + " on tokens per minute (TPM): limit " +
          std::to_string(limit) + ", remaining " + std::to_string(remaining) + ", requested " +
          std::to_string(tokens) + ". Please try again in " + control::format_reset(retry) + ".";
    snap.limit_tokens = limit;
    snap.remaining_tokens = remaining;
    snap.reset_tokens = reset;
  }
  if (refusal)
    *refusal = snap;
  Error e{ErrorCode::kRateLimited, std::move(msg), {}};
  e.retry_after_ms = std::max<int64_t>(retry.count(), 1);
  return e;
}

Error quota_refusal(const control::Budget &b, const std::string &what) {
  const std::string period(control::to_string(b.period)), kind(control::to_string(b.owner_kind));
  if (what == "tokens")
    return Error{ErrorCode::kQuotaExceeded,
                 "You exceeded the " + period + "ly token quota of " + kind + " '" + b.owner_id +
                     "' (" + std::to_string(b.token_quota) + " tokens). It resets at the start " +
                     "of the next " + period + " (UTC).",
                 ""};
  char buf[64];
  std::snprintf(buf, sizeof(buf), "$%.4f", b.spend_limit_usd);
  return Error{ErrorCode::kQuotaExceeded,
               "You exceeded the " + period + "ly budget of " + kind + " '" + b.owner_id + "' (" +
                   buf + "). It resets at the start of the next " + period + " (UTC).",
               ""};
}

Error breaker_refusal(const std::string &model, const control::BreakerConfig &c, int64_t left_ms) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "$%.4f", c.usd_per_minute);
  return Error{
      ErrorCode::kCircuitOpen,
      "The spend-rate circuit breaker of model '" + model + "' is open: spending exceeded " + buf +
          " per minute. New requests are " + "refused for " + std::to_string(left_ms / 1000 + 1) +
          " s more, or until an admin resets it (POST /admin/v1/breakers/" + model + "/reset).",
      "model"};
}

} // namespace

RedisAdmissionStore::RedisAdmissionStore(std::shared_ptr<RedisClient> redis, const Clock &clock,
                                         std::vector<control::BreakerSpec> breakers,
                                         control::UsageLoader usage, RedisAdmissionOptions options)
    : redis_(std::move(redis)), clock_(clock), usage_(usage), options_(options),
      local_(clock, breakers, usage) {
  for (auto &b : breakers)
    if (b.config.usd_per_minute > 0)
      breakers_.emplace(b.model, b.config);
  keeper_ = std::thread([this] { keeper_loop(); });
}

RedisAdmissionStore::~RedisAdmissionStore() {
  {
    std::lock_guard<std::mutex> lk(keeper_mu_);
    stopping_ = true;
  }
  keeper_cv_.notify_all();
  keeper_.join();
}

const control::BreakerConfig *RedisAdmissionStore::breaker(const std::string &model) const {
  auto it = breakers_.find(model);
  return it == breakers_.end() ? nullptr : &it->second;
}

std::vector<RedisAdmissionStore::BudgetRef>
RedisAdmissionStore::budgets_for(const std::string &key_id, const std::string &project,
                                 int64_t now_s) {
  std::vector<BudgetRef> out;
  std::lock_guard<std::mutex> lk(mu_);
  for (const auto &b : budgets_) {
    const bool mine =
        (b.owner_kind == control::OwnerKind::kKey && !key_id.empty() && b.owner_id == key_id) ||
        (b.owner_kind == control::OwnerKind::kProject && !project.empty() && b.owner_id == project);
    if (!mine)
      continue;
    const int64_t start = control::period_start(b.period, now_s);
    out.push_back({b, counter_key(b, start), start});
  }
  return out;
}

Status RedisAdmissionStore::seed(const std::vector<BudgetRef> &refs) {
  std::vector<std::string> args{redis_->prefix(), std::to_string(clock_.unix_millis())};
  for (const auto &r : refs) {
    GANTRY_ASSIGN_OR_RETURN(auto totals,
                            usage_(r.budget.owner_kind, r.budget.owner_id, r.period_start * 1000));
    args.push_back(r.counter);
    args.push_back(std::to_string(totals.input_tokens + totals.output_tokens));
    args.push_back(num(totals.cost_usd));
    args.push_back(std::to_string(expire_at_ms(r.period_start)));
  }
  GANTRY_ASSIGN_OR_RETURN(auto reply, redis_->eval(seed_script(), {}, args));
  (void)reply;
  return Ok();
}

Status RedisAdmissionStore::precheck(const AdmissionAsk &ask, RateSnapshot *refusal) {
  if (ask.rules.empty())
    return Ok();
  if (!redis_->reachable() && options_.rate_fail_open)
    return local_.precheck(ask, refusal);
  const int64_t now = clock_.unix_millis();
  std::lock_guard<std::mutex> lk(mu_);
  for (const auto &r : ask.rules) {
    auto it = refusals_.find(r.scope);
    if (it == refusals_.end())
      continue;
    if (it->second.until_ms <= now) {
      refusals_.erase(it);
      continue;
    }
    if (refusal)
      *refusal = it->second.snapshot;
    Error e = it->second.error;
    e.retry_after_ms = std::max<int64_t>(it->second.until_ms - now, 1);
    return Err(std::move(e));
  }
  return Ok();
}

void RedisAdmissionStore::remember_refusal(const std::string &scope, const Error &e,
                                           const RateSnapshot &snap) {
  const int64_t now = clock_.unix_millis();
  std::lock_guard<std::mutex> lk(mu_);
  if (refusals_.size() >= kMaxRefusals) {
    std::erase_if(refusals_, [&](const auto &kv) { return kv.second.until_ms <= now; });
    if (refusals_.size() >= kMaxRefusals)
      refusals_.clear(); // a memo, not state: losing it costs one round trip per scope
  }
  refusals_[scope] = {now + e.retry_after_ms, e, snap};
}

Result<AdmissionLease> RedisAdmissionStore::reserve_local(const AdmissionAsk &ask,
                                                          RateSnapshot *refusal,
                                                          const std::vector<BudgetRef> &budgets,
                                                          const Error &why) {
  const bool budgets_apply = !budgets.empty();
  if ((budgets_apply && !options_.budget_fail_open) ||
      (!ask.rules.empty() && !options_.rate_fail_open)) {
    ++unavailable_refusals_;
    Error e{ErrorCode::kUnavailable,
            std::string("The shared limit store (Redis) is unreachable and this request's ") +
                (budgets_apply ? "budgets" : "rate limits") +
                " are configured to fail closed. Retry shortly.",
            ""};
    e.retry_after_ms = 1000;
    return Err(std::move(e));
  }
  const int64_t now = clock_.unix_millis();
  if (now - last_fallback_log_ms_.load() > 10'000) {
    last_fallback_log_ms_.store(now);
    std::fprintf(stderr, "admission: %s; admitting on this node's own limits (fail open)\n",
                 why.message.c_str());
  }
  GANTRY_ASSIGN_OR_RETURN(AdmissionLease inner, local_.reserve(ask, refusal));
  ++fallback_admits_;
  Held held;
  held.local = true;
  held.local_lease = inner;
  AdmissionLease lease = inner;
  std::lock_guard<std::mutex> lk(mu_);
  lease.id = kLocalBit | next_local_id_++;
  held_.emplace(lease.id, std::move(held));
  return lease;
}

Result<AdmissionLease> RedisAdmissionStore::reserve(const AdmissionAsk &ask,
                                                    RateSnapshot *refusal) {
  const int64_t now = clock_.unix_millis();
  std::vector<BudgetRef> budgets;
  if (!ask.key_id.empty() || !ask.project.empty())
    budgets = budgets_for(ask.key_id, ask.project, now / 1000);
  const control::BreakerConfig *br = breaker(ask.model);
  std::vector<std::string> args{redis_->prefix(),
                                std::to_string(now),
                                std::to_string(ask.tokens),
                                num(ask.usd),
                                std::to_string(options_.lease_ttl.count()),
                                br ? ask.model : std::string()};
  push_rules(args, ask.rules);
  args.push_back(std::to_string(budgets.size()));
  for (const auto &b : budgets) {
    args.push_back(b.counter);
    args.push_back(std::to_string(b.budget.token_quota));
    args.push_back(num(b.budget.spend_limit_usd));
    args.push_back(std::to_string(expire_at_ms(b.period_start)));
  }
  // At most two seeding rounds: a counter seeded by another node meanwhile is simply there.
  for (int attempt = 0; attempt < 3; ++attempt) {
    auto r = redis_->eval(reserve_script(), {}, args);
    if (!r) {
      if (r.error().code == ErrorCode::kIo)
        return reserve_local(ask, refusal, budgets, r.error());
      return Err(r.take_error());
    }
    if (r->kind != RedisReply::Kind::kArray || r->elements.empty())
      return Err(ErrorCode::kInternal, "the admission script returned an unexpected reply");
    const auto &e = r->elements;
    switch (e[0].as_int()) {
    case 1: {
      if (e.size() < 8)
        break;
      AdmissionLease lease;
      lease.id = static_cast<uint64_t>(e[1].as_int());
      lease.model = ask.model;
      lease.tokens = ask.tokens;
      lease.usd = ask.usd;
      lease.snapshot.limit_requests = e[2].as_int();
      lease.snapshot.remaining_requests = e[3].as_int();
      lease.snapshot.reset_requests = std::chrono::milliseconds(e[4].as_int());
      lease.snapshot.limit_tokens = e[5].as_int();
      lease.snapshot.remaining_tokens = e[6].as_int();
      lease.snapshot.reset_tokens = std::chrono::milliseconds(e[7].as_int());
      Held held;
      held.rules = ask.rules;
      held.budgets = std::move(budgets);
      held.model = ask.model;
      held.tokens = ask.tokens;
      held.usd = ask.usd;
      std::lock_guard<std::mutex> lk(mu_);
      held_.emplace(lease.id, std::move(held));
      return lease;
    }
    case 2:
      if (e.size() >= 7) {
        RateSnapshot snap;
        Error err = rate_refusal(*r, ask.tokens, &snap);
        if (refusal)
          *refusal = snap;
        // An RPM refusal holds for any request of the scope until retry-after. A TPM refusal
        // depends on the request's size, and a concurrency slot may free any moment: those are
        // not remembered.
        if (e[2].str == "requests")
          remember_refusal(e[1].str, err, snap);
        return Err(std::move(err));
      }
      break;
    case 3: {
      const auto i = static_cast<size_t>(e.size() >= 3 ? e[1].as_int() : 0);
      if (i >= 1 && i <= budgets.size())
        return Err(quota_refusal(budgets[i - 1].budget, e[2].str));
      break;
    }
    case 4:
      if (br && e.size() >= 2)
        return Err(breaker_refusal(ask.model, *br, e[1].as_int()));
      break;
    case 5: {
      std::vector<BudgetRef> missing;
      for (size_t k = 1; k < e.size(); ++k) {
        const auto i = static_cast<size_t>(e[k].as_int());
        if (i >= 1 && i <= budgets.size())
          missing.push_back(budgets[i - 1]);
      }
      if (auto s = seed(missing); !s) {
        if (s.error().code == ErrorCode::kIo && redis_->reachable())
          return Err(s.take_error()); // the ledger could not be read: as the embedded adapter
        if (s.error().code == ErrorCode::kIo)
          return reserve_local(ask, refusal, budgets, s.error());
        return Err(s.take_error());
      }
      continue;
    }
    default: break;
    }
    return Err(ErrorCode::kInternal, "the admission script returned an unexpected reply");
  }
  return Err(ErrorCode::kInternal, "budget counters could not be seeded");
}

Result<std::vector<BudgetAlert>> RedisAdmissionStore::settle_remote(uint64_t id, const Held &held,
                                                                    const control::Usage &used) {
  const int64_t now = clock_.unix_millis();
  const control::BreakerConfig *br = breaker(held.model);
  std::vector<std::string> args{redis_->prefix(),
                                std::to_string(now),
                                std::to_string(id),
                                std::to_string(held.tokens),
                                std::to_string(used.tokens),
                                num(held.usd),
                                num(used.usd),
                                br ? held.model : std::string(),
                                num(br ? br->usd_per_minute : 0),
                                std::to_string(br ? br->window.count() * 1000 : 0),
                                std::to_string(br ? br->cooldown.count() * 1000 : 0)};
  push_rules(args, held.rules);
  // Usage is charged to the period it is settled in; the reservation is released from the
  // period it was made in.
  std::vector<BudgetRef> current;
  for (const auto &ref : held.budgets) {
    const int64_t start = control::period_start(ref.budget.period, now / 1000);
    current.push_back({ref.budget, counter_key(ref.budget, start), start});
  }
  args.push_back(std::to_string(held.budgets.size()));
  for (size_t i = 0; i < held.budgets.size(); ++i) {
    const auto &b = current[i].budget;
    args.push_back(held.budgets[i].counter);
    args.push_back(current[i].counter);
    args.push_back(std::to_string(b.token_quota));
    args.push_back(num(b.spend_limit_usd));
    std::string th;
    for (int t : b.alert_thresholds)
      th += (th.empty() ? "" : ",") + std::to_string(t);
    args.push_back(th);
    args.push_back(std::to_string(expire_at_ms(current[i].period_start)));
  }
  GANTRY_ASSIGN_OR_RETURN(auto r, redis_->eval(settle_script(), {}, args));
  std::vector<BudgetAlert> alerts;
  for (size_t k = 0; k + 3 < r.elements.size(); k += 4) {
    const auto i = static_cast<size_t>(r.elements[k].as_int());
    if (i < 1 || i > current.size())
      continue;
    BudgetAlert a;
    a.budget = current[i - 1].budget;
    a.period_start = current[i - 1].period_start;
    a.threshold = static_cast<int>(r.elements[k + 1].as_int());
    a.used_usd = r.elements[k + 2].as_double();
    a.used_tokens = r.elements[k + 3].as_int();
    alerts.push_back(std::move(a));
  }
  std::sort(alerts.begin(), alerts.end(),
            [](const BudgetAlert &x, const BudgetAlert &y) { return x.threshold < y.threshold; });
  return alerts;
}

std::vector<BudgetAlert> RedisAdmissionStore::settle(const AdmissionLease &lease,
                                                     const control::Usage &used) {
  Held held;
  {
    std::lock_guard<std::mutex> lk(mu_);
    auto it = held_.find(lease.id);
    if (it == held_.end())
      return {};
    held = std::move(it->second);
    held_.erase(it);
  }
  if (held.local)
    return local_.settle(held.local_lease, used);
  auto alerts = settle_remote(lease.id, held, used);
  if (alerts)
    return std::move(alerts).value();
  // Redis is unreachable (or failed): keep the settlement for the keeper to retry, so the usage
  // reaches the shared counters once Redis is back. The slots expire by themselves meanwhile.
  std::lock_guard<std::mutex> lk(mu_);
  if (pending_.size() >= options_.max_pending_settles) {
    std::fprintf(stderr, "admission: %zu settlements wait for Redis; dropping the oldest\n",
                 pending_.size());
    pending_.pop_front();
  }
  pending_.push_back({lease.id, std::move(held), used});
  return {};
}

void RedisAdmissionStore::refresh() {
  const int64_t until = clock_.unix_millis() + options_.lease_ttl.count();
  std::vector<std::vector<std::string>> cmds;
  {
    std::lock_guard<std::mutex> lk(mu_);
    for (const auto &[id, h] : held_) {
      if (h.local)
        continue;
      const std::string member = std::to_string(id), score = std::to_string(until);
      for (const auto &r : h.rules)
        if (r.limits.max_concurrent > 0)
          cmds.push_back({"ZADD", redis_->prefix() + "cc:" + r.scope, "XX", score, member});
      for (const auto &b : h.budgets)
        cmds.push_back({"ZADD", redis_->prefix() + "q:" + b.counter + ":r", "XX", score, member});
    }
  }
  // Bounded batches, so one refresh never builds an unbounded pipeline.
  for (size_t i = 0; i < cmds.size(); i += 512) {
    std::vector<std::vector<std::string>> batch(
        cmds.begin() + static_cast<std::ptrdiff_t>(i),
        cmds.begin() + static_cast<std::ptrdiff_t>(std::min(cmds.size(), i + 512)));
    if (!redis_->pipeline(batch))
      break;
  }
  // Retry settlements that could not reach Redis, oldest first; stop at the first failure.
  for (;;) {
    PendingSettle p;
    {
      std::lock_guard<std::mutex> lk(mu_);
      if (pending_.empty())
        break;
      p = std::move(pending_.front());
      pending_.pop_front();
    }
    if (!settle_remote(p.id, p.held, p.used)) {
      std::lock_guard<std::mutex> lk(mu_);
      pending_.push_front(std::move(p));
      break;
    }
  }
}

void RedisAdmissionStore::keeper_loop() {
  const auto every = std::max(options_.lease_ttl / 4, std::chrono::milliseconds(50));
  std::unique_lock<std::mutex> lk(keeper_mu_);
  while (!stopping_) {
    keeper_cv_.wait_for(lk, every, [&] { return stopping_; });
    if (stopping_)
      break;
    lk.unlock();
    refresh();
    lk.lock();
  }
}

size_t RedisAdmissionStore::leases_held() {
  std::lock_guard<std::mutex> lk(mu_);
  return held_.size();
}

size_t RedisAdmissionStore::pending_settles() {
  std::lock_guard<std::mutex> lk(mu_);
  return pending_.size();
}

void RedisAdmissionStore::set_budgets(const std::vector<control::Budget> &budgets) {
  std::vector<control::Budget> sorted = budgets;
  for (auto &b : sorted)
    std::sort(b.alert_thresholds.begin(), b.alert_thresholds.end());
  local_.set_budgets(sorted);
  std::lock_guard<std::mutex> lk(mu_);
  budgets_ = std::move(sorted);
}

std::vector<control::BudgetState> RedisAdmissionStore::budgets() {
  std::vector<control::Budget> list;
  {
    std::lock_guard<std::mutex> lk(mu_);
    list = budgets_;
  }
  const int64_t now_s = clock_.unix_seconds();
  std::vector<BudgetRef> refs;
  for (const auto &b : list) {
    const int64_t start = control::period_start(b.period, now_s);
    refs.push_back({b, counter_key(b, start), start});
  }
  std::vector<std::vector<std::string>> cmds;
  for (const auto &r : refs)
    cmds.push_back(
        {"HMGET", redis_->prefix() + "q:" + r.counter, "ut", "uu", "rt", "ru", "seeded"});
  auto replies = redis_->pipeline(cmds);
  if (!replies)
    return local_.budgets(); // Redis is down: this node's view is the best there is
  std::vector<BudgetRef> unseeded;
  for (size_t i = 0; i < refs.size(); ++i)
    if ((*replies)[i].elements.size() < 5 || (*replies)[i].elements[4].is_nil())
      unseeded.push_back(refs[i]);
  if (!unseeded.empty() && seed(unseeded)) {
    replies = redis_->pipeline(cmds);
    if (!replies)
      return local_.budgets();
  }
  std::vector<control::BudgetState> out;
  for (size_t i = 0; i < refs.size(); ++i) {
    const auto &v = (*replies)[i].elements;
    control::BudgetState s;
    s.budget = refs[i].budget;
    s.period_start = refs[i].period_start;
    if (v.size() >= 4) {
      s.used_tokens = v[0].as_int();
      s.used_usd = v[1].as_double();
      s.reserved_tokens = std::max<int64_t>(0, v[2].as_int());
      s.reserved_usd = std::max(0.0, v[3].as_double());
    }
    out.push_back(std::move(s));
  }
  return out;
}

std::vector<std::string> RedisAdmissionStore::breaker_models() const {
  std::vector<std::string> out;
  for (const auto &[name, c] : breakers_)
    out.push_back(name);
  return out;
}

std::optional<control::BreakerState> RedisAdmissionStore::breaker_state(const std::string &model) {
  const control::BreakerConfig *c = breaker(model);
  if (!c)
    return std::nullopt;
  control::BreakerState s;
  s.usd_per_minute = c->usd_per_minute;
  const int64_t now = clock_.unix_millis();
  auto replies =
      redis_->pipeline({{"HMGET", redis_->prefix() + "br:" + model, "open_until", "trips"},
                        {"HGETALL", redis_->prefix() + "brw:" + model}});
  if (!replies || (*replies)[0].elements.size() < 2)
    return local_.breaker_state(model);
  const int64_t open_until = (*replies)[0].elements[0].as_int();
  s.open = open_until > now;
  if (s.open)
    s.open_for = std::chrono::milliseconds(open_until - now);
  s.trips = static_cast<uint64_t>((*replies)[0].elements[1].as_int());
  const int64_t window_ms = c->window.count() * 1000;
  const int64_t slot_ms = std::max<int64_t>(1, window_ms / 60);
  const int64_t idx = now / slot_ms;
  const auto &all = (*replies)[1].elements;
  for (size_t i = 0; i + 1 < all.size(); i += 2)
    if (all[i].as_int() > idx - 60)
      s.window_usd += all[i + 1].as_double();
  return s;
}

bool RedisAdmissionStore::reset_breaker(const std::string &model) {
  if (!breaker(model))
    return false;
  local_.reset_breaker(model);
  auto r = redis_->pipeline({{"HSET", redis_->prefix() + "br:" + model, "open_until", "0"},
                             {"DEL", redis_->prefix() + "brw:" + model}});
  return static_cast<bool>(r);
}

} // namespace gantry::store
