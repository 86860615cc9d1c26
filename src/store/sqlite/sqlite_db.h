// The one SQLite wrapper of the embedded adapters (SqliteStore, and the jobs adapters
// sqlite_job_queue / sqlite_job_records): typed binds and reads on prepared statements, a
// connection with a statement cache, IMMEDIATE transactions, and SQLite result codes mapped to
// Gantry's error codes. The schema is created and migrated by SqliteStore::open (open_stores opens
// it first).
//
// Threading: not thread-safe; each adapter guards its connection with its own mutex.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>

#include "core/result.h"

struct sqlite3;
struct sqlite3_stmt;

namespace gantry::control {

// BUSY/LOCKED → kUnavailable, CORRUPT/NOTADB → kCorruptData, CONSTRAINT → kInvalidArgument,
// anything else → kIo; the message names `what` and SQLite's own explanation.
Error sqlite_error(int rc, std::string_view what, sqlite3 *db);

// A prepared statement in use. Borrowed from a cache (reset on destruction so the cache can
// hand it out again) or owned (finalized on destruction: prepare_once, one-off connections).
class Query {
public:
  Query(sqlite3 *db, sqlite3_stmt *stmt, bool owned = false)
      : db_(db), stmt_(stmt), owned_(owned) {}
  Query(Query &&o) noexcept;
  Query(const Query &) = delete;
  Query &operator=(const Query &) = delete;
  Query &operator=(Query &&) = delete;
  ~Query();

  Query &i64(int64_t v);
  Query &f64(double v);
  Query &text(std::string_view v);
  // Binds without copying: the bytes must stay alive until this Query ends (its destructor
  // resets the statement and clears the bindings), as a record's fields do while it is written.
  Query &text_ref(std::string_view v);
  Query &blob(std::string_view v);

  Result<bool> step(); // true: a row is available
  Status run();
  int changes() const;

  int64_t col_i64(int i) const;
  double col_f64(int i) const;
  std::string col_text(int i) const;

private:
  sqlite3 *db_;
  sqlite3_stmt *stmt_;
  bool owned_;
  int next_ = 0;
};

// A statement prepared for one use on `db` (pragmas on a connection without a cache).
Result<Query> prepare_once(sqlite3 *db, const char *sql);

class Db {
public:
  // Opens an existing, migrated database (WAL, synchronous=NORMAL: a killed process loses no
  // committed transaction; a power loss may lose the last few).
  static Result<std::unique_ptr<Db>> open(const std::string &path);
  ~Db();
  Db(const Db &) = delete;
  Db &operator=(const Db &) = delete;

  Status exec(const char *sql);
  // Statements are prepared once per connection and kept for its lifetime.
  Result<Query> query(const char *sql);

private:
  explicit Db(sqlite3 *db) : db_(db) {}
  sqlite3 *db_;
  std::unordered_map<const char *, sqlite3_stmt *> cache_;
};

// BEGIN IMMEDIATE ... COMMIT, rolled back unless commit() succeeded.
class Transaction {
public:
  static Result<Transaction> begin(Db &db);
  Transaction(Transaction &&o) noexcept : db_(o.db_), open_(std::exchange(o.open_, false)) {}
  ~Transaction();
  Status commit();

private:
  explicit Transaction(Db &db) : db_(db), open_(true) {}
  Db &db_;
  bool open_;
};

} // namespace gantry::control
