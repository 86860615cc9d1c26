#include "store/sqlite/sqlite_db.h"

#include <sqlite3.h>

#include <utility>

namespace gantry::control {

Error sqlite_error(int rc, std::string_view what, sqlite3 *db) {
  std::string msg = "database: " + std::string(what) + ": " +
                    (db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
  switch (rc & 0xff) {
  case SQLITE_BUSY:
  case SQLITE_LOCKED:
    return {ErrorCode::kUnavailable, msg + " (another process holds the database)", {}};
  case SQLITE_CORRUPT:
  case SQLITE_NOTADB: return Error::corrupt(msg);
  case SQLITE_CONSTRAINT: return Error::invalid(msg);
  default: return Error::io(msg);
  }
}

Query::Query(Query &&o) noexcept
    : db_(o.db_), stmt_(std::exchange(o.stmt_, nullptr)), owned_(o.owned_), next_(o.next_) {}

Query::~Query() {
  if (stmt_ == nullptr)
    return;
  if (owned_) {
    sqlite3_finalize(stmt_);
    return;
  }
  sqlite3_reset(stmt_);
  sqlite3_clear_bindings(stmt_);
}

Result<Query> prepare_once(sqlite3 *db, const char *sql) {
  sqlite3_stmt *stmt = nullptr;
  int rc = sqlite3_prepare_v2(db, sql, -1, &stmt, nullptr);
  if (rc != SQLITE_OK)
    return sqlite_error(rc, std::string("prepare ") + sql, db);
  return Query(db, stmt, true);
}

Query &Query::i64(int64_t v) {
  sqlite3_bind_int64(stmt_, ++next_, v);
  return *this;
}
Query &Query::f64(double v) {
  sqlite3_bind_double(stmt_, ++next_, v);
  return *this;
}
Query &Query::text(std::string_view v) {
  sqlite3_bind_text(stmt_, ++next_, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
  return *this;
}
Query &Query::text_ref(std::string_view v) {
  sqlite3_bind_text(stmt_, ++next_, v.data(), static_cast<int>(v.size()), SQLITE_STATIC);
  return *this;
}
Query &Query::blob(std::string_view v) {
  sqlite3_bind_blob(stmt_, ++next_, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
  return *this;
}

Result<bool> Query::step() {
  int rc = sqlite3_step(stmt_);
  if (rc == SQLITE_ROW)
    return true;
  if (rc == SQLITE_DONE)
    return false;
  return sqlite_error(rc, sqlite3_sql(stmt_), db_);
}

Status Query::run() {
  for (;;) {
    GANTRY_ASSIGN_OR_RETURN(bool row, step());
    if (!row)
      return Ok();
  }
}

int Query::changes() const { return sqlite3_changes(db_); }
int64_t Query::col_i64(int i) const { return sqlite3_column_int64(stmt_, i); }
double Query::col_f64(int i) const { return sqlite3_column_double(stmt_, i); }
std::string Query::col_text(int i) const {
  const auto *p = static_cast<const char *>(sqlite3_column_blob(stmt_, i));
  return p == nullptr ? std::string() : std::string(p, sqlite3_column_bytes(stmt_, i));
}

Result<std::unique_ptr<Db>> Db::open(const std::string &path) {
  sqlite3 *raw = nullptr;
  int rc =
      sqlite3_open_v2(path.c_str(), &raw, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, nullptr);
  std::unique_ptr<Db> db(new Db(raw)); // a failed open still returns a handle to close
  if (rc != SQLITE_OK)
    return sqlite_error(rc, "open " + path, raw);
  sqlite3_extended_result_codes(raw, 1);
  sqlite3_busy_timeout(raw, 5000);
  GANTRY_TRY(db->exec("PRAGMA journal_mode = WAL"));
  GANTRY_TRY(db->exec("PRAGMA synchronous = NORMAL"));
  return db;
}

Db::~Db() {
  for (auto &[sql, stmt] : cache_)
    sqlite3_finalize(stmt);
  sqlite3_close_v2(db_);
}

Status Db::exec(const char *sql) {
  int rc = sqlite3_exec(db_, sql, nullptr, nullptr, nullptr);
  if (rc != SQLITE_OK)
    return sqlite_error(rc, std::string_view(sql).substr(0, 60), db_);
  return Ok();
}

Result<Query> Db::query(const char *sql) {
  auto it = cache_.find(sql);
  if (it == cache_.end()) {
    sqlite3_stmt *stmt = nullptr;
    int rc = sqlite3_prepare_v3(db_, sql, -1, SQLITE_PREPARE_PERSISTENT, &stmt, nullptr);
    if (rc != SQLITE_OK)
      return sqlite_error(rc, std::string("prepare ") + sql, db_);
    it = cache_.emplace(sql, stmt).first;
  }
  return Query(db_, it->second);
}

Result<Transaction> Transaction::begin(Db &db) {
  GANTRY_TRY(db.exec("BEGIN IMMEDIATE"));
  return Transaction(db);
}

Transaction::~Transaction() {
  if (open_)
    (void)db_.exec("ROLLBACK");
}

Status Transaction::commit() {
  GANTRY_TRY(db_.exec("COMMIT"));
  open_ = false;
  return Ok();
}

} // namespace gantry::control
