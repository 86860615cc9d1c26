// SqliteStore: what only a SQLite file has (on no port): opening and migrating it, the readiness
// check against the path, backup_to, verify_database_file and restore_database. The three ports'
// methods are in sqlite_key_store.cpp, sqlite_usage_ledger.cpp and sqlite_budget_store.cpp.
#include "store/sqlite/sqlite_store.h"

#include "store/sqlite/sqlite_db.h"
#include "store/sqlite/sqlite_schema.h"
#include "store/sqlite/sqlite_store_impl.h"

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

using DbPtr = SqliteConnection;

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

} // namespace

int sqlite_schema_version() { return static_cast<int>(sqlite_migrations().size()); }

std::string database_path(const std::string &data_dir) {
  return (std::filesystem::path(data_dir) / "gantry.db").string();
}

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
