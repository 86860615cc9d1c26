// Token quotas and spend budgets per key and per project over a UTC day or month.
//
// Reserve-then-commit: admission reserves the request's worst case (prompt + max_tokens, and its
// price) and is refused only when what is used plus what is reserved already reaches the limit.
// So any number of concurrent requests overshoot a budget by at most one request's reservation,
// and an admitted request is never cut off mid-generation. Counters live in memory (one mutex,
// no database read on the request path except the first time an owner is seen after start-up,
// when its period's usage is loaded from the ledger).
//
// Threshold crossings (50/80/100% by default) are returned by commit() for the AlertDispatcher,
// which makes them exactly-once per period through BudgetStore::record_alert.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

#include "control/store.h"
#include "control/usage_ledger.h"
#include "core/clock.h"

namespace gantry::control {

// Start of the UTC day or month containing `unix_seconds`.
int64_t period_start(Period period, int64_t unix_seconds);

// The usage an owner has in the ledger since `from_ms`: how a counter is seeded the first time its
// owner is seen after start-up.
using UsageLoader =
    std::function<Result<UsageTotals>(OwnerKind kind, std::string_view owner_id, int64_t from_ms)>;

struct QuotaLease {
  std::vector<std::tuple<OwnerKind, std::string, Period>> owners;
  int64_t period_starts[8] = {};
  int64_t tokens = 0;
  double usd = 0;
  bool held = false;
};

struct BudgetAlert {
  Budget budget;
  int64_t period_start = 0;
  int threshold = 0; // percent
  double used_usd = 0;
  int64_t used_tokens = 0;
};

struct BudgetState {
  Budget budget;
  int64_t period_start = 0;
  int64_t used_tokens = 0;
  double used_usd = 0;
  int64_t reserved_tokens = 0;
  double reserved_usd = 0;
};

class QuotaTracker {
public:
  QuotaTracker(UsageLoader usage, const Clock &clock) : usage_(std::move(usage)), clock_(clock) {}
  QuotaTracker(UsageLedger &ledger, const Clock &clock)
      : QuotaTracker([&ledger](OwnerKind k, std::string_view id,
                               int64_t from_ms) { return ledger.usage_of(k, id, from_ms); },
                     clock) {}

  // Replaces the budget set (start-up, and after an admin change); usage counters are kept.
  void set_budgets(const std::vector<Budget> &budgets);
  bool has_budgets() const;

  // kQuotaExceeded naming the owner and the limit when a budget of the key or its project is
  // spent. kIo if the store cannot be read the first time an owner is seen.
  Result<QuotaLease> reserve(const std::string &key_id, const std::string &project, int64_t tokens,
                             double usd);
  // The request ended: the reservation becomes the actual usage. Returns the thresholds crossed.
  std::vector<BudgetAlert> commit(QuotaLease &lease, int64_t tokens, double usd);

  std::vector<BudgetState> snapshot();

private:
  using OwnerKey = std::tuple<OwnerKind, std::string, Period>;
  struct State {
    Budget budget;
    int64_t period_start = -1;
    int64_t used_tokens = 0;
    double used_usd = 0;
    int64_t reserved_tokens = 0;
    double reserved_usd = 0;
    bool loaded = false;
  };
  Status roll(State &s, int64_t now); // loads or resets the counters for the current period

  UsageLoader usage_;
  const Clock &clock_;
  mutable std::mutex mu_;
  std::map<OwnerKey, State> states_;
};

} // namespace gantry::control
