#include "store/postgres/pg_store.h"

namespace gantry::store {
namespace {

using control::ApiKey;
using control::Budget;
using control::OwnerKind;
using control::Period;
using control::Project;
using control::UsageGroup;
using control::UsageRecord;
using control::UsageTotals;

// api_keys.models: the names joined by U+001F ("" = all models; check_models keeps the
// separator out of names). thresholds_text/parse_thresholds: control/store.h.
std::string join_models(const std::vector<std::string> &models) {
  return control::join_list(models, '\x1f');
}

constexpr const char *kKeyColumns =
    "id, project, name, hash, prev_hash, prev_expires_at, models, rpm, tpm, max_concurrent, "
    "created_at, expires_at, revoked_at, last_used_at";

ApiKey read_key(const PgResult &r, int i) {
  ApiKey k;
  k.id = r.text(i, 0);
  k.project = r.text(i, 1);
  k.name = r.text(i, 2);
  k.hash = r.text(i, 3);
  k.prev_hash = r.text(i, 4);
  k.prev_expires_at = r.i64(i, 5);
  k.models = control::split_list(r.text(i, 6), '\x1f');
  k.limits = {r.i64(i, 7), r.i64(i, 8), r.i64(i, 9)};
  k.created_at = r.i64(i, 10);
  k.expires_at = r.i64(i, 11);
  k.revoked_at = r.i64(i, 12);
  k.last_used_at = r.i64(i, 13);
  return k;
}

PgParams key_params(const ApiKey &k) {
  PgParams p;
  p.text(k.id)
      .text(k.project)
      .text(k.name)
      .text(k.hash)
      .text(k.prev_hash)
      .i64(k.prev_expires_at)
      .text(join_models(k.models))
      .i64(k.limits.rpm)
      .i64(k.limits.tpm)
      .i64(k.limits.max_concurrent)
      .i64(k.created_at)
      .i64(k.expires_at)
      .i64(k.revoked_at)
      .i64(k.last_used_at);
  return p;
}

Project read_project(const PgResult &r, int i) {
  Project p;
  p.id = r.text(i, 0);
  p.limits = {r.i64(i, 1), r.i64(i, 2), r.i64(i, 3)};
  p.created_at = r.i64(i, 4);
  return p;
}

UsageTotals read_totals(const PgResult &r, int i, int first) {
  return {r.i64(i, first), r.i64(i, first + 1), r.i64(i, first + 2), r.f64(i, first + 3)};
}

Status bump_generation(PgConn &c) {
  GANTRY_TRY(c.exec("UPDATE meta SET v = v + 1 WHERE k = 'keys_generation'"));
  return Ok();
}

} // namespace

Status PgStore::put_project(const Project &p) {
  return pool_->transaction([&](PgConn &c) -> Status {
    // An update keeps the creation time.
    GANTRY_TRY(c.exec("INSERT INTO projects(id, rpm, tpm, max_concurrent, created_at) "
                      "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO UPDATE SET "
                      "rpm = excluded.rpm, tpm = excluded.tpm, "
                      "max_concurrent = excluded.max_concurrent",
                      PgParams()
                          .text(p.id)
                          .i64(p.limits.rpm)
                          .i64(p.limits.tpm)
                          .i64(p.limits.max_concurrent)
                          .i64(p.created_at)));
    return bump_generation(c);
  });
}

Result<std::optional<Project>> PgStore::get_project(std::string_view id) {
  GANTRY_ASSIGN_OR_RETURN(
      PgResult r, pool_->exec("SELECT id, rpm, tpm, max_concurrent, created_at FROM projects "
                              "WHERE id = $1",
                              PgParams().text(id)));
  if (r.rows() == 0)
    return std::optional<Project>();
  return std::optional<Project>(read_project(r, 0));
}

Result<std::vector<Project>> PgStore::list_projects() {
  GANTRY_ASSIGN_OR_RETURN(PgResult r, pool_->exec("SELECT id, rpm, tpm, max_concurrent, "
                                                  "created_at FROM projects ORDER BY id"));
  std::vector<Project> out;
  for (int i = 0; i < r.rows(); ++i)
    out.push_back(read_project(r, i));
  return out;
}

Status PgStore::insert_key(const ApiKey &k) {
  GANTRY_TRY(control::check_models(k.models));
  return pool_->transaction([&](PgConn &c) -> Status {
    GANTRY_ASSIGN_OR_RETURN(
        PgResult r,
        c.exec(std::string("INSERT INTO api_keys(") + kKeyColumns +
                   ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) "
                   "ON CONFLICT (id) DO NOTHING",
               key_params(k)));
    if (r.affected() == 0)
      return Error::invalid("API key id '" + k.id + "' already exists", "id");
    return bump_generation(c);
  });
}

Status PgStore::update_key(const ApiKey &k) {
  GANTRY_TRY(control::check_models(k.models));
  return pool_->transaction([&](PgConn &c) -> Status {
    // Every column but the id; last_used_at never moves backwards.
    GANTRY_ASSIGN_OR_RETURN(
        PgResult r,
        c.exec("UPDATE api_keys SET project = $2, name = $3, hash = $4, prev_hash = $5, "
               "prev_expires_at = $6, models = $7, rpm = $8, tpm = $9, max_concurrent = $10, "
               "created_at = $11, expires_at = $12, revoked_at = $13, "
               "last_used_at = greatest(last_used_at, $14) WHERE id = $1",
               key_params(k)));
    if (r.affected() == 0)
      return Err(ErrorCode::kNotFound, "no API key with id '" + k.id + "'");
    return bump_generation(c);
  });
}

Result<std::optional<ApiKey>> PgStore::get_key(std::string_view id) {
  GANTRY_ASSIGN_OR_RETURN(
      PgResult r, pool_->exec(std::string("SELECT ") + kKeyColumns + " FROM api_keys WHERE id = $1",
                              PgParams().text(id)));
  if (r.rows() == 0)
    return std::optional<ApiKey>();
  return std::optional<ApiKey>(read_key(r, 0));
}

Result<std::vector<ApiKey>> PgStore::list_keys(std::string_view project) {
  const std::string base = std::string("SELECT ") + kKeyColumns + " FROM api_keys ";
  GANTRY_ASSIGN_OR_RETURN(
      PgResult r, project.empty() ? pool_->exec(base + "ORDER BY project, id")
                                  : pool_->exec(base + "WHERE project = $1 ORDER BY project, id",
                                                PgParams().text(project)));
  std::vector<ApiKey> out;
  for (int i = 0; i < r.rows(); ++i)
    out.push_back(read_key(r, i));
  return out;
}

Result<int64_t> PgStore::count_active_keys(int64_t now) {
  GANTRY_ASSIGN_OR_RETURN(PgResult r, pool_->exec("SELECT count(*) FROM api_keys WHERE "
                                                  "revoked_at = 0 AND (expires_at = 0 OR "
                                                  "expires_at > $1)",
                                                  PgParams().i64(now)));
  return r.i64(0, 0);
}

Result<int64_t> PgStore::count_keys_ever() {
  GANTRY_ASSIGN_OR_RETURN(PgResult r, pool_->exec("SELECT count(*) FROM api_keys"));
  return r.i64(0, 0);
}

Status PgStore::touch_keys(const std::vector<std::pair<std::string, int64_t>> &last_used) {
  if (last_used.empty())
    return Ok();
  return pool_->transaction([&](PgConn &c) -> Status {
    for (const auto &[id, at] : last_used)
      GANTRY_TRY(c.exec("UPDATE api_keys SET last_used_at = greatest(last_used_at, $1) "
                        "WHERE id = $2",
                        PgParams().i64(at).text(id)));
    return Ok();
  });
}

Result<int64_t> PgStore::keys_generation() {
  GANTRY_ASSIGN_OR_RETURN(PgResult r,
                          pool_->exec("SELECT v FROM meta WHERE k = 'keys_generation'"));
  if (r.rows() == 0)
    return Error::corrupt("database: meta has no keys_generation row");
  return r.i64(0, 0);
}

Status PgStore::append_usage(const std::vector<UsageRecord> &rows) {
  if (rows.empty())
    return Ok();
  return pool_->transaction([&](PgConn &c) -> Status {
    for (const auto &u : rows) {
      GANTRY_ASSIGN_OR_RETURN(
          PgResult ins,
          c.exec("INSERT INTO usage_ledger(request_id, client_request_id, key_id, project, model, "
                 "endpoint, input_tokens, output_tokens, cached_tokens, cached, latency_ms, "
                 "ttft_ms, cost_usd, status, finish_reason, created_at_ms) VALUES ($1, $2, $3, "
                 "$4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) "
                 "ON CONFLICT (request_id) DO NOTHING",
                 PgParams()
                     .text(u.request_id)
                     .text(u.client_request_id)
                     .text(u.key_id)
                     .text(u.project)
                     .text(u.model)
                     .text(u.endpoint)
                     .i64(u.input_tokens)
                     .i64(u.output_tokens)
                     .i64(u.cached_tokens)
                     .boolean(u.cached)
                     .f64(u.latency_ms)
                     .f64(u.ttft_ms)
                     .f64(u.cost_usd)
                     .i64(u.status)
                     .text(u.finish_reason)
                     .i64(u.created_at_ms)));
      // A row already in the ledger was counted in its roll-up when it was first written.
      if (ins.affected() == 0)
        continue;
      GANTRY_TRY(c.exec(
          "INSERT INTO usage_daily(day, key_id, project, model, requests, input_tokens, "
          "output_tokens, cost_usd) VALUES (to_char(to_timestamp($1::bigint / 1000) AT TIME ZONE "
          "'UTC', 'YYYY-MM-DD'), $2, $3, $4, 1, $5, $6, $7) "
          "ON CONFLICT (day, key_id, project, model) DO UPDATE SET "
          "requests = usage_daily.requests + 1, "
          "input_tokens = usage_daily.input_tokens + excluded.input_tokens, "
          "output_tokens = usage_daily.output_tokens + excluded.output_tokens, "
          "cost_usd = usage_daily.cost_usd + excluded.cost_usd",
          PgParams()
              .i64(u.created_at_ms)
              .text(u.key_id)
              .text(u.project)
              .text(u.model)
              .i64(u.input_tokens)
              .i64(u.output_tokens)
              .f64(u.cost_usd)));
    }
    return Ok();
  });
}

Result<UsageTotals> PgStore::usage_of(OwnerKind kind, std::string_view owner_id, int64_t from_ms) {
  const std::string col = kind == OwnerKind::kKey ? "key_id" : "project";
  GANTRY_ASSIGN_OR_RETURN(PgResult r,
                          pool_->exec("SELECT count(*), coalesce(sum(input_tokens), 0), "
                                      "coalesce(sum(output_tokens), 0), coalesce(sum(cost_usd), 0) "
                                      "FROM usage_ledger WHERE " +
                                          col + " = $1 AND created_at_ms >= $2",
                                      PgParams().text(owner_id).i64(from_ms)));
  return read_totals(r, 0, 0);
}

Result<std::vector<UsageGroup>> PgStore::usage_report(control::GroupBy group_by, int64_t from_ms,
                                                      int64_t to_ms) {
  const char *col = group_by == control::GroupBy::kKey       ? "key_id"
                    : group_by == control::GroupBy::kProject ? "project"
                                                             : "model";
  GANTRY_ASSIGN_OR_RETURN(
      PgResult r,
      pool_->exec(std::string("SELECT ") + col +
                      ", count(*), sum(input_tokens), sum(output_tokens), coalesce(sum(cost_usd), "
                      "0) FROM usage_ledger WHERE created_at_ms >= $1 AND created_at_ms < $2 "
                      "GROUP BY " +
                      col + " ORDER BY " + col + " COLLATE \"C\"",
                  PgParams().i64(from_ms).i64(to_ms)));
  std::vector<UsageGroup> out;
  for (int i = 0; i < r.rows(); ++i)
    out.push_back({r.text(i, 0), read_totals(r, i, 1)});
  return out;
}

Result<int64_t> PgStore::count_usage() {
  GANTRY_ASSIGN_OR_RETURN(PgResult r, pool_->exec("SELECT count(*) FROM usage_ledger"));
  return r.i64(0, 0);
}

Result<int64_t> PgStore::prune_usage(int64_t before_ms) {
  GANTRY_ASSIGN_OR_RETURN(
      PgResult r,
      pool_->exec("DELETE FROM usage_ledger WHERE created_at_ms < $1", PgParams().i64(before_ms)));
  return r.affected();
}

Status PgStore::put_budget(const Budget &b) {
  GANTRY_TRY(pool_->exec("INSERT INTO budgets(owner_kind, owner_id, period, token_quota, "
                         "spend_limit_usd, alert_thresholds) VALUES ($1, $2, $3, $4, $5, $6) "
                         "ON CONFLICT (owner_kind, owner_id, period) DO UPDATE SET "
                         "token_quota = excluded.token_quota, "
                         "spend_limit_usd = excluded.spend_limit_usd, "
                         "alert_thresholds = excluded.alert_thresholds",
                         PgParams()
                             .text(control::to_string(b.owner_kind))
                             .text(b.owner_id)
                             .text(control::to_string(b.period))
                             .i64(b.token_quota)
                             .f64(b.spend_limit_usd)
                             .text(control::thresholds_text(b.alert_thresholds))));
  return Ok();
}

Status PgStore::delete_budget(OwnerKind kind, std::string_view owner_id, Period period) {
  GANTRY_ASSIGN_OR_RETURN(
      PgResult r, pool_->exec("DELETE FROM budgets WHERE owner_kind = $1 AND owner_id = $2 AND "
                              "period = $3",
                              PgParams()
                                  .text(control::to_string(kind))
                                  .text(owner_id)
                                  .text(control::to_string(period))));
  if (r.affected() == 0)
    return Err(ErrorCode::kNotFound, "no " + std::string(control::to_string(period)) +
                                         " budget for " + std::string(control::to_string(kind)) +
                                         " '" + std::string(owner_id) + "'");
  return Ok();
}

Result<std::vector<Budget>> PgStore::list_budgets() {
  GANTRY_ASSIGN_OR_RETURN(
      PgResult r, pool_->exec("SELECT owner_kind, owner_id, period, token_quota, spend_limit_usd, "
                              "alert_thresholds FROM budgets ORDER BY owner_kind COLLATE \"C\", "
                              "owner_id COLLATE \"C\", period COLLATE \"C\""));
  std::vector<Budget> out;
  for (int i = 0; i < r.rows(); ++i) {
    auto kind = control::owner_kind_from(r.text(i, 0));
    auto period = control::period_from(r.text(i, 2));
    if (!kind || !period)
      return Error::corrupt("database: budget row with owner kind '" + r.text(i, 0) +
                            "' and period '" + r.text(i, 2) + "'");
    Budget b;
    b.owner_kind = *kind;
    b.owner_id = r.text(i, 1);
    b.period = *period;
    b.token_quota = r.i64(i, 3);
    b.spend_limit_usd = r.f64(i, 4);
    GANTRY_ASSIGN_OR_RETURN(b.alert_thresholds, control::parse_thresholds(r.text(i, 5)));
    out.push_back(std::move(b));
  }
  return out;
}

Result<bool> PgStore::record_alert(OwnerKind kind, std::string_view owner_id, int64_t period_start,
                                   int threshold) {
  // fired_at is only for people reading the table, so the database's clock is good enough.
  GANTRY_ASSIGN_OR_RETURN(
      PgResult r, pool_->exec("INSERT INTO budget_alerts(owner_kind, owner_id, period_start, "
                              "threshold, fired_at) VALUES ($1, $2, $3, $4, "
                              "extract(epoch from now())::bigint) ON CONFLICT DO NOTHING",
                              PgParams()
                                  .text(control::to_string(kind))
                                  .text(owner_id)
                                  .i64(period_start)
                                  .i64(threshold)));
  return r.affected() == 1;
}

Status PgStore::check() {
  GANTRY_ASSIGN_OR_RETURN(PgResult r, pool_->exec("SELECT pg_is_in_recovery()"));
  if (r.rows() == 1 && r.text(0, 0) == "t")
    return Err(ErrorCode::kUnavailable, "PostgreSQL is a read-only standby");
  return Ok();
}

} // namespace gantry::store
