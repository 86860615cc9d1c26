// The PostgreSQL JobRecords: webhook deliveries and signing secrets, disabled endpoints, and the
// Batch API's files and batches, shared by every node (issue 13). Same semantics as
// SqliteJobRecords, held to the same contract suite; batch changes are compare-and-set on the
// status, so two nodes never both win a transition. File contents are bytea, sent and read in
// binary.
//
// Threading: thread-safe.
#pragma once

#include <memory>

#include "jobs/job_records.h"
#include "store/postgres/pg_db.h"

namespace gantry::store {

class PgJobRecords final : public jobs::JobRecords {
public:
  // Migrates the schema if needed.
  static Result<std::unique_ptr<PgJobRecords>> open(std::shared_ptr<PgPool> pool);

  Status add_delivery(const jobs::Delivery &d) override;
  Status update_delivery(const jobs::Delivery &d) override;
  Result<std::vector<jobs::Delivery>> due_deliveries(int64_t now_ms, int per_project,
                                                     int limit) override;
  Result<int64_t> next_delivery_at() override;
  Result<std::vector<jobs::Delivery>> deliveries_of(std::string_view job_id) override;
  Result<std::vector<std::string>> webhook_secrets(std::string_view project,
                                                   int64_t now_ms) override;
  Status rotate_webhook_secret(std::string_view project, std::string_view secret, int64_t now_ms,
                               int64_t grace_ms) override;
  Status disable_endpoint(std::string_view project, std::string_view url, int64_t now_ms) override;
  Result<bool> endpoint_disabled(std::string_view project, std::string_view url) override;
  Status put_file(const jobs::StoredFile &f, const jobs::FileQuota &quota) override;
  Result<std::unique_ptr<jobs::FileWriter>> create_file(std::string_view id,
                                                        int64_t now_ms) override;
  Result<std::optional<jobs::StoredFile>> get_file_info(std::string_view id) override;
  Result<std::optional<std::string>> read_file_piece(std::string_view id, int64_t index) override;
  Result<bool> delete_file(std::string_view project, std::string_view id) override;
  Result<int64_t> purge_files(int64_t created_before_ms) override;
  Status put_batch(const jobs::Batch &b) override;
  Result<bool> transition_batch(const jobs::Batch &b, std::string_view from_status) override;
  Result<std::optional<jobs::Batch>> get_batch(std::string_view id) override;
  Result<std::vector<jobs::Batch>> active_batches() override;
  Result<std::vector<jobs::Batch>> list_batches(std::string_view project, std::string_view after,
                                                int limit) override;
  Result<jobs::BatchCounts> batch_counts(std::string_view batch_id) override;

private:
  class Writer;
  explicit PgJobRecords(std::shared_ptr<PgPool> pool) : pool_(std::move(pool)) {}
  std::shared_ptr<PgPool> pool_;
};

} // namespace gantry::store
