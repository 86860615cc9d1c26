#include "control/memory_admission_store.h"

#include <algorithm>

namespace gantry::control {

MemoryAdmissionStore::MemoryAdmissionStore(const Clock &clock, std::vector<BreakerSpec> breakers,
                                           UsageLoader usage)
    : limiter_(clock), quotas_(std::move(usage), clock) {
  for (auto &b : breakers)
    breakers_.emplace(b.model, std::make_unique<SpendBreaker>(b.model, b.config, clock));
}

Status MemoryAdmissionStore::precheck(const AdmissionAsk &ask, RateSnapshot *refusal) {
  if (ask.rules.empty())
    return Ok();
  std::lock_guard<std::mutex> lk(mu_);
  RateDecision d = limiter_.check(ask.rules);
  if (d.allowed)
    return Ok();
  if (refusal)
    *refusal = d.snapshot;
  Error e{ErrorCode::kRateLimited, d.message, {}};
  e.retry_after_ms = std::max<int64_t>(d.retry_after.count(), 1);
  return Err(std::move(e));
}

Result<AdmissionLease> MemoryAdmissionStore::reserve(const AdmissionAsk &ask,
                                                     RateSnapshot *refusal) {
  std::lock_guard<std::mutex> lk(mu_);
  auto bit = breakers_.find(ask.model);
  if (bit != breakers_.end()) {
    GANTRY_TRY(bit->second->check());
  }
  Held held;
  AdmissionLease lease;
  if (!ask.rules.empty()) {
    RateDecision d = limiter_.acquire(ask.rules, ask.tokens);
    if (!d.allowed) {
      if (refusal)
        *refusal = d.snapshot;
      Error e{ErrorCode::kRateLimited, d.message, {}};
      e.retry_after_ms = std::max<int64_t>(d.retry_after.count(), 1);
      return Err(std::move(e));
    }
    held.rate = d.lease;
    lease.snapshot = d.snapshot;
  }
  if ((!ask.key_id.empty() || !ask.project.empty()) && quotas_.has_budgets()) {
    auto q = quotas_.reserve(ask.key_id, ask.project, ask.tokens, ask.usd);
    if (!q) {
      limiter_.rollback(held.rate); // all or nothing: the rate scopes get everything back
      return Err(q.take_error());
    }
    held.quota = std::move(q).value();
  }
  lease.id = next_id_++;
  lease.model = ask.model;
  lease.tokens = ask.tokens;
  lease.usd = ask.usd;
  held_.emplace(lease.id, std::move(held));
  return lease;
}

std::vector<BudgetAlert> MemoryAdmissionStore::settle(const AdmissionLease &lease,
                                                      const Usage &used) {
  std::lock_guard<std::mutex> lk(mu_);
  auto it = held_.find(lease.id);
  if (it == held_.end())
    return {};
  Held held = std::move(it->second);
  held_.erase(it);
  limiter_.release(held.rate, used.tokens);
  auto alerts = quotas_.commit(held.quota, used.tokens, used.usd);
  if (auto bit = breakers_.find(lease.model); bit != breakers_.end())
    bit->second->record(used.usd);
  return alerts;
}

void MemoryAdmissionStore::set_budgets(const std::vector<Budget> &budgets) {
  quotas_.set_budgets(budgets);
}

std::vector<BudgetState> MemoryAdmissionStore::budgets() { return quotas_.snapshot(); }

std::vector<std::string> MemoryAdmissionStore::breaker_models() const {
  std::vector<std::string> out;
  for (const auto &[name, b] : breakers_)
    out.push_back(name);
  return out;
}

std::optional<BreakerState> MemoryAdmissionStore::breaker_state(const std::string &model) {
  auto it = breakers_.find(model);
  if (it == breakers_.end())
    return std::nullopt;
  return it->second->state();
}

bool MemoryAdmissionStore::reset_breaker(const std::string &model) {
  auto it = breakers_.find(model);
  if (it == breakers_.end())
    return false;
  it->second->reset();
  return true;
}

size_t MemoryAdmissionStore::leases_held() {
  std::lock_guard<std::mutex> lk(mu_);
  return held_.size();
}

} // namespace gantry::control
