// Requests-per-minute, tokens-per-minute and concurrency limits over several scopes at once
// (the key, its project, the whole server). Admission is all-or-nothing across the scopes under
// one lock, so N threads hammering one key admit exactly the allowed count; tokens are reserved
// at admission (prompt + max_tokens) and the unused part is refunded when the request ends.
//
// Each minute limit is a token bucket holding at most one minute's allowance and refilling
// continuously, which is also how OpenAI describes its limits. Time comes from the injected
// Clock, so tests never sleep. A Redis implementation of the same interface comes with the
// multi-node issue (a Lua script doing the same check-then-take atomically).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "control/store.h"
#include "core/clock.h"

namespace gantry::control {

struct LimitRule {
  std::string scope; // "key:<id>", "project:<id>", "global"
  Limits limits;
};

// What the x-ratelimit-* headers report: the scope with a minute limit that is closest to
// running out (OpenAI reports one set of numbers too). A limit of -1 means none applies.
struct RateSnapshot {
  int64_t limit_requests = -1;
  int64_t remaining_requests = 0;
  std::chrono::milliseconds reset_requests{0};
  int64_t limit_tokens = -1;
  int64_t remaining_tokens = 0;
  std::chrono::milliseconds reset_tokens{0};
};

struct RateLease {
  uint64_t id = 0; // 0 = nothing held
  int64_t tokens = 0;
};

struct RateDecision {
  bool allowed = false;
  RateLease lease;
  RateSnapshot snapshot;
  // When refused:
  std::string scope; // which rule refused
  std::string what;  // "requests", "tokens" or "concurrent requests"
  std::string message;
  std::chrono::milliseconds retry_after{0};
};

class RateLimiter {
public:
  virtual ~RateLimiter() = default;
  // Takes one request and `tokens` tokens from every rule's buckets, and a concurrency slot, or
  // nothing at all.
  virtual RateDecision acquire(const std::vector<LimitRule> &rules, int64_t tokens) = 0;
  // Whether a request would be refused by RPM or concurrency (which need no token count), taking
  // nothing: checked before a request is parsed and tokenized (audit M4). Adapters that cannot
  // tell cheaply allow it; acquire() still decides.
  virtual RateDecision check(const std::vector<LimitRule> & /*rules*/) {
    RateDecision d;
    d.allowed = true;
    return d;
  }
  // The request ended having used `used_tokens`: refunds the rest of its reservation (a request
  // cancelled early gets most of it back) and frees its concurrency slot. Idempotent per lease.
  virtual void release(const RateLease &lease, int64_t used_tokens) = 0;
  // Undoes acquire() entirely — the request unit too — for an admission refused by a later
  // check (a quota), so that a refusal takes nothing from any scope.
  virtual void rollback(const RateLease &lease) = 0;
};

class MemoryRateLimiter final : public RateLimiter {
public:
  explicit MemoryRateLimiter(const Clock &clock) : clock_(clock) {}
  RateDecision acquire(const std::vector<LimitRule> &rules, int64_t tokens) override;
  RateDecision check(const std::vector<LimitRule> &rules) override;
  void release(const RateLease &lease, int64_t used_tokens) override;
  void rollback(const RateLease &lease) override;

private:
  struct Bucket {
    double level = 0;
    std::chrono::steady_clock::time_point at{};
    bool init = false;
  };
  struct ScopeState {
    Bucket requests, tokens;
    int64_t concurrent = 0;
  };
  struct Held {
    std::vector<std::pair<std::string, Limits>> rules;
    int64_t tokens = 0;
  };
  void refill(Bucket &b, int64_t per_minute, std::chrono::steady_clock::time_point now);
  // Fills `d` and returns true when a rule refuses (TPM only when tokens_too). Holds mu_.
  bool refuse(const std::vector<LimitRule> &rules, int64_t tokens, bool tokens_too,
              std::chrono::steady_clock::time_point now, RateDecision &d);
  void give_back(const RateLease &lease, int64_t used_tokens, bool request_too);

  const Clock &clock_;
  std::mutex mu_;
  std::unordered_map<std::string, ScopeState> scopes_;
  std::unordered_map<uint64_t, Held> held_;
  uint64_t next_lease_ = 1;
};

// OpenAI's duration format for x-ratelimit-reset-*: "20ms", "1s", "1.5s", "6m0s", "1h2m3s".
std::string format_reset(std::chrono::milliseconds d);

} // namespace gantry::control
