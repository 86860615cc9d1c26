#include "control/quota.h"

#include "core/time_format.h"

#include <algorithm>
#include <ctime>

namespace gantry::control {

int64_t period_start(Period period, int64_t unix_seconds) {
  if (period == Period::kDay)
    return unix_seconds - (((unix_seconds % 86400) + 86400) % 86400);
  return utc_month_start(unix_seconds);
}

void QuotaTracker::set_budgets(const std::vector<Budget> &budgets) {
  std::lock_guard<std::mutex> lk(mu_);
  std::map<OwnerKey, State> next;
  for (const auto &b : budgets) {
    OwnerKey k{b.owner_kind, b.owner_id, b.period};
    auto it = states_.find(k);
    State s = it != states_.end() ? it->second : State{};
    s.budget = b;
    std::sort(s.budget.alert_thresholds.begin(), s.budget.alert_thresholds.end());
    next[k] = std::move(s);
  }
  states_ = std::move(next);
}

bool QuotaTracker::has_budgets() const {
  std::lock_guard<std::mutex> lk(mu_);
  return !states_.empty();
}

Status QuotaTracker::roll(State &s, int64_t now) {
  const int64_t start = period_start(s.budget.period, now);
  if (s.loaded && s.period_start == start)
    return Ok();
  if (!s.loaded) {
    // First sight since start-up: the period so far is in the ledger.
    GANTRY_ASSIGN_OR_RETURN(auto totals,
                            usage_(s.budget.owner_kind, s.budget.owner_id, start * 1000));
    s.used_tokens = totals.input_tokens + totals.output_tokens;
    s.used_usd = totals.cost_usd;
    s.loaded = true;
  } else {
    // A new period: this process has counted everything since it started.
    s.used_tokens = 0;
    s.used_usd = 0;
  }
  s.period_start = start;
  return Ok();
}

Result<QuotaLease> QuotaTracker::reserve(const std::string &key_id, const std::string &project,
                                         int64_t tokens, double usd) {
  QuotaLease lease;
  lease.tokens = tokens;
  lease.usd = usd;
  const int64_t now = clock_.unix_seconds();
  std::lock_guard<std::mutex> lk(mu_);
  std::vector<State *> hit;
  for (auto &[k, s] : states_) {
    const auto &[kind, owner, period] = k;
    const bool mine = (kind == OwnerKind::kKey && !key_id.empty() && owner == key_id) ||
                      (kind == OwnerKind::kProject && !project.empty() && owner == project);
    if (!mine)
      continue;
    GANTRY_TRY(roll(s, now));
    const Budget &b = s.budget;
    if (b.token_quota > 0 && s.used_tokens + s.reserved_tokens >= b.token_quota) {
      return Err(ErrorCode::kQuotaExceeded,
                 "You exceeded the " + std::string(to_string(b.period)) + "ly token quota of " +
                     std::string(to_string(kind)) + " '" + owner + "' (" +
                     std::to_string(b.token_quota) + " tokens). It resets at the start of the " +
                     "next " + std::string(to_string(b.period)) + " (UTC).");
    }
    if (b.spend_limit_usd > 0 && s.used_usd + s.reserved_usd >= b.spend_limit_usd) {
      char buf[64];
      std::snprintf(buf, sizeof(buf), "$%.4f", b.spend_limit_usd);
      return Err(ErrorCode::kQuotaExceeded, "You exceeded the " + std::string(to_string(b.period)) +
                                                "ly budget of " + std::string(to_string(kind)) +
                                                " '" + owner + "' (" + buf +
                                                "). It resets at the start of the next " +
                                                std::string(to_string(b.period)) + " (UTC).");
    }
    hit.push_back(&s);
  }
  for (State *s : hit) {
    s->reserved_tokens += tokens;
    s->reserved_usd += usd;
    if (lease.owners.size() < 8) {
      lease.period_starts[lease.owners.size()] = s->period_start;
      lease.owners.emplace_back(s->budget.owner_kind, s->budget.owner_id, s->budget.period);
    }
  }
  lease.held = true;
  return lease;
}

std::vector<BudgetAlert> QuotaTracker::commit(QuotaLease &lease, int64_t tokens, double usd) {
  std::vector<BudgetAlert> alerts;
  if (!lease.held)
    return alerts;
  lease.held = false;
  const int64_t now = clock_.unix_seconds();
  std::lock_guard<std::mutex> lk(mu_);
  for (size_t i = 0; i < lease.owners.size(); ++i) {
    auto it = states_.find(lease.owners[i]);
    if (it == states_.end())
      continue; // the budget was removed meanwhile
    State &s = it->second;
    // A reservation made in the previous period was already dropped by the reset.
    if (s.period_start == lease.period_starts[i]) {
      s.reserved_tokens = std::max<int64_t>(0, s.reserved_tokens - lease.tokens);
      s.reserved_usd = std::max(0.0, s.reserved_usd - lease.usd);
    }
    if (!roll(s, now))
      continue;
    const double before_usd = s.used_usd;
    const int64_t before_tok = s.used_tokens;
    s.used_tokens += tokens;
    s.used_usd += usd;
    const Budget &b = s.budget;
    for (int t : b.alert_thresholds) {
      bool crossed = false;
      if (b.spend_limit_usd > 0) {
        const double line = b.spend_limit_usd * t / 100.0;
        crossed = before_usd < line && s.used_usd >= line;
      } else if (b.token_quota > 0) {
        const double line = static_cast<double>(b.token_quota) * t / 100.0;
        crossed =
            static_cast<double>(before_tok) < line && static_cast<double>(s.used_tokens) >= line;
      }
      if (crossed)
        alerts.push_back({b, s.period_start, t, s.used_usd, s.used_tokens});
    }
  }
  return alerts;
}

std::vector<BudgetState> QuotaTracker::snapshot() {
  std::vector<BudgetState> out;
  const int64_t now = clock_.unix_seconds();
  std::lock_guard<std::mutex> lk(mu_);
  for (auto &[k, s] : states_) {
    (void)roll(s, now);
    out.push_back(
        {s.budget, s.period_start, s.used_tokens, s.used_usd, s.reserved_tokens, s.reserved_usd});
  }
  return out;
}

} // namespace gantry::control
