// SqliteStore's BudgetStore half: budgets and budget_alerts.
#include "store/sqlite/sqlite_store.h"

#include "store/sqlite/sqlite_db.h"
#include "store/sqlite/sqlite_schema.h"
#include "store/sqlite/sqlite_store_impl.h"

#include <mutex>

namespace gantry::control {

Status SqliteStore::put_budget(const Budget &b) {
  std::lock_guard lock(mu_);
  GANTRY_ASSIGN_OR_RETURN(
      Query q, impl_->query("INSERT INTO budgets(owner_kind, owner_id, period, token_quota, "
                            "spend_limit_usd, alert_thresholds) VALUES (?, ?, ?, ?, ?, ?) "
                            "ON CONFLICT(owner_kind, owner_id, period) DO UPDATE SET "
                            "token_quota = excluded.token_quota, "
                            "spend_limit_usd = excluded.spend_limit_usd, "
                            "alert_thresholds = excluded.alert_thresholds"));
  return q.text(to_string(b.owner_kind))
      .text(b.owner_id)
      .text(to_string(b.period))
      .i64(b.token_quota)
      .f64(b.spend_limit_usd)
      .text(thresholds_text(b.alert_thresholds))
      .run();
}

Status SqliteStore::delete_budget(OwnerKind kind, std::string_view owner_id, Period period) {
  std::lock_guard lock(mu_);
  GANTRY_ASSIGN_OR_RETURN(
      Query q,
      impl_->query("DELETE FROM budgets WHERE owner_kind = ? AND owner_id = ? AND period = ?"));
  GANTRY_TRY(q.text(to_string(kind)).text(owner_id).text(to_string(period)).run());
  if (q.changes() == 0) {
    return Err(ErrorCode::kNotFound, "no " + std::string(to_string(period)) + " budget for " +
                                         std::string(to_string(kind)) + " '" +
                                         std::string(owner_id) + "'");
  }
  return Ok();
}

Result<std::vector<Budget>> SqliteStore::list_budgets() {
  std::lock_guard lock(mu_);
  GANTRY_ASSIGN_OR_RETURN(
      Query q, impl_->query("SELECT owner_kind, owner_id, period, token_quota, spend_limit_usd, "
                            "alert_thresholds FROM budgets ORDER BY owner_kind, owner_id, period"));
  std::vector<Budget> out;
  for (;;) {
    GANTRY_ASSIGN_OR_RETURN(bool row, q.step());
    if (!row)
      return out;
    Budget b;
    auto kind = owner_kind_from(q.col_text(0));
    auto period = period_from(q.col_text(2));
    if (!kind || !period) {
      return Error::corrupt("database: budget row with owner kind '" + q.col_text(0) +
                            "' and period '" + q.col_text(2) + "'");
    }
    b.owner_kind = *kind;
    b.owner_id = q.col_text(1);
    b.period = *period;
    b.token_quota = q.col_i64(3);
    b.spend_limit_usd = q.col_f64(4);
    GANTRY_ASSIGN_OR_RETURN(b.alert_thresholds, parse_thresholds(q.col_text(5)));
    out.push_back(std::move(b));
  }
}

Result<bool> SqliteStore::record_alert(OwnerKind kind, std::string_view owner_id,
                                       int64_t period_start, int threshold) {
  std::lock_guard lock(mu_);
  // fired_at is only for people reading the table, so the database's clock is good enough.
  GANTRY_ASSIGN_OR_RETURN(
      Query q, impl_->query("INSERT INTO budget_alerts(owner_kind, owner_id, period_start, "
                            "threshold, fired_at) VALUES (?, ?, ?, ?, unixepoch()) "
                            "ON CONFLICT DO NOTHING"));
  GANTRY_TRY(q.text(to_string(kind)).text(owner_id).i64(period_start).i64(threshold).run());
  return q.changes() == 1;
}

} // namespace gantry::control
