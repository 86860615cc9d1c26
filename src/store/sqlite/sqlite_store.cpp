#include "store/sqlite/sqlite_store.h"

#include "store/sqlite/sqlite_db.h"
#include "store/sqlite/sqlite_schema.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <unordered_map>

namespace gantry::control {
namespace {

// Writers wait this long for another connection (the CLI beside a server) before failing.
constexpr int kBusyTimeoutMs = 5000;

struct DbCloser {
  void operator()(sqlite3 *db) const { sqlite3_close_v2(db); }
};
using DbPtr = std::unique_ptr<sqlite3, DbCloser>;

// Audit M5: the database holds key hashes, webhook secrets, prompts and results, so every file
// SQLite creates (the database, its -wal, -shm and -journal, a backup) is the owner's alone.
// umask is per process: the guards are serialized so that overlapping ones cannot restore a
// stale mask, and a file another thread creates meanwhile only comes out more private.
class PrivateUmask {
public:
  PrivateUmask() : lock_(mu()), old_(::umask(077)) {}
  ~PrivateUmask() { ::umask(old_); }
  PrivateUmask(const PrivateUmask &) = delete;
  PrivateUmask &operator=(const PrivateUmask &) = delete;

private:
  static std::mutex &mu() {
    static std::mutex m;
    return m;
  }
  std::lock_guard<std::mutex> lock_;
  mode_t old_;
};

// Takes group and other bits off `path` when it exists, is ours and has any; a file or
// directory left by an older version (created under the default umask) is tightened in place.
Status make_private(const std::string &path, mode_t mode) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0)
    return errno == ENOENT ? Ok() : Error::io("stat " + path + ": " + std::strerror(errno));
  if (st.st_uid != ::geteuid() || (st.st_mode & 077) == 0 || S_ISLNK(st.st_mode))
    return Ok();
  if (::chmod(path.c_str(), mode) != 0)
    return Error::io("chmod " + path + ": " + std::strerror(errno));
  return Ok();
}

Result<DbPtr> open_connection(const std::string &path, int flags) {
  sqlite3 *raw = nullptr;
  int rc = 0;
  {
    PrivateUmask private_files;
    rc = sqlite3_open_v2(path.c_str(), &raw, flags, nullptr);
  }
  DbPtr db(raw); // a failed open still returns a handle that must be closed
  if (rc != SQLITE_OK)
    return sqlite_error(rc, "open " + path, db.get());
  sqlite3_extended_result_codes(db.get(), 1);
  sqlite3_busy_timeout(db.get(), kBusyTimeoutMs);
  return db;
}

// For statements without values (pragmas, DDL, transaction control).
Status exec(sqlite3 *db, const std::string &sql) {
  int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr);
  if (rc != SQLITE_OK)
    return sqlite_error(rc, sql.substr(0, 60), db);
  return Ok();
}

Result<int64_t> user_version(sqlite3 *db) {
  GANTRY_ASSIGN_OR_RETURN(Query q, prepare_once(db, "PRAGMA user_version"));
  GANTRY_ASSIGN_OR_RETURN(bool row, q.step());
  if (!row)
    return Error::internal("database: PRAGMA user_version returned no row");
  return q.col_i64(0);
}

Result<std::string> run_integrity_check(sqlite3 *db) {
  GANTRY_ASSIGN_OR_RETURN(Query q, prepare_once(db, "PRAGMA integrity_check"));
  std::string out;
  for (;;) {
    GANTRY_ASSIGN_OR_RETURN(bool row, q.step());
    if (!row)
      break;
    if (!out.empty())
      out += "; ";
    out += q.col_text(0);
  }
  return out;
}

Status check_known_version(int64_t version, const std::string &path) {
  if (version > sqlite_schema_version()) {
    return Error::unsupported("database " + path + " has schema version " +
                              std::to_string(version) + ", newer than this Gantry knows (" +
                              std::to_string(sqlite_schema_version()) +
                              "); it was written by a newer release: upgrade Gantry");
  }
  return Ok();
}

// Each migration runs in its own IMMEDIATE transaction and re-reads the version inside it, so
// two processes opening a fresh database at once apply every migration exactly once.
Status migrate(sqlite3 *db, const std::string &path) {
  for (;;) {
    GANTRY_TRY(exec(db, "BEGIN IMMEDIATE"));
    auto step = [&]() -> Result<bool> {
      GANTRY_ASSIGN_OR_RETURN(int64_t v, user_version(db));
      GANTRY_TRY(check_known_version(v, path));
      if (v == sqlite_schema_version())
        return false;
      GANTRY_TRY(exec(db, sqlite_migrations()[static_cast<size_t>(v)]));
      // PRAGMA takes no bound parameters; the value is our own integer.
      GANTRY_TRY(exec(db, "PRAGMA user_version = " + std::to_string(v + 1)));
      return true;
    };
    auto more = step();
    if (!more.ok()) {
      (void)exec(db, "ROLLBACK");
      return Err(more.take_error());
    }
    GANTRY_TRY(exec(db, "COMMIT"));
    if (!*more)
      return Ok();
  }
}

Status make_data_dir(const std::string &data_dir) {
  std::error_code ec;
  // Keys' hashes and the ledger live here: only the owner may read them, also when the
  // directory already existed (gantry serve, an operator or an older version made it).
  {
    PrivateUmask private_files;
    std::filesystem::create_directories(data_dir, ec);
  }
  if (ec)
    return Error::io("cannot create data directory " + data_dir + ": " + ec.message());
  return make_private(data_dir, 0700);
}

Status fsync_path(const std::string &path, bool directory) {
  int fd = ::open(path.c_str(), directory ? (O_RDONLY | O_DIRECTORY) : O_RDONLY);
  if (fd < 0)
    return Error::io("open " + path + ": " + std::strerror(errno));
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  if (rc != 0)
    return Error::io("fsync " + path + ": " + std::strerror(err));
  return Ok();
}

std::string parent_dir(const std::string &path) {
  auto p = std::filesystem::path(path).parent_path();
  return p.empty() ? "." : p.string();
}

void remove_quietly(const std::string &path) {
  std::error_code ec;
  std::filesystem::remove(path, ec);
}

// Copies the database behind `src` into `dest_path` + ".tmp" with the online backup API (one
// step over all pages: a single read transaction, so the copy is one consistent snapshot while
// writers go on), makes it a self-contained rollback-journal file, checks it, syncs it and
// renames it to `dest_path`.
Status copy_database(sqlite3 *src, const std::string &dest_path) {
  const std::string tmp = dest_path + ".tmp";
  remove_quietly(tmp);
  remove_quietly(tmp + "-journal");
  {
    GANTRY_ASSIGN_OR_RETURN(DbPtr dest,
                            open_connection(tmp, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE));
    sqlite3_backup *b = sqlite3_backup_init(dest.get(), "main", src, "main");
    if (b == nullptr)
      return sqlite_error(sqlite3_errcode(dest.get()), "backup", dest.get());
    int rc = sqlite3_backup_step(b, -1);
    sqlite3_backup_finish(b);
    if (rc != SQLITE_DONE) {
      Error e = sqlite_error(rc, "backup", dest.get());
      dest.reset();
      remove_quietly(tmp);
      return e;
    }
    auto ok = [&]() -> Status {
      GANTRY_TRY(exec(dest.get(), "PRAGMA journal_mode = DELETE"));
      GANTRY_ASSIGN_OR_RETURN(std::string integrity, run_integrity_check(dest.get()));
      if (integrity != "ok")
        return Error::corrupt("copy failed integrity_check: " + integrity);
      return Ok();
    }();
    if (!ok) {
      dest.reset();
      remove_quietly(tmp);
      return Err(ok.take_error());
    }
  }
  GANTRY_TRY(fsync_path(tmp, false));
  std::error_code ec;
  std::filesystem::rename(tmp, dest_path, ec);
  if (ec) {
    remove_quietly(tmp);
    return Error::io("rename " + tmp + " to " + dest_path + ": " + ec.message());
  }
  return fsync_path(parent_dir(dest_path), true);
}

constexpr const char *kKeyColumns =
    "SELECT id, project, name, hash, prev_hash, prev_expires_at, "
    "(SELECT group_concat(value, char(31)) FROM json_each(api_keys.models)), rpm, tpm, "
    "max_concurrent, created_at, expires_at, revoked_at, last_used_at FROM api_keys ";

ApiKey read_key(const Query &q) {
  ApiKey k;
  k.id = q.col_text(0);
  k.project = q.col_text(1);
  k.name = q.col_text(2);
  k.hash = q.col_text(3);
  k.prev_hash = q.col_text(4);
  k.prev_expires_at = q.col_i64(5);
  k.models = split_models(q.col_text(6));
  k.limits = {q.col_i64(7), q.col_i64(8), q.col_i64(9)};
  k.created_at = q.col_i64(10);
  k.expires_at = q.col_i64(11);
  k.revoked_at = q.col_i64(12);
  k.last_used_at = q.col_i64(13);
  return k;
}

UsageTotals read_totals(const Query &q, int first) {
  return {q.col_i64(first), q.col_i64(first + 1), q.col_i64(first + 2), q.col_f64(first + 3)};
}

} // namespace

int sqlite_schema_version() { return static_cast<int>(sqlite_migrations().size()); }

std::string database_path(const std::string &data_dir) {
  return (std::filesystem::path(data_dir) / "gantry.db").string();
}

struct SqliteStore::Impl {
  DbPtr db; // declared first: destroyed after the statements below are finalized
  std::unordered_map<std::string, sqlite3_stmt *> stmts;
  dev_t dev = 0; // the file opened, to notice it being removed or replaced
  ino_t ino = 0;
  int64_t health_seq = 0;

  ~Impl() {
    for (auto &[sql, stmt] : stmts)
      sqlite3_finalize(stmt);
  }

  // A cached prepared statement; the SQL text is the cache key.
  Result<Query> query(const char *sql) {
    auto it = stmts.find(sql);
    if (it == stmts.end()) {
      sqlite3_stmt *stmt = nullptr;
      int rc = sqlite3_prepare_v3(db.get(), sql, -1, SQLITE_PREPARE_PERSISTENT, &stmt, nullptr);
      if (rc != SQLITE_OK)
        return sqlite_error(rc, std::string("prepare ") + sql, db.get());
      it = stmts.emplace(sql, stmt).first;
    }
    return Query(db.get(), it->second, false);
  }

  Status run(const char *sql) {
    GANTRY_ASSIGN_OR_RETURN(Query q, query(sql));
    return q.run();
  }

  Status bump_generation() { return run("UPDATE meta SET v = v + 1 WHERE k = 'keys_generation'"); }

  class Transaction;
};

// BEGIN IMMEDIATE takes the write lock up front, so a transaction never fails half-way with
// SQLITE_BUSY when upgrading from a read; rolls back unless commit() succeeded.
class SqliteStore::Impl::Transaction {
public:
  explicit Transaction(Impl &impl) : impl_(impl) {}
  ~Transaction() {
    if (open_)
      (void)impl_.run("ROLLBACK");
  }
  Status begin() {
    GANTRY_TRY(impl_.run("BEGIN IMMEDIATE"));
    open_ = true;
    return Ok();
  }
  Status commit() {
    GANTRY_TRY(impl_.run("COMMIT"));
    open_ = false;
    return Ok();
  }

private:
  Impl &impl_;
  bool open_ = false;
};

SqliteStore::SqliteStore(std::string path, std::unique_ptr<Impl> impl)
    : path_(std::move(path)), impl_(std::move(impl)) {}

SqliteStore::~SqliteStore() = default;

Result<std::unique_ptr<SqliteStore>> SqliteStore::open(const std::string &data_dir) {
  GANTRY_TRY(make_data_dir(data_dir));
  std::string path = database_path(data_dir);
  // A database an older version created under the default umask: SQLite gives its new -wal
  // and -shm the main file's mode, so tightening the three keeps them all private.
  for (const char *suffix : {"", "-wal", "-shm"})
    GANTRY_TRY(make_private(path + suffix, 0600));
  GANTRY_ASSIGN_OR_RETURN(
      DbPtr db,
      open_connection(path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX));
  // Refuse a newer database before anything below writes to it.
  GANTRY_ASSIGN_OR_RETURN(int64_t version, user_version(db.get()));
  GANTRY_TRY(check_known_version(version, path));
  // Durability: in WAL mode with synchronous=NORMAL a commit is appended to the -wal file and
  // only the checkpoint syncs. The file is never corrupted; a power loss or OS crash may lose the
  // last few transactions; a killed process (kill -9) loses nothing that was committed, because
  // the commit is in the OS page cache. For usage rows and key edits that trade is right; FULL
  // would add an fsync to every ledger batch.
  GANTRY_TRY(exec(db.get(), "PRAGMA journal_mode = WAL"));
  GANTRY_TRY(exec(db.get(), "PRAGMA synchronous = NORMAL"));
  GANTRY_TRY(exec(db.get(), "PRAGMA foreign_keys = ON"));
  GANTRY_TRY(migrate(db.get(), path));

  auto impl = std::make_unique<Impl>();
  impl->db = std::move(db);
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    return Error::io("stat " + path + ": " + std::strerror(errno));
  }
  impl->dev = st.st_dev;
  impl->ino = st.st_ino;
  return std::unique_ptr<SqliteStore>(new SqliteStore(std::move(path), std::move(impl)));
}

Status SqliteStore::put_project(const Project &p) {
  std::lock_guard lock(mu_);
  Impl::Transaction tx(*impl_);
  GANTRY_TRY(tx.begin());
  GANTRY_ASSIGN_OR_RETURN(
      Query q, impl_->query("INSERT INTO projects(id, rpm, tpm, max_concurrent, created_at) "
                            "VALUES (?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET "
                            "rpm = excluded.rpm, tpm = excluded.tpm, "
                            "max_concurrent = excluded.max_concurrent"));
  GANTRY_TRY(q.text(p.id)
                 .i64(p.limits.rpm)
                 .i64(p.limits.tpm)
                 .i64(p.limits.max_concurrent)
                 .i64(p.created_at)
                 .run());
  GANTRY_TRY(impl_->bump_generation());
  return tx.commit();
}

Result<std::optional<Project>> SqliteStore::get_project(std::string_view id) {
  std::lock_guard lock(mu_);
  GANTRY_ASSIGN_OR_RETURN(Query q, impl_->query("SELECT id, rpm, tpm, max_concurrent, created_at "
                                                "FROM projects WHERE id = ?"));
  q.text(id);
  GANTRY_ASSIGN_OR_RETURN(bool row, q.step());
  if (!row)
    return std::optional<Project>();
  return std::optional<Project>(
      Project{q.col_text(0), {q.col_i64(1), q.col_i64(2), q.col_i64(3)}, q.col_i64(4)});
}

Result<std::vector<Project>> SqliteStore::list_projects() {
  std::lock_guard lock(mu_);
  GANTRY_ASSIGN_OR_RETURN(Query q, impl_->query("SELECT id, rpm, tpm, max_concurrent, created_at "
                                                "FROM projects ORDER BY id"));
  std::vector<Project> out;
  for (;;) {
    GANTRY_ASSIGN_OR_RETURN(bool row, q.step());
    if (!row)
      return out;
    out.push_back({q.col_text(0), {q.col_i64(1), q.col_i64(2), q.col_i64(3)}, q.col_i64(4)});
  }
}

// The 13 columns after `id` that insert_key and update_key both write, in the same order.
static Query &bind_key_fields(Query &q, const ApiKey &k) {
  return q.text(k.project)
      .text(k.name)
      .text(k.hash)
      .text(k.prev_hash)
      .i64(k.prev_expires_at)
      .text(models_json(k.models))
      .i64(k.limits.rpm)
      .i64(k.limits.tpm)
      .i64(k.limits.max_concurrent)
      .i64(k.created_at)
      .i64(k.expires_at)
      .i64(k.revoked_at)
      .i64(k.last_used_at);
}

Status SqliteStore::insert_key(const ApiKey &k) {
  GANTRY_TRY(check_models(k.models));
  std::lock_guard lock(mu_);
  Impl::Transaction tx(*impl_);
  GANTRY_TRY(tx.begin());
  GANTRY_ASSIGN_OR_RETURN(
      Query q,
      impl_->query("INSERT INTO api_keys(id, project, name, hash, prev_hash, prev_expires_at, "
                   "models, rpm, tpm, max_concurrent, created_at, expires_at, revoked_at, "
                   "last_used_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                   "ON CONFLICT(id) DO NOTHING"));
  GANTRY_TRY(bind_key_fields(q.text(k.id), k).run());
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
  GANTRY_ASSIGN_OR_RETURN(
      Query q, impl_->query("UPDATE api_keys SET project = ?, name = ?, hash = ?, prev_hash = ?, "
                            "prev_expires_at = ?, models = ?, rpm = ?, tpm = ?, "
                            "max_concurrent = ?, created_at = ?, expires_at = ?, revoked_at = ?, "
                            "last_used_at = max(last_used_at, ?) WHERE id = ?"));
  GANTRY_TRY(bind_key_fields(q, k).text(k.id).run());
  if (q.changes() == 0)
    return Err(ErrorCode::kNotFound, "no API key with id '" + k.id + "'");
  GANTRY_TRY(impl_->bump_generation());
  return tx.commit();
}

Result<std::optional<ApiKey>> SqliteStore::get_key(std::string_view id) {
  static const std::string sql = std::string(kKeyColumns) + "WHERE id = ?";
  std::lock_guard lock(mu_);
  GANTRY_ASSIGN_OR_RETURN(Query q, impl_->query(sql.c_str()));
  q.text(id);
  GANTRY_ASSIGN_OR_RETURN(bool row, q.step());
  if (!row)
    return std::optional<ApiKey>();
  return std::optional<ApiKey>(read_key(q));
}

Result<std::vector<ApiKey>> SqliteStore::list_keys(std::string_view project) {
  static const std::string all_sql = std::string(kKeyColumns) + "ORDER BY project, id";
  static const std::string one_sql =
      std::string(kKeyColumns) + "WHERE project = ? ORDER BY project, id";
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
    out.push_back(read_key(q));
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

Status SqliteStore::append_usage(const std::vector<UsageRecord> &rows) {
  if (rows.empty())
    return Ok();
  std::lock_guard lock(mu_);
  Impl::Transaction tx(*impl_);
  GANTRY_TRY(tx.begin());
  for (const auto &r : rows) {
    GANTRY_ASSIGN_OR_RETURN(
        Query ins,
        impl_->query("INSERT INTO usage_ledger(request_id, client_request_id, key_id, project, "
                     "model, endpoint, input_tokens, output_tokens, cached_tokens, cached, "
                     "latency_ms, ttft_ms, cost_usd, status, finish_reason, created_at_ms) "
                     "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                     "ON CONFLICT(request_id) DO NOTHING"));
    GANTRY_TRY(ins.text(r.request_id)
                   .text(r.client_request_id)
                   .text(r.key_id)
                   .text(r.project)
                   .text(r.model)
                   .text(r.endpoint)
                   .i64(r.input_tokens)
                   .i64(r.output_tokens)
                   .i64(r.cached_tokens)
                   .i64(r.cached ? 1 : 0)
                   .f64(r.latency_ms)
                   .f64(r.ttft_ms)
                   .f64(r.cost_usd)
                   .i64(r.status)
                   .text(r.finish_reason)
                   .i64(r.created_at_ms)
                   .run());
    // A row already in the ledger was counted in its roll-up when it was first written.
    if (ins.changes() == 0)
      continue;
    GANTRY_ASSIGN_OR_RETURN(
        Query day, impl_->query("INSERT INTO usage_daily(day, key_id, project, model, requests, "
                                "input_tokens, output_tokens, cost_usd) "
                                "VALUES (date(?1 / 1000, 'unixepoch'), ?2, ?3, ?4, 1, ?5, ?6, ?7) "
                                "ON CONFLICT(day, key_id, project, model) DO UPDATE SET "
                                "requests = requests + 1, "
                                "input_tokens = input_tokens + excluded.input_tokens, "
                                "output_tokens = output_tokens + excluded.output_tokens, "
                                "cost_usd = cost_usd + excluded.cost_usd"));
    GANTRY_TRY(day.i64(r.created_at_ms)
                   .text(r.key_id)
                   .text(r.project)
                   .text(r.model)
                   .i64(r.input_tokens)
                   .i64(r.output_tokens)
                   .f64(r.cost_usd)
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

Status SqliteStore::check() {
  // An open descriptor keeps working after the file is deleted, replaced or made read-only, so
  // the round trip below alone would report healthy while no new process (a restart, the CLI)
  // could use the database. Look at the path as they would.
  struct stat st {};
  if (::stat(path_.c_str(), &st) != 0) {
    return Error::io("database " + path_ + " is gone: " + std::strerror(errno));
  }
  if (st.st_dev != impl_->dev || st.st_ino != impl_->ino) {
    return Error::io("database " + path_ + " was replaced by another file; restart to use it");
  }
  if (::access(path_.c_str(), W_OK) != 0) {
    return Error::io("database " + path_ + " is not writable: " + std::strerror(errno));
  }
  const std::string dir = parent_dir(path_);
  if (::access(dir.c_str(), W_OK) != 0) {
    return Error::io("data directory " + dir + " is not writable: " + std::strerror(errno));
  }

  std::lock_guard lock(mu_);
  Impl::Transaction tx(*impl_);
  GANTRY_TRY(tx.begin());
  const int64_t seq = ++impl_->health_seq;
  {
    GANTRY_ASSIGN_OR_RETURN(Query w,
                            impl_->query("INSERT INTO meta(k, v) VALUES ('last_health_check', ?) "
                                         "ON CONFLICT(k) DO UPDATE SET v = excluded.v"));
    GANTRY_TRY(w.i64(seq).run());
  }
  {
    GANTRY_ASSIGN_OR_RETURN(Query r,
                            impl_->query("SELECT v FROM meta WHERE k = 'last_health_check'"));
    GANTRY_ASSIGN_OR_RETURN(bool row, r.step());
    if (!row || r.col_i64(0) != seq) {
      return Error::io("database " + path_ + " did not read back what was just written");
    }
  }
  return tx.commit();
}

Status SqliteStore::backup_to(const std::string &path) {
  std::error_code ec;
  if (std::filesystem::equivalent(path, path_, ec)) {
    return Error::invalid("backup target " + path + " is the live database itself");
  }
  // Its own read connection: the copy is one read transaction, which in WAL mode blocks no
  // writer, and the store's mutex stays free for them meanwhile.
  GANTRY_ASSIGN_OR_RETURN(DbPtr src, open_connection(path_, SQLITE_OPEN_READONLY));
  return copy_database(src.get(), path);
}

Result<std::string> SqliteStore::integrity_check() {
  std::lock_guard lock(mu_);
  return run_integrity_check(impl_->db.get());
}

Result<int64_t> SqliteStore::schema_version() {
  std::lock_guard lock(mu_);
  return user_version(impl_->db.get());
}

Status verify_database_file(const std::string &file) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(file, ec))
    return Error::io(file + ": no such file");
  GANTRY_ASSIGN_OR_RETURN(DbPtr db, open_connection(file, SQLITE_OPEN_READONLY));
  auto version = user_version(db.get());
  if (!version)
    return Error::corrupt(file + " is not a readable SQLite database (" + version.error().message +
                          ")");
  auto integrity = run_integrity_check(db.get());
  if (!integrity) {
    return Error::corrupt(file + " failed integrity_check: " + integrity.error().message);
  }
  if (*integrity != "ok")
    return Error::corrupt(file + " failed integrity_check: " + *integrity);
  if (*version == 0)
    return Error::invalid(file + " is not a Gantry database (no schema version)");
  return check_known_version(*version, file);
}

Status restore_database(const std::string &backup_file, const std::string &data_dir) {
  if (auto st = verify_database_file(backup_file); !st) {
    Error e = st.take_error();
    e.message = "refusing to restore: " + e.message;
    return e;
  }
  GANTRY_TRY(make_data_dir(data_dir));
  const std::string live = database_path(data_dir);

  std::error_code ec;
  if (std::filesystem::exists(live, ec)) {
    // In WAL mode every open connection holds a shared lock on the database file for its whole
    // life, so an exclusive lock here proves no server or CLI command has it open. Closing this
    // last connection also checkpoints and removes its -wal file.
    GANTRY_ASSIGN_OR_RETURN(DbPtr db, open_connection(live, SQLITE_OPEN_READWRITE));
    sqlite3_busy_timeout(db.get(), 200);
    GANTRY_TRY(exec(db.get(), "PRAGMA locking_mode = EXCLUSIVE"));
    int rc = sqlite3_exec(db.get(), "BEGIN EXCLUSIVE", nullptr, nullptr, nullptr);
    if ((rc & 0xff) == SQLITE_BUSY || (rc & 0xff) == SQLITE_LOCKED) {
      return Error{ErrorCode::kUnavailable,
                   "database " + live +
                       " is in use by another process; stop `gantry serve` and retry",
                   {}};
    }
    // Any other failure (the live file is corrupt: the reason to restore) does not stop us.
    if (rc == SQLITE_OK)
      (void)exec(db.get(), "ROLLBACK");
  }

  GANTRY_ASSIGN_OR_RETURN(DbPtr src, open_connection(backup_file, SQLITE_OPEN_READONLY));
  const std::string staged = live + ".restore";
  GANTRY_TRY(copy_database(src.get(), staged));
  // The old -wal must go before the new file takes the name: SQLite would replay its frames
  // into the restored database.
  remove_quietly(live + "-wal");
  remove_quietly(live + "-shm");
  std::filesystem::rename(staged, live, ec);
  if (ec)
    return Error::io("rename " + staged + " to " + live + ": " + ec.message());
  return fsync_path(data_dir, true);
}

} // namespace gantry::control
