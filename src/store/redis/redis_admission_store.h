// The shared AdmissionStore: every node's rate limits, concurrency slots, token quotas, spend
// budgets and spend-rate breakers live in one Redis, so limits hold across nodes exactly as they
// hold inside one process. reserve() is one Lua script (one round trip) that checks every scope
// and takes from all of them or none; settle() is another. The bucket arithmetic is the embedded
// adapter's (control/rate_limiter.cpp), run by Redis atomically.
//
// Time is this node's Clock (unix milliseconds), so the contract suite drives it with a FakeClock;
// nodes are expected to keep their clocks in sync (NTP) to well under a second.
//
// A dead node's reservations do not leak: concurrency slots and quota reservations carry an
// expiry (lease_ttl) that the node's keeper thread pushes forward while the request runs, so a
// node killed mid-request frees its slots within lease_ttl. Quota and budget counters are seeded
// from this node's ledger the first time a period's counter is seen (UsageLoader); after that
// Redis holds the truth for the period.
//
// When Redis cannot be reached, `policy` decides per kind of limit (issue 13, item 3): a request
// that a budget or quota applies to is refused with 503 unless budgets fail open; a request with
// only rate rules is admitted on this node's own in-memory limits (logged and counted) unless
// rate limits fail closed. Settlements that cannot reach Redis are retried by the keeper
// (bounded), so usage is not lost over a short outage.
//
// Threading: thread-safe. reserve()/precheck() on I/O threads, settle() on the settlement worker,
// the keeper on its own thread.
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "control/admission_store.h"
#include "control/memory_admission_store.h"
#include "store/redis/redis_client.h"

namespace gantry::store {

struct RedisAdmissionOptions {
  std::chrono::milliseconds lease_ttl{60'000}; // a dead node's slots are free after this
  bool rate_fail_open = true;    // rate limits when Redis is down: local limits (open) or 503
  bool budget_fail_open = false; // quotas and budgets when Redis is down: 503 (closed) or admit
  size_t max_pending_settles = 100'000; // settlements kept for retry while Redis is down
};

class RedisAdmissionStore final : public control::AdmissionStore {
public:
  RedisAdmissionStore(std::shared_ptr<RedisClient> redis, const Clock &clock,
                      std::vector<control::BreakerSpec> breakers, control::UsageLoader usage,
                      RedisAdmissionOptions options = {});
  ~RedisAdmissionStore() override;

  Result<control::AdmissionLease> reserve(const control::AdmissionAsk &ask,
                                          control::RateSnapshot *refusal) override;
  Status precheck(const control::AdmissionAsk &ask, control::RateSnapshot *refusal) override;
  std::vector<control::BudgetAlert> settle(const control::AdmissionLease &lease,
                                           const control::Usage &used) override;
  void set_budgets(const std::vector<control::Budget> &budgets) override;
  std::vector<control::BudgetState> budgets() override;
  std::vector<std::string> breaker_models() const override;
  std::optional<control::BreakerState> breaker_state(const std::string &model) override;
  bool reset_breaker(const std::string &model) override;

  // The keeper's work, callable from tests: pushes the expiry of every held lease's slots and
  // reservations forward, and retries settlements that could not reach Redis.
  void refresh();
  size_t leases_held();
  // Requests admitted on local limits because Redis was unreachable (fail-open), and requests
  // refused because of it (fail-closed): the /metrics counters.
  uint64_t fallback_admissions() const { return fallback_admits_.load(); }
  uint64_t unavailable_refusals() const { return unavailable_refusals_.load(); }
  size_t pending_settles();

private:
  struct BudgetRef {
    control::Budget budget;
    std::string counter; // the Redis key suffix of this period's counter
    int64_t period_start = 0;
  };
  struct Held {
    std::vector<control::LimitRule> rules;
    std::vector<BudgetRef> budgets;
    std::string model;
    int64_t tokens = 0;
    double usd = 0;
    bool local = false; // admitted by the fail-open fallback: settle there
    control::AdmissionLease local_lease;
  };
  struct PendingSettle {
    uint64_t id;
    Held held;
    control::Usage used;
  };

  std::vector<BudgetRef> budgets_for(const std::string &key_id, const std::string &project,
                                     int64_t now_s);
  Status seed(const std::vector<BudgetRef> &refs);
  Result<control::AdmissionLease> reserve_local(const control::AdmissionAsk &ask,
                                                control::RateSnapshot *refusal,
                                                const std::vector<BudgetRef> &budgets,
                                                const Error &why);
  Result<std::vector<control::BudgetAlert>> settle_remote(uint64_t id, const Held &held,
                                                          const control::Usage &used);
  const control::BreakerConfig *breaker(const std::string &model) const;
  void keeper_loop();

  std::shared_ptr<RedisClient> redis_;
  const Clock &clock_;
  std::map<std::string, control::BreakerConfig> breakers_;
  control::UsageLoader usage_;
  RedisAdmissionOptions options_;
  // The fail-open fallback: this node's own limits while Redis is unreachable.
  control::MemoryAdmissionStore local_;

  std::mutex mu_;
  std::vector<control::Budget> budgets_;
  std::unordered_map<uint64_t, Held> held_; // bounded by the requests in flight
  std::deque<PendingSettle> pending_;       // bounded by max_pending_settles
  uint64_t next_local_id_ = 1;

  // precheck() answers from this node's memory of recent RPM refusals, so the hot
  // path stays one round trip (reserve) while a caller hammering past its limit still costs no
  // parsing or tokenizing (audit M4): scope → when its refusal ends, and what it said.
  struct Refusal {
    int64_t until_ms = 0;
    Error error;
    control::RateSnapshot snapshot;
  };
  void remember_refusal(const std::string &scope, const Error &e,
                        const control::RateSnapshot &snap);
  static constexpr size_t kMaxRefusals = 10'000;
  std::unordered_map<std::string, Refusal> refusals_; // guarded by mu_, bounded by kMaxRefusals

  std::atomic<uint64_t> fallback_admits_{0};
  std::atomic<uint64_t> unavailable_refusals_{0};
  std::atomic<int64_t> last_fallback_log_ms_{0};

  std::mutex keeper_mu_;
  std::condition_variable keeper_cv_;
  bool stopping_ = false;
  std::thread keeper_;
};

} // namespace gantry::store
