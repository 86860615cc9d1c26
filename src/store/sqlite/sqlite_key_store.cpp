// SqliteStore's KeyStore half: projects and API keys (tables projects, api_keys; meta's
// keys_generation).
#include "store/sqlite/sqlite_store.h"

#include "store/sqlite/sqlite_db.h"
#include "store/sqlite/sqlite_record.h"
#include "store/sqlite/sqlite_schema.h"
#include "store/sqlite/sqlite_store_impl.h"

#include <mutex>

namespace gantry::control {
namespace {

// Limits sit in a nested struct, so their columns are spelled out.
const Columns<Project> &project_columns() {
  static const Columns<Project> c{
      col<&Project::id>("id"),
      {"rpm", [](Query &q, const Project &p) { q.i64(p.limits.rpm); },
       [](const Query &q, int i, Project &p) { p.limits.rpm = q.col_i64(i); }},
      {"tpm", [](Query &q, const Project &p) { q.i64(p.limits.tpm); },
       [](const Query &q, int i, Project &p) { p.limits.tpm = q.col_i64(i); }},
      {"max_concurrent", [](Query &q, const Project &p) { q.i64(p.limits.max_concurrent); },
       [](const Query &q, int i, Project &p) { p.limits.max_concurrent = q.col_i64(i); }},
      col<&Project::created_at>("created_at"),
  };
  return c;
}

// `id` first: update_key binds the others, then the id for its WHERE.
const Columns<ApiKey> &key_columns() {
  static const Columns<ApiKey> c{
      col<&ApiKey::id>("id"),
      col<&ApiKey::project>("project"),
      col<&ApiKey::name>("name"),
      col<&ApiKey::hash>("hash"),
      col<&ApiKey::prev_hash>("prev_hash"),
      col<&ApiKey::prev_expires_at>("prev_expires_at"),
      // A JSON array in the table; read back as the names joined by U+001F (split_models).
      {"models", [](Query &q, const ApiKey &k) { q.text(models_json(k.models)); },
       [](const Query &q, int i, ApiKey &k) { k.models = split_models(q.col_text(i)); },
       "(SELECT group_concat(value, char(31)) FROM json_each(api_keys.models))"},
      {"rpm", [](Query &q, const ApiKey &k) { q.i64(k.limits.rpm); },
       [](const Query &q, int i, ApiKey &k) { k.limits.rpm = q.col_i64(i); }},
      {"tpm", [](Query &q, const ApiKey &k) { q.i64(k.limits.tpm); },
       [](const Query &q, int i, ApiKey &k) { k.limits.tpm = q.col_i64(i); }},
      {"max_concurrent", [](Query &q, const ApiKey &k) { q.i64(k.limits.max_concurrent); },
       [](const Query &q, int i, ApiKey &k) { k.limits.max_concurrent = q.col_i64(i); }},
      col<&ApiKey::created_at>("created_at"),
      col<&ApiKey::expires_at>("expires_at"),
      col<&ApiKey::revoked_at>("revoked_at"),
      col<&ApiKey::last_used_at>("last_used_at"),
  };
  return c;
}

const std::string &select_keys() {
  static const std::string sql = "SELECT " + key_columns().select_list() + " FROM api_keys ";
  return sql;
}

const std::string &select_projects() {
  static const std::string sql = "SELECT " + project_columns().select_list() + " FROM projects ";
  return sql;
}

} // namespace

Status SqliteStore::put_project(const Project &p) {
  std::lock_guard lock(mu_);
  Impl::Transaction tx(*impl_);
  GANTRY_TRY(tx.begin());
  // An update keeps the creation time.
  static const std::string sql = "INSERT INTO projects(" + project_columns().names() +
                                 ") VALUES (" + project_columns().placeholders() +
                                 ") ON CONFLICT(id) DO UPDATE SET rpm = excluded.rpm, "
                                 "tpm = excluded.tpm, max_concurrent = excluded.max_concurrent";
  GANTRY_ASSIGN_OR_RETURN(Query q, impl_->query(sql.c_str()));
  GANTRY_TRY(project_columns().bind(q, p).run());
  GANTRY_TRY(impl_->bump_generation());
  return tx.commit();
}

Result<std::optional<Project>> SqliteStore::get_project(std::string_view id) {
  std::lock_guard lock(mu_);
  static const std::string sql = select_projects() + "WHERE id = ?";
  GANTRY_ASSIGN_OR_RETURN(Query q, impl_->query(sql.c_str()));
  q.text(id);
  GANTRY_ASSIGN_OR_RETURN(bool row, q.step());
  if (!row)
    return std::optional<Project>();
  return std::optional<Project>(project_columns().read(q));
}

Result<std::vector<Project>> SqliteStore::list_projects() {
  std::lock_guard lock(mu_);
  static const std::string sql = select_projects() + "ORDER BY id";
  GANTRY_ASSIGN_OR_RETURN(Query q, impl_->query(sql.c_str()));
  std::vector<Project> out;
  for (;;) {
    GANTRY_ASSIGN_OR_RETURN(bool row, q.step());
    if (!row)
      return out;
    out.push_back(project_columns().read(q));
  }
}

Status SqliteStore::insert_key(const ApiKey &k) {
  GANTRY_TRY(check_models(k.models));
  std::lock_guard lock(mu_);
  Impl::Transaction tx(*impl_);
  GANTRY_TRY(tx.begin());
  static const std::string sql = "INSERT INTO api_keys(" + key_columns().names() + ") VALUES (" +
                                 key_columns().placeholders() + ") ON CONFLICT(id) DO NOTHING";
  GANTRY_ASSIGN_OR_RETURN(Query q, impl_->query(sql.c_str()));
  GANTRY_TRY(key_columns().bind(q, k).run());
  if (q.changes() == 0)
    return Error::invalid("API key id '" + k.id + "' already exists", "id");
  GANTRY_TRY(impl_->bump_generation());
  return tx.commit();
}

Status SqliteStore::update_key(const ApiKey &k) {
  GANTRY_TRY(check_models(k.models));
  std::lock_guard lock(mu_);
  Impl::Transaction tx(*impl_);
  GANTRY_TRY(tx.begin());
  // Every column but the id; last_used_at never moves backwards.
  static const std::string sql =
      "UPDATE api_keys SET " +
      key_columns().assignments(1, "last_used_at", "max(last_used_at, ?)") + " WHERE id = ?";
  GANTRY_ASSIGN_OR_RETURN(Query q, impl_->query(sql.c_str()));
  GANTRY_TRY(key_columns().bind(q, k, 1).text(k.id).run());
  if (q.changes() == 0)
    return Err(ErrorCode::kNotFound, "no API key with id '" + k.id + "'");
  GANTRY_TRY(impl_->bump_generation());
  return tx.commit();
}

Result<std::optional<ApiKey>> SqliteStore::get_key(std::string_view id) {
  static const std::string sql = select_keys() + "WHERE id = ?";
  std::lock_guard lock(mu_);
  GANTRY_ASSIGN_OR_RETURN(Query q, impl_->query(sql.c_str()));
  q.text(id);
  GANTRY_ASSIGN_OR_RETURN(bool row, q.step());
  if (!row)
    return std::optional<ApiKey>();
  return std::optional<ApiKey>(key_columns().read(q));
}

Result<std::vector<ApiKey>> SqliteStore::list_keys(std::string_view project) {
  static const std::string all_sql = select_keys() + "ORDER BY project, id";
  static const std::string one_sql = select_keys() + "WHERE project = ? ORDER BY project, id";
  std::lock_guard lock(mu_);
  GANTRY_ASSIGN_OR_RETURN(Query q,
                          impl_->query(project.empty() ? all_sql.c_str() : one_sql.c_str()));
  if (!project.empty())
    q.text(project);
  std::vector<ApiKey> out;
  for (;;) {
    GANTRY_ASSIGN_OR_RETURN(bool row, q.step());
    if (!row)
      return out;
    out.push_back(key_columns().read(q));
  }
}

Result<int64_t> SqliteStore::count_active_keys(int64_t now) {
  std::lock_guard lock(mu_);
  GANTRY_ASSIGN_OR_RETURN(Query q,
                          impl_->query("SELECT count(*) FROM api_keys WHERE revoked_at = 0 AND "
                                       "(expires_at = 0 OR expires_at > ?)"));
  q.i64(now);
  GANTRY_TRY(q.step());
  return q.col_i64(0);
}

Result<int64_t> SqliteStore::count_keys_ever() {
  std::lock_guard lock(mu_);
  GANTRY_ASSIGN_OR_RETURN(Query q, impl_->query("SELECT count(*) FROM api_keys"));
  GANTRY_TRY(q.step());
  return q.col_i64(0);
}

Status SqliteStore::touch_keys(const std::vector<std::pair<std::string, int64_t>> &last_used) {
  if (last_used.empty())
    return Ok();
  std::lock_guard lock(mu_);
  Impl::Transaction tx(*impl_);
  GANTRY_TRY(tx.begin());
  for (const auto &[id, at] : last_used) {
    GANTRY_ASSIGN_OR_RETURN(
        Query q,
        impl_->query("UPDATE api_keys SET last_used_at = max(last_used_at, ?) WHERE id = ?"));
    GANTRY_TRY(q.i64(at).text(id).run());
  }
  return tx.commit();
}

Result<int64_t> SqliteStore::keys_generation() {
  std::lock_guard lock(mu_);
  GANTRY_ASSIGN_OR_RETURN(Query q, impl_->query("SELECT v FROM meta WHERE k = 'keys_generation'"));
  GANTRY_ASSIGN_OR_RETURN(bool row, q.step());
  if (!row)
    return Error::corrupt("database: meta has no keys_generation row");
  return q.col_i64(0);
}

} // namespace gantry::control
