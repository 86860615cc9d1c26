// The embedded AdmissionStore: this process's MemoryRateLimiter, QuotaTracker and one
// SpendBreaker per model, behind one mutex so that a reservation and its rollback are never
// seen half-done by another request. A restart forgets the minute buckets and the breaker;
// quota counters reload the current period's usage from the ledger (`UsageLoader`).
//
// Threading: thread-safe.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <unordered_map>

#include "control/admission_store.h"

namespace gantry::control {

struct BreakerSpec {
  std::string model;
  BreakerConfig config;
};

class MemoryAdmissionStore final : public AdmissionStore {
public:
  MemoryAdmissionStore(const Clock &clock, std::vector<BreakerSpec> breakers, UsageLoader usage);

  Result<AdmissionLease> reserve(const AdmissionAsk &ask, RateSnapshot *refusal) override;
  Status precheck(const AdmissionAsk &ask, RateSnapshot *refusal) override;
  std::vector<BudgetAlert> settle(const AdmissionLease &lease, const Usage &used) override;
  bool settles_in_process() const override { return true; }
  void set_budgets(const std::vector<Budget> &budgets) override;
  std::vector<BudgetState> budgets() override;
  std::vector<std::string> breaker_models() const override;
  std::optional<BreakerState> breaker_state(const std::string &model) override;
  bool reset_breaker(const std::string &model) override;

  size_t leases_held();

private:
  struct Held {
    RateLease rate;
    QuotaLease quota;
  };

  std::mutex mu_; // serialises reserve (check, take, roll back) against settle
  MemoryRateLimiter limiter_;
  QuotaTracker quotas_;
  std::map<std::string, std::unique_ptr<SpendBreaker>> breakers_;
  std::unordered_map<uint64_t, Held> held_; // bounded by the requests in flight
  uint64_t next_id_ = 1;
};

} // namespace gantry::control
