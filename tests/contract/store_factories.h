// The adapter factories of the store contract suites (KeyStore, UsageLedger, BudgetStore,
// JobQueue, JobRecords). A factory owns one backend for the length of a test and hands out
// adapters on it; asking again gives another connection to the same backend, as another process
// or node (or the same one restarted) would have. A PostgreSQL factory (a fresh schema per test)
// is added to the type lists at the bottom, and every suite then runs against it too.
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <stdexcept>
#include <string>

#include "control/budget_store.h"
#include "control/key_store.h"
#include "control/temp_dir.h"
#include "control/usage_ledger.h"
#include "core/clock.h"
#include "jobs/job_queue.h"
#include "jobs/job_records.h"
#include "store/postgres/pg_job_queue.h"
#include "store/postgres/pg_job_records.h"
#include "store/postgres/pg_store.h"
#include "store/sqlite/sqlite_job_queue.h"
#include "store/sqlite/sqlite_job_records.h"
#include "store/sqlite/sqlite_store.h"
#include "support/postgres_process.h"

namespace gantry::contract {

// The embedded adapters: one SQLite file in a fresh temporary directory.
class SqliteFactory {
public:
  static constexpr const char *kName = "sqlite";

  SqliteFactory() {
    // Creates and migrates gantry.db; the job adapters need it migrated.
    auto s = control::SqliteStore::open(dir_.path());
    if (!s)
      throw std::runtime_error(s.error().message);
  }

  // A connection implementing the control plane's three store ports.
  std::shared_ptr<control::SqliteStore> open_store() {
    auto s = control::SqliteStore::open(dir_.path());
    EXPECT_TRUE(s) << s.error().message;
    return s ? std::shared_ptr<control::SqliteStore>(std::move(s).value()) : nullptr;
  }
  std::shared_ptr<control::KeyStore> key_store() { return open_store(); }
  std::shared_ptr<control::UsageLedger> usage_ledger() { return open_store(); }
  std::shared_ptr<control::BudgetStore> budget_store() { return open_store(); }

  // A node's queue (a process starting: it reclaims what its node id held before).
  std::unique_ptr<jobs::JobQueue> job_queue(const jobs::JobQueueOptions &options,
                                            const Clock &clock) {
    auto q = jobs::SqliteJobQueue::open(control::database_path(dir_.path()), options, clock);
    EXPECT_TRUE(q) << q.error().message;
    return q ? std::move(q).value() : nullptr;
  }
  std::unique_ptr<jobs::JobRecords> job_records() {
    auto r = jobs::SqliteJobRecords::open(control::database_path(dir_.path()));
    EXPECT_TRUE(r) << r.error().message;
    return r ? std::move(r).value() : nullptr;
  }

private:
  gantry::testing::TempDir dir_;
};

// PostgreSQL: one real server per test binary (initdb takes seconds), a fresh database per test.
// The control-plane ports and the job ports.
class PostgresFactory {
public:
  static constexpr const char *kName = "postgres";

  PostgresFactory() {
    static std::string why;
    static std::unique_ptr<gantry::testing::PostgresProcess> pg =
        gantry::testing::PostgresProcess::start_new(&why);
    if (!pg)
      throw std::runtime_error(why);
    static int n = 0;
    url_ = pg->create_database("contract" + std::to_string(++n));
  }

  std::shared_ptr<store::PgStore> open_store() {
    store::PgOptions o;
    o.url = url_;
    auto s = store::PgStore::open(o, clock_);
    EXPECT_TRUE(s) << s.error().message;
    return s ? std::move(s).value() : nullptr;
  }
  std::shared_ptr<control::KeyStore> key_store() { return open_store(); }
  std::shared_ptr<control::UsageLedger> usage_ledger() { return open_store(); }
  std::shared_ptr<control::BudgetStore> budget_store() { return open_store(); }

  // A node's queue on its own pool (a process starting: it reclaims what its node id held).
  std::unique_ptr<jobs::JobQueue> job_queue(const jobs::JobQueueOptions &options,
                                            const Clock &clock) {
    store::PgOptions o;
    o.url = url_;
    auto pool = store::PgPool::connect(o, clock_);
    EXPECT_TRUE(pool) << pool.error().message;
    if (!pool)
      return nullptr;
    auto q = store::PgJobQueue::open(*pool, options, clock);
    EXPECT_TRUE(q) << q.error().message;
    return q ? std::move(q).value() : nullptr;
  }
  std::unique_ptr<jobs::JobRecords> job_records() {
    store::PgOptions o;
    o.url = url_;
    auto pool = store::PgPool::connect(o, clock_);
    EXPECT_TRUE(pool) << pool.error().message;
    if (!pool)
      return nullptr;
    auto r = store::PgJobRecords::open(*pool);
    EXPECT_TRUE(r) << r.error().message;
    return r ? std::move(r).value() : nullptr;
  }

private:
  std::string url_;
  SystemClock clock_;
};

using StoreAdapters = ::testing::Types<SqliteFactory, PostgresFactory>;

// Names each instantiation after its adapter ("KeyStoreContract/sqlite.…").
struct AdapterName {
  template <typename T> static std::string GetName(int) { return T::kName; }
};

} // namespace gantry::contract
