#include "store/postgres/pg_job_records.h"

#include "store/postgres/pg_store.h"

namespace gantry::store {
namespace {

using jobs::Batch;
using jobs::Delivery;
using jobs::StoredFile;

constexpr const char *kDeliveryColumns =
    "id, job_id, project, url, event, payload, status, attempts, next_at_ms, last_status, "
    "last_error, created_ms, delivered_ms";

Delivery read_delivery(const PgResult &r, int i) {
  Delivery d;
  d.id = r.text(i, 0);
  d.job_id = r.text(i, 1);
  d.project = r.text(i, 2);
  d.url = r.text(i, 3);
  d.event = r.text(i, 4);
  d.payload = r.text(i, 5);
  d.status = r.text(i, 6);
  d.attempts = static_cast<int>(r.i64(i, 7));
  d.next_at_ms = r.i64(i, 8);
  d.last_status = static_cast<int>(r.i64(i, 9));
  d.last_error = r.text(i, 10);
  d.created_ms = r.i64(i, 11);
  d.delivered_ms = r.i64(i, 12);
  return d;
}

std::vector<Delivery> read_deliveries(const PgResult &r) {
  std::vector<Delivery> out;
  for (int i = 0; i < r.rows(); ++i)
    out.push_back(read_delivery(r, i));
  return out;
}

constexpr const char *kBatchColumns =
    "id, project, key_id, endpoint, input_file_id, completion_window, status, output_file_id, "
    "error_file_id, errors, total, completed, failed, metadata, created_ms, in_progress_ms, "
    "finalizing_ms, completed_ms, failed_ms, expired_ms, cancelling_ms, cancelled_ms, expires_ms";

Batch read_batch(const PgResult &r, int i) {
  Batch b;
  b.id = r.text(i, 0);
  b.project = r.text(i, 1);
  b.key_id = r.text(i, 2);
  b.endpoint = r.text(i, 3);
  b.input_file_id = r.text(i, 4);
  b.completion_window = r.text(i, 5);
  b.status = r.text(i, 6);
  b.output_file_id = r.text(i, 7);
  b.error_file_id = r.text(i, 8);
  b.errors = r.text(i, 9);
  b.total = r.i64(i, 10);
  b.completed = r.i64(i, 11);
  b.failed = r.i64(i, 12);
  b.metadata = r.text(i, 13);
  b.created_ms = r.i64(i, 14);
  b.in_progress_ms = r.i64(i, 15);
  b.finalizing_ms = r.i64(i, 16);
  b.completed_ms = r.i64(i, 17);
  b.failed_ms = r.i64(i, 18);
  b.expired_ms = r.i64(i, 19);
  b.cancelling_ms = r.i64(i, 20);
  b.cancelled_ms = r.i64(i, 21);
  b.expires_ms = r.i64(i, 22);
  return b;
}

std::vector<Batch> read_batches(const PgResult &r) {
  std::vector<Batch> out;
  for (int i = 0; i < r.rows(); ++i)
    out.push_back(read_batch(r, i));
  return out;
}

} // namespace

Result<std::unique_ptr<PgJobRecords>> PgJobRecords::open(std::shared_ptr<PgPool> pool) {
  GANTRY_TRY(migrate_pg_schema(*pool));
  return std::unique_ptr<PgJobRecords>(new PgJobRecords(std::move(pool)));
}

Status PgJobRecords::add_delivery(const Delivery &d) {
  GANTRY_TRY(pool_->exec(std::string("INSERT INTO job_deliveries(") + kDeliveryColumns +
                             ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) "
                             "ON CONFLICT (id) DO NOTHING",
                         PgParams()
                             .text(d.id)
                             .text(d.job_id)
                             .text(d.project)
                             .text(d.url)
                             .text(d.event)
                             .text(d.payload)
                             .text(d.status)
                             .i64(d.attempts)
                             .i64(d.next_at_ms)
                             .i64(d.last_status)
                             .text(d.last_error)
                             .i64(d.created_ms)
                             .i64(d.delivered_ms)));
  return Ok();
}

Status PgJobRecords::update_delivery(const Delivery &d) {
  GANTRY_TRY(pool_->exec("UPDATE job_deliveries SET status = $1, attempts = $2, next_at_ms = $3, "
                         "last_status = $4, last_error = $5, delivered_ms = $6 WHERE id = $7",
                         PgParams()
                             .text(d.status)
                             .i64(d.attempts)
                             .i64(d.next_at_ms)
                             .i64(d.last_status)
                             .text(d.last_error)
                             .i64(d.delivered_ms)
                             .text(d.id)));
  return Ok();
}

Result<std::vector<Delivery>> PgJobRecords::due_deliveries(int64_t now_ms, int per_project,
                                                           int limit) {
  // At most `per_project` rows of each project, so one project's backlog cannot fill the page.
  GANTRY_ASSIGN_OR_RETURN(
      PgResult r,
      pool_->exec(std::string("SELECT ") + kDeliveryColumns + " FROM (SELECT " + kDeliveryColumns +
                      ", row_number() OVER (PARTITION BY project ORDER BY next_at_ms, id) AS rn "
                      "FROM job_deliveries WHERE status = 'pending' AND next_at_ms <= $1) d "
                      "WHERE rn <= $2 ORDER BY next_at_ms, id COLLATE \"C\" LIMIT $3",
                  PgParams().i64(now_ms).i64(per_project).i64(limit)));
  return read_deliveries(r);
}

Result<int64_t> PgJobRecords::next_delivery_at() {
  GANTRY_ASSIGN_OR_RETURN(PgResult r, pool_->exec("SELECT coalesce(min(next_at_ms), 0) FROM "
                                                  "job_deliveries WHERE status = 'pending'"));
  return r.i64(0, 0);
}

Result<std::vector<Delivery>> PgJobRecords::deliveries_of(std::string_view job_id) {
  GANTRY_ASSIGN_OR_RETURN(PgResult r,
                          pool_->exec(std::string("SELECT ") + kDeliveryColumns +
                                          " FROM job_deliveries WHERE job_id = $1 ORDER BY "
                                          "created_ms, id COLLATE \"C\"",
                                      PgParams().text(job_id)));
  return read_deliveries(r);
}

Result<std::vector<std::string>> PgJobRecords::webhook_secrets(std::string_view project,
                                                               int64_t now_ms) {
  GANTRY_ASSIGN_OR_RETURN(
      PgResult r, pool_->exec("SELECT secret FROM webhook_secrets WHERE project = $1 AND "
                              "(expires_ms = 0 OR expires_ms > $2) ORDER BY created_ms DESC, "
                              "(expires_ms = 0) DESC",
                              PgParams().text(project).i64(now_ms)));
  std::vector<std::string> out;
  for (int i = 0; i < r.rows(); ++i)
    out.push_back(r.text(i, 0));
  return out;
}

Status PgJobRecords::rotate_webhook_secret(std::string_view project, std::string_view secret,
                                           int64_t now_ms, int64_t grace_ms) {
  return pool_->transaction([&](PgConn &c) -> Status {
    GANTRY_TRY(c.exec("UPDATE webhook_secrets SET expires_ms = $1 WHERE project = $2 AND "
                      "expires_ms = 0",
                      PgParams().i64(now_ms + grace_ms).text(project)));
    GANTRY_TRY(c.exec("INSERT INTO webhook_secrets(project, secret, created_ms, expires_ms) "
                      "VALUES ($1, $2, $3, 0)",
                      PgParams().text(project).text(secret).i64(now_ms)));
    return Ok();
  });
}

Status PgJobRecords::disable_endpoint(std::string_view project, std::string_view url,
                                      int64_t now_ms) {
  GANTRY_TRY(pool_->exec("INSERT INTO webhook_disabled(project, url, disabled_ms) VALUES ($1, $2, "
                         "$3) ON CONFLICT DO NOTHING",
                         PgParams().text(project).text(url).i64(now_ms)));
  return Ok();
}

Result<bool> PgJobRecords::endpoint_disabled(std::string_view project, std::string_view url) {
  GANTRY_ASSIGN_OR_RETURN(PgResult r,
                          pool_->exec("SELECT 1 FROM webhook_disabled WHERE project = $1 AND "
                                      "url = $2",
                                      PgParams().text(project).text(url)));
  return r.rows() > 0;
}

namespace {

// The file's row when the quota allows, in `c`'s transaction.
Status insert_file(PgConn &c, const StoredFile &f, const jobs::FileQuota &quota) {
  if (quota.max_files > 0 || quota.max_bytes > 0) {
    // Serialises uploads of one project (its bound holds across nodes).
    GANTRY_TRY(c.exec("SELECT pg_advisory_xact_lock(hashtext('files:' || $1))",
                      PgParams().text(f.project)));
    GANTRY_ASSIGN_OR_RETURN(PgResult r, c.exec("SELECT count(*), coalesce(sum(bytes), 0) FROM "
                                               "files WHERE project = $1",
                                               PgParams().text(f.project)));
    const int64_t count = r.i64(0, 0), bytes = r.i64(0, 1);
    if (quota.max_files > 0 && count + 1 > quota.max_files)
      return Error{ErrorCode::kQuotaExceeded,
                   "the project stores " + std::to_string(count) + " files; the limit is " +
                       std::to_string(quota.max_files) + ". Delete files you no longer need.",
                   "file"};
    if (quota.max_bytes > 0 && bytes + f.bytes > quota.max_bytes)
      return Error{ErrorCode::kQuotaExceeded,
                   "the project's files would take " + std::to_string(bytes + f.bytes) +
                       " bytes; the limit is " + std::to_string(quota.max_bytes) +
                       ". Delete files you no longer need.",
                   "file"};
  }
  GANTRY_TRY(c.exec("INSERT INTO files(id, project, purpose, filename, bytes, content, "
                    "created_ms) VALUES ($1, $2, $3, $4, $5, ''::bytea, $6)",
                    PgParams()
                        .text(f.id)
                        .text(f.project)
                        .text(f.purpose)
                        .text(f.filename)
                        .i64(f.bytes)
                        .i64(f.created_ms)));
  return Ok();
}

constexpr const char *kInsertPiece =
    "INSERT INTO file_pieces(file_id, seq, data, created_ms) VALUES ($1, $2, $3, $4)";

} // namespace

Status PgJobRecords::put_file(const StoredFile &f, const jobs::FileQuota &quota) {
  return pool_->transaction([&](PgConn &c) -> Status {
    GANTRY_TRY(insert_file(c, f, quota));
    const std::string_view content = f.content;
    for (size_t at = 0, seq = 0; at < content.size(); at += jobs::kFilePieceBytes, ++seq)
      GANTRY_TRY(c.exec(kInsertPiece, PgParams()
                                          .text(f.id)
                                          .i64(static_cast<int64_t>(seq))
                                          .bytes(content.substr(at, jobs::kFilePieceBytes))
                                          .i64(f.created_ms)));
    return Ok();
  });
}

// Each piece is its own statement (autocommit): an upload from a slow client holds no
// transaction open for its length.
class PgJobRecords::Writer final : public jobs::FileWriter {
public:
  Writer(std::shared_ptr<PgPool> pool, std::string id, int64_t now_ms)
      : pool_(std::move(pool)), id_(std::move(id)), now_ms_(now_ms) {}
  ~Writer() override {
    if (!committed_ && seq_ > 0) // left behind on failure: purge_files() removes orphans
      (void)pool_->exec("DELETE FROM file_pieces WHERE file_id = $1", PgParams().text(id_));
  }
  Status append(std::string_view piece) override {
    GANTRY_TRY(pool_->exec(kInsertPiece, PgParams().text(id_).i64(seq_).bytes(piece).i64(now_ms_)));
    ++seq_;
    return Ok();
  }
  Status commit(const StoredFile &info, const jobs::FileQuota &quota) override {
    StoredFile f = info;
    f.id = id_;
    GANTRY_TRY(pool_->transaction([&](PgConn &c) { return insert_file(c, f, quota); }));
    committed_ = true;
    return Ok();
  }

private:
  std::shared_ptr<PgPool> pool_;
  const std::string id_;
  const int64_t now_ms_;
  int64_t seq_ = 0;
  bool committed_ = false;
};

Result<std::unique_ptr<jobs::FileWriter>> PgJobRecords::create_file(std::string_view id,
                                                                    int64_t now_ms) {
  return std::unique_ptr<jobs::FileWriter>(new Writer(pool_, std::string(id), now_ms));
}

Result<std::optional<std::string>> PgJobRecords::read_file_piece(std::string_view id,
                                                                 int64_t index) {
  GANTRY_ASSIGN_OR_RETURN(PgResult r,
                          pool_->exec("SELECT data FROM file_pieces WHERE file_id = $1 AND seq = "
                                      "$2",
                                      PgParams().text(id).i64(index), /*binary_result=*/true));
  if (r.rows() == 0)
    return std::optional<std::string>();
  return std::optional<std::string>(r.text(0, 0));
}

Result<std::optional<StoredFile>> PgJobRecords::get_file_info(std::string_view id) {
  GANTRY_ASSIGN_OR_RETURN(PgResult r,
                          pool_->exec("SELECT id, project, purpose, filename, bytes, created_ms "
                                      "FROM files WHERE id = $1",
                                      PgParams().text(id)));
  if (r.rows() == 0)
    return std::optional<StoredFile>();
  return std::optional<StoredFile>(StoredFile{r.text(0, 0), r.text(0, 1), r.text(0, 2),
                                              r.text(0, 3), r.i64(0, 4), r.i64(0, 5), ""});
}

Result<bool> PgJobRecords::delete_file(std::string_view project, std::string_view id) {
  bool gone = false;
  GANTRY_TRY(pool_->transaction([&](PgConn &c) -> Status {
    GANTRY_ASSIGN_OR_RETURN(PgResult r, c.exec("DELETE FROM files WHERE id = $1 AND project = $2",
                                               PgParams().text(id).text(project)));
    gone = r.affected() == 1;
    if (gone)
      GANTRY_TRY(c.exec("DELETE FROM file_pieces WHERE file_id = $1", PgParams().text(id)));
    return Ok();
  }));
  return gone;
}

Result<int64_t> PgJobRecords::purge_files(int64_t created_before_ms) {
  int64_t n = 0;
  GANTRY_TRY(pool_->transaction([&](PgConn &c) -> Status {
    // The pieces of the files going, and pieces no file owns (an upload cut short by a crash).
    GANTRY_TRY(c.exec("DELETE FROM file_pieces p WHERE p.file_id IN (SELECT id FROM files WHERE "
                      "created_ms < $1) OR (p.created_ms < $1 AND NOT EXISTS (SELECT 1 FROM files "
                      "f WHERE f.id = p.file_id))",
                      PgParams().i64(created_before_ms)));
    GANTRY_ASSIGN_OR_RETURN(PgResult r, c.exec("DELETE FROM files WHERE created_ms < $1",
                                               PgParams().i64(created_before_ms)));
    n = r.affected();
    return Ok();
  }));
  return n;
}

Status PgJobRecords::put_batch(const Batch &b) {
  std::string updates;
  const std::string cols = kBatchColumns;
  // Insert or replace: every column but the id takes the new value.
  size_t start = cols.find(',') + 2;
  while (start < cols.size()) {
    size_t end = cols.find(',', start);
    const std::string name = cols.substr(start, end == std::string::npos ? end : end - start);
    updates += (updates.empty() ? "" : ", ") + name + " = excluded." + name;
    if (end == std::string::npos)
      break;
    start = end + 2;
  }
  GANTRY_TRY(pool_->exec(std::string("INSERT INTO batches(") + kBatchColumns +
                             ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, "
                             "$14, $15, $16, $17, $18, $19, $20, $21, $22, $23) ON CONFLICT (id) "
                             "DO UPDATE SET " +
                             updates,
                         PgParams()
                             .text(b.id)
                             .text(b.project)
                             .text(b.key_id)
                             .text(b.endpoint)
                             .text(b.input_file_id)
                             .text(b.completion_window)
                             .text(b.status)
                             .text(b.output_file_id)
                             .text(b.error_file_id)
                             .text(b.errors)
                             .i64(b.total)
                             .i64(b.completed)
                             .i64(b.failed)
                             .text(b.metadata)
                             .i64(b.created_ms)
                             .i64(b.in_progress_ms)
                             .i64(b.finalizing_ms)
                             .i64(b.completed_ms)
                             .i64(b.failed_ms)
                             .i64(b.expired_ms)
                             .i64(b.cancelling_ms)
                             .i64(b.cancelled_ms)
                             .i64(b.expires_ms)));
  return Ok();
}

Result<bool> PgJobRecords::transition_batch(const Batch &b, std::string_view from_status) {
  GANTRY_ASSIGN_OR_RETURN(
      PgResult r,
      pool_->exec("UPDATE batches SET status = $1, output_file_id = $2, error_file_id = $3, "
                  "errors = $4, total = $5, completed = $6, failed = $7, in_progress_ms = $8, "
                  "finalizing_ms = $9, completed_ms = $10, failed_ms = $11, expired_ms = $12, "
                  "cancelling_ms = $13, cancelled_ms = $14 WHERE id = $15 AND status = $16",
                  PgParams()
                      .text(b.status)
                      .text(b.output_file_id)
                      .text(b.error_file_id)
                      .text(b.errors)
                      .i64(b.total)
                      .i64(b.completed)
                      .i64(b.failed)
                      .i64(b.in_progress_ms)
                      .i64(b.finalizing_ms)
                      .i64(b.completed_ms)
                      .i64(b.failed_ms)
                      .i64(b.expired_ms)
                      .i64(b.cancelling_ms)
                      .i64(b.cancelled_ms)
                      .text(b.id)
                      .text(from_status)));
  return r.affected() == 1;
}

Result<std::optional<Batch>> PgJobRecords::get_batch(std::string_view id) {
  GANTRY_ASSIGN_OR_RETURN(PgResult r, pool_->exec(std::string("SELECT ") + kBatchColumns +
                                                      " FROM batches WHERE id = $1",
                                                  PgParams().text(id)));
  if (r.rows() == 0)
    return std::optional<Batch>();
  return std::optional<Batch>(read_batch(r, 0));
}

Result<std::vector<Batch>> PgJobRecords::active_batches() {
  GANTRY_ASSIGN_OR_RETURN(PgResult r,
                          pool_->exec(std::string("SELECT ") + kBatchColumns +
                                      " FROM batches WHERE status IN ('validating', "
                                      "'in_progress', 'finalizing', 'cancelling') ORDER BY id "
                                      "COLLATE \"C\""));
  return read_batches(r);
}

Result<std::vector<Batch>> PgJobRecords::list_batches(std::string_view project,
                                                      std::string_view after, int limit) {
  // Newest first, in insertion order (seq); the cursor is the seq of the `after` batch.
  GANTRY_ASSIGN_OR_RETURN(
      PgResult r,
      pool_->exec(std::string("SELECT ") + kBatchColumns +
                      " FROM batches WHERE project = $1 AND ($2 = '' OR seq < (SELECT seq FROM "
                      "batches WHERE id = $2)) ORDER BY seq DESC LIMIT $3",
                  PgParams().text(project).text(after).i64(limit)));
  return read_batches(r);
}

Result<jobs::BatchCounts> PgJobRecords::batch_counts(std::string_view batch_id) {
  GANTRY_ASSIGN_OR_RETURN(PgResult r, pool_->exec("SELECT status, count(*) FROM jobs WHERE "
                                                  "batch_id = $1 GROUP BY status",
                                                  PgParams().text(batch_id)));
  jobs::BatchCounts c;
  for (int i = 0; i < r.rows(); ++i) {
    const std::string s = r.text(i, 0);
    const int64_t n = r.i64(i, 1);
    c.total += n;
    if (s == "succeeded")
      c.succeeded += n;
    else if (s == "failed" || s == "canceled" || s == "expired")
      c.failed += n;
  }
  return c;
}

} // namespace gantry::store
