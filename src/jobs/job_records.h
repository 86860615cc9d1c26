// The jobs module's other persisted records: webhook deliveries and signing secrets, and the
// Batch API's files and batches. A port like JobQueue; SqliteJobRecords is the embedded adapter.
//
// Threading: implementations are safe to call from any thread.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.h"

namespace gantry::jobs {

struct Delivery {
  std::string id; // the webhook-id header: one per event, stable across retries
  std::string job_id;
  std::string project;
  std::string url;
  std::string event; // "job.started", "job.completed"
  std::string payload;
  std::string status = "pending"; // pending|delivered|failed|disabled
  int attempts = 0;
  int64_t next_at_ms = 0;
  int last_status = 0;
  std::string last_error;
  int64_t created_ms = 0;
  int64_t delivered_ms = 0;
};

struct StoredFile {
  std::string id;
  std::string project;
  std::string purpose;
  std::string filename;
  int64_t bytes = 0;
  int64_t created_ms = 0;
  std::string content; // empty when read with get_file_info()
};

// A project's bound on stored files (audit M3); 0 = unbounded.
struct FileQuota {
  int64_t max_files = 0;
  int64_t max_bytes = 0;
};

// A stored file's content is kept as pieces of at most this size (put_file splits; an upload
// appends what arrived, up to this much at a time): a read or a write holds one piece in memory.
constexpr int64_t kFilePieceBytes = int64_t{1} << 20;

// A file stored as it arrives (a Batch API upload): each append() writes its piece at once, so
// memory holds one piece, never the file; commit() checks the project's quota and makes the file
// visible in one transaction. Destroyed without a successful commit(), it deletes what it wrote
// (a refused, truncated or abandoned upload leaves nothing). Pieces of a writer whose process died
// are removed by purge_files(). Threading: one thread at a time.
class FileWriter {
public:
  virtual ~FileWriter() = default;
  virtual Status append(std::string_view piece) = 0; // at most kFilePieceBytes
  // `info.bytes` is the sum of the pieces appended; kQuotaExceeded as put_file().
  virtual Status commit(const StoredFile &info, const FileQuota &quota) = 0;
};

struct Batch {
  std::string id;
  std::string project;
  std::string key_id;
  std::string endpoint;
  std::string input_file_id;
  std::string completion_window;
  std::string
      status; // validating|in_progress|finalizing|completed|failed|expired|cancelling|cancelled
  std::string output_file_id;
  std::string error_file_id;
  std::string errors; // JSON array text of {line, message}, "" when none
  int64_t total = 0;
  int64_t completed = 0;
  int64_t failed = 0;
  std::string metadata = "null";
  int64_t created_ms = 0;
  int64_t in_progress_ms = 0;
  int64_t finalizing_ms = 0;
  int64_t completed_ms = 0;
  int64_t failed_ms = 0;
  int64_t expired_ms = 0;
  int64_t cancelling_ms = 0;
  int64_t cancelled_ms = 0;
  int64_t expires_ms = 0;
};

// Job counts of one batch by outcome.
struct BatchCounts {
  int64_t total = 0;
  int64_t succeeded = 0;
  int64_t failed = 0; // failed, canceled, expired
};

class JobRecords {
public:
  virtual ~JobRecords() = default;

  virtual Status add_delivery(const Delivery &d) = 0;
  virtual Status update_delivery(const Delivery &d) = 0;
  // Pending deliveries due at `now_ms`, oldest first, at most `per_project` of each project
  // (the oldest of each), `limit` in all.
  virtual Result<std::vector<Delivery>> due_deliveries(int64_t now_ms, int per_project,
                                                       int limit) = 0;
  // The earliest next_at_ms of a pending delivery, 0 when none.
  virtual Result<int64_t> next_delivery_at() = 0;
  virtual Result<std::vector<Delivery>> deliveries_of(std::string_view job_id) = 0;

  // The project's signing secrets that are still valid at `now_ms`, newest first.
  virtual Result<std::vector<std::string>> webhook_secrets(std::string_view project,
                                                           int64_t now_ms) = 0;
  // Adds `secret` as the project's current one; the previous ones keep signing until
  // now_ms + grace_ms (a rotation: receivers may verify either while they switch).
  virtual Status rotate_webhook_secret(std::string_view project, std::string_view secret,
                                       int64_t now_ms, int64_t grace_ms) = 0;
  // A 410 Gone disables `url` for `project` only (another project may register the same URL).
  virtual Status disable_endpoint(std::string_view project, std::string_view url,
                                  int64_t now_ms) = 0;
  virtual Result<bool> endpoint_disabled(std::string_view project, std::string_view url) = 0;

  // Stores the file unless its project would then exceed `quota` (kQuotaExceeded; the check and
  // the insert are one transaction).
  virtual Status put_file(const StoredFile &f, const FileQuota &quota) = 0;
  // A file written piece by piece (FileWriter); `now_ms` dates its pieces until it is committed.
  virtual Result<std::unique_ptr<FileWriter>> create_file(std::string_view id, int64_t now_ms) = 0;
  virtual Result<std::optional<StoredFile>> get_file_info(std::string_view id) = 0; // no content
  // Piece `index` (0, 1, ...) of a stored file's content; std::nullopt past the last one. Reading
  // a file piece by piece holds one piece in memory (GET /v1/files/{id}/content, batch input).
  virtual Result<std::optional<std::string>> read_file_piece(std::string_view id,
                                                             int64_t index) = 0;
  // The file with its whole content in memory: for small files (tests, checks) only.
  Result<std::optional<StoredFile>> get_file(std::string_view id) {
    GANTRY_ASSIGN_OR_RETURN(auto f, get_file_info(id));
    if (!f)
      return f;
    for (int64_t i = 0;; ++i) {
      GANTRY_ASSIGN_OR_RETURN(auto piece, read_file_piece(id, i));
      if (!piece)
        break;
      f->content += *piece;
    }
    return f;
  }
  // True when the project's file existed and is gone now (its pieces with it).
  virtual Result<bool> delete_file(std::string_view project, std::string_view id) = 0;
  // Retention: deletes files created before `created_before_ms`, and pieces no file owns written
  // before it (an upload whose process died); how many files.
  virtual Result<int64_t> purge_files(int64_t created_before_ms) = 0;

  virtual Status put_batch(const Batch &b) = 0; // insert or replace: creation only
  // The batch's new state, written only while its stored status is still `from_status` (a
  // compare-and-set): true when this caller won the transition, false when another node (or
  // a cancel) changed the batch first. Every change after creation goes through here.
  virtual Result<bool> transition_batch(const Batch &b, std::string_view from_status) = 0;
  virtual Result<std::optional<Batch>> get_batch(std::string_view id) = 0;
  virtual Result<std::vector<Batch>> active_batches() = 0; // in_progress, finalizing, cancelling
  virtual Result<std::vector<Batch>> list_batches(std::string_view project, std::string_view after,
                                                  int limit) = 0;
  virtual Result<BatchCounts> batch_counts(std::string_view batch_id) = 0;
};

} // namespace gantry::jobs
