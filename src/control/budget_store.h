// The BudgetStore port: budgets per key or project and the alert thresholds already fired. The
// embedded adapter is SQLite (store/sqlite/sqlite_store.h); what every adapter must do is
// tests/contract/budget_store_contract_test.cpp.
//
// Threading: every method is thread-safe and may block (see store.h). Budgets are read at
// start-up and after an admin change; alerts are recorded on the alert thread.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "control/store.h"
#include "core/result.h"

namespace gantry::control {

class BudgetStore {
public:
  virtual ~BudgetStore() = default;

  // Insert or replace, keyed by (owner kind, owner id, period).
  virtual Status put_budget(const Budget &budget) = 0;
  // kNotFound when no such budget exists.
  virtual Status delete_budget(OwnerKind kind, std::string_view owner_id, Period period) = 0;
  // Ordered by (owner kind, owner id, period).
  virtual Result<std::vector<Budget>> list_budgets() = 0;
  // Records that `threshold` (percent) fired for this owner in the period starting at
  // `period_start` (unix seconds). True the first time only, across restarts and processes.
  virtual Result<bool> record_alert(OwnerKind kind, std::string_view owner_id, int64_t period_start,
                                    int threshold) = 0;

  // A read and a write round trip to the backend, for /readyz.
  virtual Status check() = 0;
};

} // namespace gantry::control
