// A small PostgreSQL access layer over libpq (Debian's libpq 15): a bounded pool of connections,
// statements with text parameters, results without libpq in their type, transactions, and
// reconnection. The only header that names PostgreSQL connections; the adapters of the state
// ports (store/postgres/*) build on it.
//
// Why text parameters: every column Gantry stores is text, a 64-bit integer or a double, and
// text keeps the binding simple and the statements readable in logs; PostgreSQL parses them with
// the column's type. Statements are short, so the pool is small (8 by default): nothing on a
// request's hot path waits for PostgreSQL (store.h).
//
// Threading: thread-safe; each call (or transaction) holds one pooled connection.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "core/clock.h"
#include "core/result.h"

struct pg_conn;
struct pg_result;

namespace gantry::store {

struct PgOptions {
  std::string url; // postgresql://user[:password]@host[:port]/db[?sslmode=...]
  size_t pool_size = 16;
  std::chrono::milliseconds connect_timeout{5000};
  std::chrono::milliseconds statement_timeout{30'000};
};

// The URL with its password replaced by ***, for logs and errors.
std::string redact_pg_url(std::string_view url);

// One statement's rows, as text.
class PgResult {
public:
  PgResult() = default;
  explicit PgResult(pg_result *r);
  PgResult(PgResult &&o) noexcept;
  PgResult &operator=(PgResult &&o) noexcept;
  PgResult(const PgResult &) = delete;
  PgResult &operator=(const PgResult &) = delete;
  ~PgResult();

  int rows() const;
  int64_t affected() const; // rows an INSERT/UPDATE/DELETE changed
  std::string text(int row, int col) const;
  int64_t i64(int row, int col) const;
  double f64(int row, int col) const;
  bool is_null(int row, int col) const;

private:
  pg_result *r_ = nullptr;
};

// Statement parameters: text, or numbers formatted exactly (doubles round-trip).
class PgParams {
public:
  PgParams &text(std::string_view v) {
    values_.emplace_back(v);
    return *this;
  }
  PgParams &i64(int64_t v) {
    values_.push_back(std::to_string(v));
    return *this;
  }
  PgParams &f64(double v);
  PgParams &boolean(bool v) {
    values_.push_back(v ? "true" : "false");
    return *this;
  }
  // Raw bytes for a bytea column, sent in binary (no escaping, no hex doubling).
  PgParams &bytes(std::string_view v) {
    values_.emplace_back(v);
    binary_.resize(values_.size(), 0);
    binary_.back() = 1;
    return *this;
  }
  const std::vector<std::string> &values() const { return values_; }
  // 1 for a binary parameter; shorter than values() when the last ones are text.
  const std::vector<int> &formats() const { return binary_; }

private:
  std::vector<std::string> values_;
  std::vector<int> binary_;
};

class PgPool;

// A pooled connection held for one unit of work; back to the pool when destroyed (rolled back
// first if a transaction is still open).
class PgConn {
public:
  PgConn(PgPool *pool, pg_conn *c, std::unordered_set<std::string> *prepared)
      : pool_(pool), c_(c), prepared_(prepared) {}
  PgConn(PgConn &&o) noexcept
      : pool_(o.pool_), c_(o.c_), prepared_(o.prepared_), in_tx_(o.in_tx_), broken_(o.broken_) {
    o.c_ = nullptr;
  }
  PgConn(const PgConn &) = delete;
  PgConn &operator=(const PgConn &) = delete;
  ~PgConn();

  // kIo when the connection is lost (it is then dropped, not pooled); a statement error is
  // kInternal with PostgreSQL's message, or kConflict for a unique violation (SQLSTATE 23505).
  // `binary_result`: columns come back as raw bytes (a bytea read without hex decoding).
  Result<PgResult> exec(const std::string &sql, const PgParams &params = {},
                        bool binary_result = false);
  // The same for a statement run on every request (job submission): parsed and planned once per
  // connection (PQprepare under `name`, which must always name the same SQL), then only
  // executed. Saves PostgreSQL the parse and plan of each call.
  Result<PgResult> exec_prepared(const char *name, const char *sql, const PgParams &params = {});
  Status begin();
  Status commit();
  pg_conn *raw() { return c_; } // LISTEN/NOTIFY waits on the socket

private:
  Result<PgResult> check(pg_result *raw);

  PgPool *pool_;
  pg_conn *c_;
  std::unordered_set<std::string> *prepared_; // names prepared on c_ (owned by the pool)
  bool in_tx_ = false;
  bool broken_ = false;
};

class PgPool : public std::enable_shared_from_this<PgPool> {
public:
  // Connects once and checks the server answers: a wrong URL, password or database is a start-up
  // error naming PostgreSQL and the redacted URL.
  static Result<std::shared_ptr<PgPool>> connect(PgOptions options, const Clock &clock);
  ~PgPool();
  PgPool(const PgPool &) = delete;
  PgPool &operator=(const PgPool &) = delete;

  Result<PgConn> acquire();
  Result<PgResult> exec(const std::string &sql, const PgParams &params = {},
                        bool binary_result = false);
  // Runs `work` in a transaction on one connection: committed when it returns Ok, rolled back
  // otherwise (its error is returned).
  Status transaction(const std::function<Status(PgConn &)> &work);
  // A connection outside the pool (LISTEN needs one of its own for as long as it listens).
  Result<pg_conn *> open_dedicated();

  const PgOptions &options() const { return options_; }

private:
  friend class PgConn;
  PgPool(PgOptions options, const Clock &clock) : options_(std::move(options)), clock_(clock) {}
  Result<pg_conn *> open_connection();
  void give_back(pg_conn *c, bool broken);

  PgOptions options_;
  const Clock &clock_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<pg_conn *> idle_;
  // The statements prepared on each open connection; dropped with the connection.
  std::unordered_map<pg_conn *, std::unique_ptr<std::unordered_set<std::string>>> prepared_;
  size_t open_ = 0;
  std::chrono::steady_clock::time_point retry_at_{};
  std::chrono::milliseconds backoff_{0};
};

} // namespace gantry::store
