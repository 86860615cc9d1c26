// Private to the SQLite store's files (sqlite_store.cpp and the three aggregate files): the
// connection, its statement cache and the transaction guard behind SqliteStore.
#pragma once

#include <sqlite3.h>
#include <sys/types.h>

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>

#include "store/sqlite/sqlite_db.h"
#include "store/sqlite/sqlite_store.h"

namespace gantry::control {

struct SqliteConnectionCloser {
  void operator()(sqlite3 *db) const { sqlite3_close_v2(db); }
};
using SqliteConnection = std::unique_ptr<sqlite3, SqliteConnectionCloser>;

struct SqliteStore::Impl {
  SqliteConnection db; // declared first: destroyed after the statements below are finalized
  // Looked up by the SQL's text without building a std::string (a malloc per statement run).
  struct SqlHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  std::unordered_map<std::string, sqlite3_stmt *, SqlHash, std::equal_to<>> stmts;
  dev_t dev = 0; // the file opened, to notice it being removed or replaced
  ino_t ino = 0;
  int64_t health_seq = 0;

  ~Impl() {
    for (auto &[sql, stmt] : stmts)
      sqlite3_finalize(stmt);
  }

  // A cached prepared statement; the SQL text is the cache key.
  Result<Query> query(const char *sql) {
    auto it = stmts.find(std::string_view(sql));
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

} // namespace gantry::control
