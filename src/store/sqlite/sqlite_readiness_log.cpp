#include "store/sqlite/sqlite_readiness_log.h"

#include <algorithm>

#include "store/sqlite/sqlite_db.h"

namespace gantry::dashboard {

using control::Db;
using control::Query;
using control::Transaction;

Result<std::unique_ptr<SqliteReadinessLog>> SqliteReadinessLog::open(const std::string &db_path) {
  GANTRY_ASSIGN_OR_RETURN(auto db, Db::open(db_path));
  return std::unique_ptr<SqliteReadinessLog>(new SqliteReadinessLog(std::move(db)));
}

SqliteReadinessLog::SqliteReadinessLog(std::unique_ptr<Db> db) : db_(std::move(db)) {}
SqliteReadinessLog::~SqliteReadinessLog() = default;

Status SqliteReadinessLog::append(const std::vector<ReadinessSample> &samples) {
  std::lock_guard<std::mutex> lk(mu_);
  GANTRY_ASSIGN_OR_RETURN(Transaction tx, Transaction::begin(*db_));
  for (const auto &s : samples) {
    GANTRY_ASSIGN_OR_RETURN(
        Query q, db_->query("INSERT INTO readiness_samples(model, t_ms, state, latency_ms) "
                            "VALUES (?, ?, ?, ?)"));
    GANTRY_TRY(
        q.text(s.model).i64(s.t_ms).i64(static_cast<int64_t>(s.state)).f64(s.latency_ms).run());
  }
  return tx.commit();
}

Result<std::vector<UptimeCount>> SqliteReadinessLog::counts(int64_t from_ms) {
  std::lock_guard<std::mutex> lk(mu_);
  GANTRY_ASSIGN_OR_RETURN(
      Query q, db_->query("SELECT model, SUM(state <> 0), COUNT(*) FROM readiness_samples "
                          "WHERE t_ms >= ? GROUP BY model ORDER BY model"));
  q.i64(from_ms);
  std::vector<UptimeCount> out;
  while (true) {
    GANTRY_ASSIGN_OR_RETURN(bool row, q.step());
    if (!row)
      break;
    out.push_back({q.col_text(0), q.col_i64(1), q.col_i64(2)});
  }
  return out;
}

Result<std::vector<ReadinessSample>> SqliteReadinessLog::down_since(int64_t from_ms, size_t limit) {
  std::lock_guard<std::mutex> lk(mu_);
  GANTRY_ASSIGN_OR_RETURN(Query q,
                          db_->query("SELECT model, t_ms, latency_ms FROM readiness_samples "
                                     "WHERE state = 0 AND t_ms >= ? ORDER BY t_ms DESC LIMIT ?"));
  q.i64(from_ms).i64(static_cast<int64_t>(std::min<size_t>(limit, INT64_MAX)));
  std::vector<ReadinessSample> out;
  while (true) {
    GANTRY_ASSIGN_OR_RETURN(bool row, q.step());
    if (!row)
      break;
    out.push_back({q.col_text(0), q.col_i64(1), ModelState::kDown, q.col_f64(2)});
  }
  std::reverse(out.begin(), out.end());
  return out;
}

Status SqliteReadinessLog::purge(int64_t before_ms) {
  std::lock_guard<std::mutex> lk(mu_);
  GANTRY_ASSIGN_OR_RETURN(Query q, db_->query("DELETE FROM readiness_samples WHERE t_ms < ?"));
  return q.i64(before_ms).run();
}

} // namespace gantry::dashboard
