// The embedded adapter of the three control-plane store ports (KeyStore, UsageLedger,
// BudgetStore): one SQLite file, <data_dir>/gantry.db, in WAL mode. The methods of each port are
// in their own file (sqlite_key_store.cpp, sqlite_usage_ledger.cpp, sqlite_budget_store.cpp);
// this header's own file holds what only a SQLite file has: open and migrate, the readiness
// check, backup_to, verify and restore (BackupScheduler and `gantry db` use them; they are on no
// port, since PostgreSQL has no "copy to path").
//
// The server and the CLI (`gantry keys create`, `gantry db backup`) open the same file from
// different processes; SQLite's file locks serialise their writes and busy_timeout makes a writer
// wait for the other instead of failing at once.
//
// Threading: every method may be called from any thread. One connection serves them all, guarded
// by one mutex, so calls are serialised; nothing on a request's hot path calls a store
// (store.h), so the simplicity is worth more than parallel reads would be. backup_to() reads
// through its own connection and does not hold the mutex while it copies.
//
// The schema is versioned with `PRAGMA user_version` and migrated forward at open(); a database
// written by a newer Gantry (an unknown version) is refused rather than guessed at.
#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "control/budget_store.h"
#include "control/key_store.h"
#include "control/usage_ledger.h"

namespace gantry::control {

// The newest schema version this binary knows (the number of migrations).
int sqlite_schema_version();

// <data_dir>/gantry.db
std::string database_path(const std::string &data_dir);

// One usage_daily row: the roll-up the ledger keeps per UTC day, key, project and model.
struct DailyUsage {
  std::string day; // "YYYY-MM-DD", UTC
  std::string key_id;
  std::string project;
  std::string model;
  UsageTotals totals;
};

class SqliteStore final : public KeyStore, public UsageLedger, public BudgetStore {
public:
  // Creates `data_dir` (mode 0700) and the database when missing, then migrates the schema.
  static Result<std::unique_ptr<SqliteStore>> open(const std::string &data_dir);
  ~SqliteStore() override;

  SqliteStore(const SqliteStore &) = delete;
  SqliteStore &operator=(const SqliteStore &) = delete;

  Status put_project(const Project &project) override;
  Result<std::optional<Project>> get_project(std::string_view id) override;
  Result<std::vector<Project>> list_projects() override;

  // Model names may not contain control characters (kInvalidArgument).
  Status insert_key(const ApiKey &key) override;
  Status update_key(const ApiKey &key) override;
  Result<std::optional<ApiKey>> get_key(std::string_view id) override;
  Result<std::vector<ApiKey>> list_keys(std::string_view project = {}) override;
  Result<int64_t> count_active_keys(int64_t now) override;
  Result<int64_t> count_keys_ever() override;
  Status touch_keys(const std::vector<std::pair<std::string, int64_t>> &last_used) override;
  // Bumped by insert_key, update_key and put_project (project limits live in the same cache).
  Result<int64_t> keys_generation() override;

  Status append_usage(const std::vector<UsageRecord> &rows) override;
  Result<UsageTotals> usage_of(OwnerKind kind, std::string_view owner_id, int64_t from_ms) override;
  Result<std::vector<UsageGroup>> usage_report(GroupBy group_by, int64_t from_ms,
                                               int64_t to_ms) override;
  Result<int64_t> count_usage() override;
  Result<int64_t> prune_usage(int64_t before_ms) override;

  Status put_budget(const Budget &budget) override;
  // kNotFound when no such budget exists.
  Status delete_budget(OwnerKind kind, std::string_view owner_id, Period period) override;
  Result<std::vector<Budget>> list_budgets() override;
  Result<bool> record_alert(OwnerKind kind, std::string_view owner_id, int64_t period_start,
                            int threshold) override;

  // All three ports' check(): fails when the file was removed or replaced under the open
  // connection, or can no longer be written by this user, even though the open descriptor still
  // could.
  Status check() override;
  // Writes `path` + ".tmp", checks it, then renames it to `path`. The copy is a self-contained
  // file (rollback journal mode, no -wal beside it).
  Status backup_to(const std::string &path);

  // The daily roll-ups with from_day <= day < to_day ("YYYY-MM-DD"), ordered by their key.
  Result<std::vector<DailyUsage>> usage_daily(std::string_view from_day, std::string_view to_day);
  // `PRAGMA integrity_check`'s answer: "ok" when the file is sound.
  Result<std::string> integrity_check();
  // The schema version of the open database (sqlite_schema_version() once open() succeeded).
  Result<int64_t> schema_version();
  const std::string &path() const { return path_; }

private:
  struct Impl;
  SqliteStore(std::string path, std::unique_ptr<Impl> impl);

  std::string path_;
  std::mutex mu_; // guards impl_ (the connection and its statement cache)
  std::unique_ptr<Impl> impl_;
};

// Checks that `file` is a sound Gantry database (integrity_check says "ok" and its schema
// version is one this binary knows) without writing to it.
Status verify_database_file(const std::string &file);

// Replaces <data_dir>/gantry.db with a verified copy of `backup_file` (via a temporary file and
// a rename, removing stale -wal/-shm files). Refuses while any other connection (a running
// server, a CLI command) has the database open. The check and the rename are not one atomic
// step: a server that starts in between would keep the replaced file open, so stop the server
// before restoring.
Status restore_database(const std::string &backup_file, const std::string &data_dir);

} // namespace gantry::control
