// The PostgreSQL adapter of the control plane's three store ports (KeyStore, UsageLedger,
// BudgetStore), for several nodes sharing one database (issue 13). Same tables and semantics as
// the SQLite adapter (store/sqlite/), held to the same contract suites.
//
// The schema is versioned in gantry_schema and migrated forward at open() inside one
// transaction holding a transaction-scoped advisory lock, so nodes starting together migrate it
// exactly once; a database written by a newer Gantry (a version this binary does not know) is
// refused with a message naming both versions.
//
// Threading: thread-safe (a pool of connections, one per call or transaction).
#pragma once

#include <memory>

#include "control/budget_store.h"
#include "control/key_store.h"
#include "control/usage_ledger.h"
#include "store/postgres/pg_db.h"

namespace gantry::store {

// The newest schema version this binary knows.
int pg_schema_version();

class PgStore final : public control::KeyStore,
                      public control::UsageLedger,
                      public control::BudgetStore {
public:
  // Connects, then creates or migrates the schema.
  static Result<std::shared_ptr<PgStore>> open(const PgOptions &options, const Clock &clock);
  explicit PgStore(std::shared_ptr<PgPool> pool) : pool_(std::move(pool)) {}

  Status put_project(const control::Project &project) override;
  Result<std::optional<control::Project>> get_project(std::string_view id) override;
  Result<std::vector<control::Project>> list_projects() override;
  Status insert_key(const control::ApiKey &key) override;
  Status update_key(const control::ApiKey &key) override;
  Result<std::optional<control::ApiKey>> get_key(std::string_view id) override;
  Result<std::vector<control::ApiKey>> list_keys(std::string_view project = {}) override;
  Result<int64_t> count_active_keys(int64_t now) override;
  Result<int64_t> count_keys_ever() override;
  Status touch_keys(const std::vector<std::pair<std::string, int64_t>> &last_used) override;
  Result<int64_t> keys_generation() override;

  Status append_usage(const std::vector<control::UsageRecord> &rows) override;
  Result<control::UsageTotals> usage_of(control::OwnerKind kind, std::string_view owner_id,
                                        int64_t from_ms) override;
  Result<std::vector<control::UsageGroup>> usage_report(control::GroupBy group_by, int64_t from_ms,
                                                        int64_t to_ms) override;
  Result<int64_t> count_usage() override;
  Result<int64_t> prune_usage(int64_t before_ms) override;

  Status put_budget(const control::Budget &budget) override;
  Status delete_budget(control::OwnerKind kind, std::string_view owner_id,
                       control::Period period) override;
  Result<std::vector<control::Budget>> list_budgets() override;
  Result<bool> record_alert(control::OwnerKind kind, std::string_view owner_id,
                            int64_t period_start, int threshold) override;

  // A round trip that also proves the database takes writes (not a read-only standby).
  Status check() override;

  const std::shared_ptr<PgPool> &pool() const { return pool_; }

private:
  std::shared_ptr<PgPool> pool_;
};

// Creates or migrates the schema (used by open(); exposed for the migration tests).
Status migrate_pg_schema(PgPool &pool);

} // namespace gantry::store
