// The embedded JobRecords: tables job_deliveries, webhook_secrets, webhook_disabled, files and
// batches of gantry.db, over its own connection.
//
// Threading: every method may be called from any thread (one mutex guards the connection).
#pragma once

#include <memory>
#include <mutex>
#include <string>

#include "jobs/job_records.h"

namespace gantry::control {
class Db;
}

namespace gantry::jobs {

using control::Db;

class SqliteJobRecords final : public JobRecords {
public:
  // `db_path` must already be migrated (SqliteStore::open; open_stores() does both).
  static Result<std::unique_ptr<SqliteJobRecords>> open(const std::string &db_path);
  ~SqliteJobRecords() override;

  Status add_delivery(const Delivery &d) override;
  Status update_delivery(const Delivery &d) override;
  Result<std::vector<Delivery>> due_deliveries(int64_t now_ms, int per_project, int limit) override;
  Result<int64_t> next_delivery_at() override;
  Result<std::vector<Delivery>> deliveries_of(std::string_view job_id) override;
  Result<std::vector<std::string>> webhook_secrets(std::string_view project,
                                                   int64_t now_ms) override;
  Status rotate_webhook_secret(std::string_view project, std::string_view secret, int64_t now_ms,
                               int64_t grace_ms) override;
  Status disable_endpoint(std::string_view project, std::string_view url, int64_t now_ms) override;
  Result<bool> endpoint_disabled(std::string_view project, std::string_view url) override;
  Status put_file(const StoredFile &f, const FileQuota &quota) override;
  Result<std::unique_ptr<FileWriter>> create_file(std::string_view id, int64_t now_ms) override;
  Result<std::optional<StoredFile>> get_file_info(std::string_view id) override;
  Result<std::optional<std::string>> read_file_piece(std::string_view id, int64_t index) override;
  Result<bool> delete_file(std::string_view project, std::string_view id) override;
  Result<int64_t> purge_files(int64_t created_before_ms) override;
  Status put_batch(const Batch &b) override;
  Result<bool> transition_batch(const Batch &b, std::string_view from_status) override;
  Result<std::optional<Batch>> get_batch(std::string_view id) override;
  Result<std::vector<Batch>> active_batches() override;
  Result<std::vector<Batch>> list_batches(std::string_view project, std::string_view after,
                                          int limit) override;
  Result<BatchCounts> batch_counts(std::string_view batch_id) override;

private:
  class Writer;
  explicit SqliteJobRecords(std::unique_ptr<Db> db);
  // Under mu_: the file's row when the quota allows, in the caller's transaction.
  Status insert_file_locked(const StoredFile &f, const FileQuota &quota);
  Status insert_piece_locked(std::string_view id, int64_t seq, std::string_view data,
                             int64_t now_ms);
  std::mutex mu_;
  std::unique_ptr<Db> db_;
};

} // namespace gantry::jobs
