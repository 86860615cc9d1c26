// SqliteStore's UsageLedger half: the usage_ledger rows and their usage_daily roll-ups.
#include "store/sqlite/sqlite_store.h"

#include "store/sqlite/sqlite_db.h"
#include "store/sqlite/sqlite_record.h"
#include "store/sqlite/sqlite_schema.h"
#include "store/sqlite/sqlite_store_impl.h"

#include <algorithm>
#include <mutex>
#include <string_view>
#include <vector>

namespace gantry::control {
namespace {

UsageTotals read_totals(const Query &q, int first) {
  return {q.col_i64(first), q.col_i64(first + 1), q.col_i64(first + 2), q.col_f64(first + 3)};
}

const Columns<UsageRecord> &usage_columns() {
  static const Columns<UsageRecord> c{
      col<&UsageRecord::request_id>("request_id"),
      col<&UsageRecord::client_request_id>("client_request_id"),
      col<&UsageRecord::key_id>("key_id"),
      col<&UsageRecord::project>("project"),
      col<&UsageRecord::model>("model"),
      col<&UsageRecord::endpoint>("endpoint"),
      col<&UsageRecord::input_tokens>("input_tokens"),
      col<&UsageRecord::output_tokens>("output_tokens"),
      col<&UsageRecord::cached_tokens>("cached_tokens"),
      col<&UsageRecord::cached>("cached"),
      col<&UsageRecord::latency_ms>("latency_ms"),
      col<&UsageRecord::ttft_ms>("ttft_ms"),
      col<&UsageRecord::cost_usd>("cost_usd"),
      col<&UsageRecord::status>("status"),
      col<&UsageRecord::finish_reason>("finish_reason"),
      col<&UsageRecord::created_at_ms>("created_at_ms"),
  };
  return c;
}

// Rows written in one batch mostly share their day, key, project and model (a busy key's calls
// in the last few milliseconds), so their roll-up is summed here and written once per group:
// with one upsert per row the ledger thread ran a quarter more instructions (callgrind).
struct DailyGroup {
  int64_t day = 0;           // days since the epoch, as SQLite's date(ms / 1000, 'unixepoch')
  int64_t created_at_ms = 0; // one of the group's rows: the SQL derives the day from it
  std::string_view key_id, project, model;
  int64_t requests = 0, input_tokens = 0, output_tokens = 0;
  double cost_usd = 0;
};

int64_t day_of(int64_t created_at_ms) {
  const int64_t secs = created_at_ms / 1000; // SQLite's integer division truncates like C++'s
  return secs >= 0 ? secs / 86400 : -((-secs + 86399) / 86400);
}

} // namespace

Status SqliteStore::append_usage(const std::vector<UsageRecord> &rows) {
  if (rows.empty())
    return Ok();
  std::lock_guard lock(mu_);
  Impl::Transaction tx(*impl_);
  GANTRY_TRY(tx.begin());
  static const std::string insert = "INSERT INTO usage_ledger(" + usage_columns().names() +
                                    ") VALUES (" + usage_columns().placeholders() +
                                    ") ON CONFLICT(request_id) DO NOTHING";
  std::vector<DailyGroup> groups; // few: a linear search beats hashing them
  for (const auto &r : rows) {
    GANTRY_ASSIGN_OR_RETURN(Query ins, impl_->query(insert.c_str()));
    GANTRY_TRY(usage_columns().bind(ins, r).run());
    // A row already in the ledger was counted in its roll-up when it was first written.
    if (ins.changes() == 0)
      continue;
    const int64_t day = day_of(r.created_at_ms);
    auto g = std::find_if(groups.begin(), groups.end(), [&](const DailyGroup &x) {
      return x.day == day && x.key_id == r.key_id && x.project == r.project && x.model == r.model;
    });
    if (g == groups.end())
      g = groups.insert(groups.end(),
                        DailyGroup{day, r.created_at_ms, r.key_id, r.project, r.model});
    ++g->requests;
    g->input_tokens += r.input_tokens;
    g->output_tokens += r.output_tokens;
    g->cost_usd += r.cost_usd;
  }
  for (const DailyGroup &g : groups) {
    GANTRY_ASSIGN_OR_RETURN(
        Query day, impl_->query("INSERT INTO usage_daily(day, key_id, project, model, requests, "
                                "input_tokens, output_tokens, cost_usd) "
                                "VALUES (date(?1 / 1000, 'unixepoch'), ?2, ?3, ?4, ?5, ?6, ?7, ?8) "
                                "ON CONFLICT(day, key_id, project, model) DO UPDATE SET "
                                "requests = requests + excluded.requests, "
                                "input_tokens = input_tokens + excluded.input_tokens, "
                                "output_tokens = output_tokens + excluded.output_tokens, "
                                "cost_usd = cost_usd + excluded.cost_usd"));
    GANTRY_TRY(day.i64(g.created_at_ms)
                   .text_ref(g.key_id)
                   .text_ref(g.project)
                   .text_ref(g.model)
                   .i64(g.requests)
                   .i64(g.input_tokens)
                   .i64(g.output_tokens)
                   .f64(g.cost_usd)
                   .run());
  }
  return tx.commit();
}

Result<UsageTotals> SqliteStore::usage_of(OwnerKind kind, std::string_view owner_id,
                                          int64_t from_ms) {
  std::lock_guard lock(mu_);
  // Column names cannot be bound, so each owner kind has its own statement.
  const char *sql =
      kind == OwnerKind::kKey
          ? "SELECT count(*), coalesce(sum(input_tokens), 0), coalesce(sum(output_tokens), 0), "
            "total(cost_usd) FROM usage_ledger WHERE key_id = ? AND created_at_ms >= ?"
          : "SELECT count(*), coalesce(sum(input_tokens), 0), coalesce(sum(output_tokens), 0), "
            "total(cost_usd) FROM usage_ledger WHERE project = ? AND created_at_ms >= ?";
  GANTRY_ASSIGN_OR_RETURN(Query q, impl_->query(sql));
  q.text(owner_id).i64(from_ms);
  GANTRY_TRY(q.step());
  return read_totals(q, 0);
}

Result<std::vector<UsageGroup>> SqliteStore::usage_report(GroupBy group_by, int64_t from_ms,
                                                          int64_t to_ms) {
  const char *sql = nullptr;
  switch (group_by) {
  case GroupBy::kKey:
    sql = "SELECT key_id, count(*), sum(input_tokens), sum(output_tokens), total(cost_usd) "
          "FROM usage_ledger WHERE created_at_ms >= ? AND created_at_ms < ? "
          "GROUP BY key_id ORDER BY key_id";
    break;
  case GroupBy::kProject:
    sql = "SELECT project, count(*), sum(input_tokens), sum(output_tokens), total(cost_usd) "
          "FROM usage_ledger WHERE created_at_ms >= ? AND created_at_ms < ? "
          "GROUP BY project ORDER BY project";
    break;
  case GroupBy::kModel:
    sql = "SELECT model, count(*), sum(input_tokens), sum(output_tokens), total(cost_usd) "
          "FROM usage_ledger WHERE created_at_ms >= ? AND created_at_ms < ? "
          "GROUP BY model ORDER BY model";
    break;
  }
  std::lock_guard lock(mu_);
  GANTRY_ASSIGN_OR_RETURN(Query q, impl_->query(sql));
  q.i64(from_ms).i64(to_ms);
  std::vector<UsageGroup> out;
  for (;;) {
    GANTRY_ASSIGN_OR_RETURN(bool row, q.step());
    if (!row)
      return out;
    out.push_back({q.col_text(0), read_totals(q, 1)});
  }
}

Result<int64_t> SqliteStore::count_usage() {
  std::lock_guard lock(mu_);
  GANTRY_ASSIGN_OR_RETURN(Query q, impl_->query("SELECT count(*) FROM usage_ledger"));
  GANTRY_TRY(q.step());
  return q.col_i64(0);
}

Result<int64_t> SqliteStore::prune_usage(int64_t before_ms) {
  std::lock_guard lock(mu_);
  GANTRY_ASSIGN_OR_RETURN(Query q,
                          impl_->query("DELETE FROM usage_ledger WHERE created_at_ms < ?"));
  GANTRY_TRY(q.i64(before_ms).run());
  return q.changes();
}

Result<std::vector<DailyUsage>> SqliteStore::usage_daily(std::string_view from_day,
                                                         std::string_view to_day) {
  std::lock_guard lock(mu_);
  GANTRY_ASSIGN_OR_RETURN(
      Query q, impl_->query("SELECT day, key_id, project, model, requests, input_tokens, "
                            "output_tokens, cost_usd FROM usage_daily WHERE day >= ? AND day < ? "
                            "ORDER BY day, key_id, project, model"));
  q.text(from_day).text(to_day);
  std::vector<DailyUsage> out;
  for (;;) {
    GANTRY_ASSIGN_OR_RETURN(bool row, q.step());
    if (!row)
      return out;
    out.push_back({q.col_text(0), q.col_text(1), q.col_text(2), q.col_text(3), read_totals(q, 4)});
  }
}

} // namespace gantry::control
