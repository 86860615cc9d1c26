// The UsageLedger port: one row per request that reached the inference path, keyed by the
// server's call id, with totals for budgets and reports. The embedded adapter is SQLite
// (store/sqlite/sqlite_store.h); what every adapter must do is
// tests/contract/usage_ledger_contract_test.cpp.
//
// Threading: every method is thread-safe and may block (see store.h); rows are batched by
// LedgerWriter, never written on a request's path.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "control/store.h"
#include "core/result.h"

namespace gantry::control {

class UsageLedger {
public:
  virtual ~UsageLedger() = default;

  // One transaction: the rows and their roll-ups. Rows whose request_id is already present are
  // ignored (a retried flush, or a job's usage written twice, counts once).
  virtual Status append_usage(const std::vector<UsageRecord> &rows) = 0;
  // Totals for one owner from `from_ms` (inclusive, unix ms) on.
  virtual Result<UsageTotals> usage_of(OwnerKind kind, std::string_view owner_id,
                                       int64_t from_ms) = 0;
  // Totals grouped by key, project or model over [from_ms, to_ms), ordered by the group.
  virtual Result<std::vector<UsageGroup>> usage_report(GroupBy group_by, int64_t from_ms,
                                                       int64_t to_ms) = 0;
  virtual Result<int64_t> count_usage() = 0;
  // Retention: deletes the raw rows created before `before_ms`; the daily roll-ups (usage_daily,
  // what reports over long periods read) are kept. Returns how many rows went.
  virtual Result<int64_t> prune_usage(int64_t before_ms) = 0;

  // A read and a write round trip to the backend, for /readyz.
  virtual Status check() = 0;
};

} // namespace gantry::control
