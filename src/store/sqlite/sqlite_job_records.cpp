#include "store/sqlite/sqlite_job_records.h"

#include "store/sqlite/sqlite_db.h"
#include "store/sqlite/sqlite_record.h"

namespace gantry::jobs {

using control::col;
using control::Columns;
using control::Query;
using control::Transaction;
namespace {

const Columns<Delivery> &delivery_columns() {
  static const Columns<Delivery> c{
      col<&Delivery::id>("id"),
      col<&Delivery::job_id>("job_id"),
      col<&Delivery::project>("project"),
      col<&Delivery::url>("url"),
      col<&Delivery::event>("event"),
      col<&Delivery::payload>("payload"),
      col<&Delivery::status>("status"),
      col<&Delivery::attempts>("attempts"),
      col<&Delivery::next_at_ms>("next_at_ms"),
      col<&Delivery::last_status>("last_status"),
      col<&Delivery::last_error>("last_error"),
      col<&Delivery::created_ms>("created_ms"),
      col<&Delivery::delivered_ms>("delivered_ms"),
  };
  return c;
}

const Columns<Batch> &batch_columns() {
  static const Columns<Batch> c{
      col<&Batch::id>("id"),
      col<&Batch::project>("project"),
      col<&Batch::key_id>("key_id"),
      col<&Batch::endpoint>("endpoint"),
      col<&Batch::input_file_id>("input_file_id"),
      col<&Batch::completion_window>("completion_window"),
      col<&Batch::status>("status"),
      col<&Batch::output_file_id>("output_file_id"),
      col<&Batch::error_file_id>("error_file_id"),
      col<&Batch::errors>("errors"),
      col<&Batch::total>("total"),
      col<&Batch::completed>("completed"),
      col<&Batch::failed>("failed"),
      col<&Batch::metadata>("metadata"),
      col<&Batch::created_ms>("created_ms"),
      col<&Batch::in_progress_ms>("in_progress_ms"),
      col<&Batch::finalizing_ms>("finalizing_ms"),
      col<&Batch::completed_ms>("completed_ms"),
      col<&Batch::failed_ms>("failed_ms"),
      col<&Batch::expired_ms>("expired_ms"),
      col<&Batch::cancelling_ms>("cancelling_ms"),
      col<&Batch::cancelled_ms>("cancelled_ms"),
      col<&Batch::expires_ms>("expires_ms"),
  };
  return c;
}

Delivery read_delivery(const Query &q) { return delivery_columns().read(q); }
Batch read_batch(const Query &q) { return batch_columns().read(q); }

// Statement text built from a record's columns, kept for the statement cache (which holds
// statements by the address of their text).
#define RECORD_SQL(expr)                                                                           \
  [&] {                                                                                            \
    static const std::string sql = (expr);                                                         \
    return sql.c_str();                                                                            \
  }()

template <typename T, typename F> Result<std::vector<T>> collect(Query &q, F read) {
  std::vector<T> out;
  for (;;) {
    GANTRY_ASSIGN_OR_RETURN(bool row, q.step());
    if (!row)
      return out;
    out.push_back(read(q));
  }
}

} // namespace

SqliteJobRecords::SqliteJobRecords(std::unique_ptr<Db> db) : db_(std::move(db)) {}
SqliteJobRecords::~SqliteJobRecords() = default;

Result<std::unique_ptr<SqliteJobRecords>> SqliteJobRecords::open(const std::string &db_path) {
  GANTRY_ASSIGN_OR_RETURN(auto db, Db::open(db_path));
  return std::unique_ptr<SqliteJobRecords>(new SqliteJobRecords(std::move(db)));
}

Status SqliteJobRecords::add_delivery(const Delivery &d) {
  std::lock_guard<std::mutex> lk(mu_);
  const auto &c = delivery_columns();
  GANTRY_ASSIGN_OR_RETURN(
      Query q, db_->query(RECORD_SQL("INSERT INTO job_deliveries(" + c.names() + ") VALUES (" +
                                     c.placeholders() + ") ON CONFLICT(id) DO NOTHING")));
  return c.bind(q, d).run();
}

Status SqliteJobRecords::update_delivery(const Delivery &d) {
  std::lock_guard<std::mutex> lk(mu_);
  GANTRY_ASSIGN_OR_RETURN(
      Query q, db_->query("UPDATE job_deliveries SET status = ?, attempts = ?, next_at_ms = ?, "
                          "last_status = ?, last_error = ?, delivered_ms = ? WHERE id = ?"));
  return q.text(d.status)
      .i64(d.attempts)
      .i64(d.next_at_ms)
      .i64(d.last_status)
      .text(d.last_error)
      .i64(d.delivered_ms)
      .text(d.id)
      .run();
}

Result<std::vector<Delivery>> SqliteJobRecords::due_deliveries(int64_t now_ms, int per_project,
                                                               int limit) {
  std::lock_guard<std::mutex> lk(mu_);
  // At most `per_project` rows of each project, so one project's backlog cannot fill the page.
  GANTRY_ASSIGN_OR_RETURN(
      Query q,
      db_->query(RECORD_SQL(
          "SELECT " + delivery_columns().select_list() + " FROM (SELECT " +
          delivery_columns().select_list() +
          ", row_number() OVER (PARTITION BY project ORDER BY next_at_ms, id) AS rn FROM "
          "job_deliveries WHERE status = 'pending' AND next_at_ms <= ?) WHERE rn <= ? ORDER BY "
          "next_at_ms, id LIMIT ?")));
  q.i64(now_ms).i64(per_project).i64(limit);
  return collect<Delivery>(q, read_delivery);
}

Result<int64_t> SqliteJobRecords::next_delivery_at() {
  std::lock_guard<std::mutex> lk(mu_);
  GANTRY_ASSIGN_OR_RETURN(
      Query q, db_->query("SELECT MIN(next_at_ms) FROM job_deliveries WHERE status = 'pending'"));
  GANTRY_ASSIGN_OR_RETURN(bool row, q.step());
  return row ? q.col_i64(0) : 0;
}

Result<std::vector<Delivery>> SqliteJobRecords::deliveries_of(std::string_view job_id) {
  std::lock_guard<std::mutex> lk(mu_);
  GANTRY_ASSIGN_OR_RETURN(Query q,
                          db_->query(RECORD_SQL("SELECT " + delivery_columns().select_list() +
                                                " FROM job_deliveries WHERE job_id = ? "
                                                "ORDER BY created_ms, id")));
  q.text(job_id);
  return collect<Delivery>(q, read_delivery);
}

Result<std::vector<std::string>> SqliteJobRecords::webhook_secrets(std::string_view project,
                                                                   int64_t now_ms) {
  std::lock_guard<std::mutex> lk(mu_);
  GANTRY_ASSIGN_OR_RETURN(Query q,
                          db_->query("SELECT secret FROM webhook_secrets WHERE project = ? AND "
                                     "(expires_ms = 0 OR expires_ms > ?) ORDER BY created_ms "
                                     "DESC, expires_ms = 0 DESC"));
  q.text(project).i64(now_ms);
  return collect<std::string>(q, [](const Query &r) { return r.col_text(0); });
}

Status SqliteJobRecords::rotate_webhook_secret(std::string_view project, std::string_view secret,
                                               int64_t now_ms, int64_t grace_ms) {
  std::lock_guard<std::mutex> lk(mu_);
  GANTRY_ASSIGN_OR_RETURN(auto tx, Transaction::begin(*db_));
  {
    GANTRY_ASSIGN_OR_RETURN(Query q, db_->query("UPDATE webhook_secrets SET expires_ms = ? WHERE "
                                                "project = ? AND expires_ms = 0"));
    GANTRY_TRY(q.i64(now_ms + grace_ms).text(project).run());
  }
  {
    GANTRY_ASSIGN_OR_RETURN(Query q, db_->query("INSERT INTO webhook_secrets(project, secret, "
                                                "created_ms, expires_ms) VALUES (?, ?, ?, 0)"));
    GANTRY_TRY(q.text(project).text(secret).i64(now_ms).run());
  }
  return tx.commit();
}

// The webhook_disabled key is "<project> <url>" (a URL holds no space), so a 410 disables the URL
// only for the project that registered it.
static std::string disabled_key(std::string_view project, std::string_view url) {
  return std::string(project) + " " + std::string(url);
}

Status SqliteJobRecords::disable_endpoint(std::string_view project, std::string_view url,
                                          int64_t now_ms) {
  std::lock_guard<std::mutex> lk(mu_);
  GANTRY_ASSIGN_OR_RETURN(Query q, db_->query("INSERT INTO webhook_disabled(url, disabled_ms) "
                                              "VALUES (?, ?) ON CONFLICT(url) DO NOTHING"));
  return q.text(disabled_key(project, url)).i64(now_ms).run();
}

Result<bool> SqliteJobRecords::endpoint_disabled(std::string_view project, std::string_view url) {
  std::lock_guard<std::mutex> lk(mu_);
  GANTRY_ASSIGN_OR_RETURN(Query q, db_->query("SELECT 1 FROM webhook_disabled WHERE url = ?"));
  return q.text(disabled_key(project, url)).step();
}

Status SqliteJobRecords::insert_file_locked(const StoredFile &f, const FileQuota &quota) {
  if (quota.max_files > 0 || quota.max_bytes > 0) {
    // Covered by the (project, bytes) index: no content is read.
    GANTRY_ASSIGN_OR_RETURN(Query q, db_->query("SELECT COUNT(*), COALESCE(SUM(bytes), 0) FROM "
                                                "files WHERE project = ?"));
    GANTRY_ASSIGN_OR_RETURN(bool row, q.text(f.project).step());
    const int64_t count = row ? q.col_i64(0) : 0;
    const int64_t bytes = row ? q.col_i64(1) : 0;
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
  GANTRY_ASSIGN_OR_RETURN(Query q, db_->query("INSERT INTO files(id, project, purpose, filename, "
                                              "bytes, content, created_ms) VALUES (?, ?, ?, ?, ?, "
                                              "x'', ?)"));
  return q.text(f.id)
      .text(f.project)
      .text(f.purpose)
      .text(f.filename)
      .i64(f.bytes)
      .i64(f.created_ms)
      .run();
}

Status SqliteJobRecords::insert_piece_locked(std::string_view id, int64_t seq,
                                             std::string_view data, int64_t now_ms) {
  GANTRY_ASSIGN_OR_RETURN(Query q, db_->query("INSERT INTO file_pieces(file_id, seq, data, "
                                              "created_ms) VALUES (?, ?, ?, ?)"));
  return q.text(id).i64(seq).blob(data).i64(now_ms).run();
}

Status SqliteJobRecords::put_file(const StoredFile &f, const FileQuota &quota) {
  std::lock_guard<std::mutex> lk(mu_);
  GANTRY_ASSIGN_OR_RETURN(auto tx, Transaction::begin(*db_));
  GANTRY_TRY(insert_file_locked(f, quota));
  const std::string_view content = f.content;
  for (size_t at = 0, seq = 0; at < content.size(); at += kFilePieceBytes, ++seq)
    GANTRY_TRY(insert_piece_locked(f.id, static_cast<int64_t>(seq),
                                   content.substr(at, kFilePieceBytes), f.created_ms));
  return tx.commit();
}

// Each piece is its own short transaction: an upload from a slow client must not hold the
// database's one write lock for its whole length.
class SqliteJobRecords::Writer final : public FileWriter {
public:
  Writer(SqliteJobRecords &r, std::string id, int64_t now_ms)
      : r_(r), id_(std::move(id)), now_ms_(now_ms) {}
  ~Writer() override {
    if (committed_ || seq_ == 0)
      return;
    std::lock_guard<std::mutex> lk(r_.mu_);
    if (auto q = r_.db_->query("DELETE FROM file_pieces WHERE file_id = ?"))
      (void)q->text(id_).run(); // left behind on failure: purge_files() removes orphans
  }
  Status append(std::string_view piece) override {
    std::lock_guard<std::mutex> lk(r_.mu_);
    GANTRY_TRY(r_.insert_piece_locked(id_, seq_, piece, now_ms_));
    ++seq_;
    return Ok();
  }
  Status commit(const StoredFile &info, const FileQuota &quota) override {
    std::lock_guard<std::mutex> lk(r_.mu_);
    GANTRY_ASSIGN_OR_RETURN(auto tx, Transaction::begin(*r_.db_));
    StoredFile f = info;
    f.id = id_;
    GANTRY_TRY(r_.insert_file_locked(f, quota));
    GANTRY_TRY(tx.commit());
    committed_ = true;
    return Ok();
  }

private:
  SqliteJobRecords &r_;
  const std::string id_;
  const int64_t now_ms_;
  int64_t seq_ = 0;
  bool committed_ = false;
};

Result<std::unique_ptr<FileWriter>> SqliteJobRecords::create_file(std::string_view id,
                                                                  int64_t now_ms) {
  return std::unique_ptr<FileWriter>(new Writer(*this, std::string(id), now_ms));
}

Result<std::optional<std::string>> SqliteJobRecords::read_file_piece(std::string_view id,
                                                                     int64_t index) {
  std::lock_guard<std::mutex> lk(mu_);
  GANTRY_ASSIGN_OR_RETURN(Query q, db_->query("SELECT data FROM file_pieces WHERE file_id = ? AND "
                                              "seq = ?"));
  GANTRY_ASSIGN_OR_RETURN(bool row, q.text(id).i64(index).step());
  if (!row)
    return std::optional<std::string>();
  return std::optional<std::string>(q.col_text(0));
}

Result<std::optional<StoredFile>> SqliteJobRecords::get_file_info(std::string_view id) {
  std::lock_guard<std::mutex> lk(mu_);
  GANTRY_ASSIGN_OR_RETURN(Query q, db_->query("SELECT id, project, purpose, filename, bytes, "
                                              "created_ms FROM files WHERE id = ?"));
  GANTRY_ASSIGN_OR_RETURN(bool row, q.text(id).step());
  if (!row)
    return std::optional<StoredFile>();
  return std::optional<StoredFile>(StoredFile{q.col_text(0), q.col_text(1), q.col_text(2),
                                              q.col_text(3), q.col_i64(4), q.col_i64(5), ""});
}

Result<bool> SqliteJobRecords::delete_file(std::string_view project, std::string_view id) {
  std::lock_guard<std::mutex> lk(mu_);
  GANTRY_ASSIGN_OR_RETURN(auto tx, Transaction::begin(*db_));
  int gone = 0;
  {
    GANTRY_ASSIGN_OR_RETURN(Query q, db_->query("DELETE FROM files WHERE id = ? AND project = ?"));
    GANTRY_TRY(q.text(id).text(project).run());
    gone = q.changes();
  }
  if (gone == 1) {
    GANTRY_ASSIGN_OR_RETURN(Query q, db_->query("DELETE FROM file_pieces WHERE file_id = ?"));
    GANTRY_TRY(q.text(id).run());
  }
  GANTRY_TRY(tx.commit());
  return gone == 1;
}

Result<int64_t> SqliteJobRecords::purge_files(int64_t created_before_ms) {
  std::lock_guard<std::mutex> lk(mu_);
  GANTRY_ASSIGN_OR_RETURN(auto tx, Transaction::begin(*db_));
  {
    // The pieces of the files going, and pieces no file owns (an upload cut short by a crash).
    GANTRY_ASSIGN_OR_RETURN(
        Query q, db_->query("DELETE FROM file_pieces WHERE file_id IN (SELECT id FROM files WHERE "
                            "created_ms < ?) OR (created_ms < ? AND file_id NOT IN (SELECT id "
                            "FROM files))"));
    GANTRY_TRY(q.i64(created_before_ms).i64(created_before_ms).run());
  }
  int n = 0;
  {
    GANTRY_ASSIGN_OR_RETURN(Query q, db_->query("DELETE FROM files WHERE created_ms < ?"));
    GANTRY_TRY(q.i64(created_before_ms).run());
    n = q.changes();
  }
  GANTRY_TRY(tx.commit());
  return n;
}

Status SqliteJobRecords::put_batch(const Batch &b) {
  std::lock_guard<std::mutex> lk(mu_);
  const auto &c = batch_columns();
  GANTRY_ASSIGN_OR_RETURN(Query q,
                          db_->query(RECORD_SQL("INSERT OR REPLACE INTO batches(" + c.names() +
                                                ") VALUES (" + c.placeholders() + ")")));
  return c.bind(q, b).run();
}

Result<bool> SqliteJobRecords::transition_batch(const Batch &b, std::string_view from_status) {
  std::lock_guard<std::mutex> lk(mu_);
  GANTRY_ASSIGN_OR_RETURN(
      Query q, db_->query("UPDATE batches SET status = ?, output_file_id = ?, error_file_id = ?, "
                          "errors = ?, total = ?, completed = ?, failed = ?, in_progress_ms = ?, "
                          "finalizing_ms = ?, completed_ms = ?, failed_ms = ?, expired_ms = ?, "
                          "cancelling_ms = ?, cancelled_ms = ? WHERE id = ? AND status = ?"));
  GANTRY_TRY(q.text(b.status)
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
                 .text(from_status)
                 .run());
  return q.changes() == 1;
}

Result<std::optional<Batch>> SqliteJobRecords::get_batch(std::string_view id) {
  std::lock_guard<std::mutex> lk(mu_);
  GANTRY_ASSIGN_OR_RETURN(Query q, db_->query(RECORD_SQL("SELECT " + batch_columns().select_list() +
                                                         " FROM batches WHERE id = ?")));
  GANTRY_ASSIGN_OR_RETURN(bool row, q.text(id).step());
  if (!row)
    return std::optional<Batch>();
  return std::optional<Batch>(read_batch(q));
}

Result<std::vector<Batch>> SqliteJobRecords::active_batches() {
  std::lock_guard<std::mutex> lk(mu_);
  GANTRY_ASSIGN_OR_RETURN(
      Query q, db_->query(RECORD_SQL("SELECT " + batch_columns().select_list() +
                                     " FROM batches WHERE status IN ('validating', "
                                     "'in_progress', 'finalizing', 'cancelling') ORDER BY id")));
  return collect<Batch>(q, read_batch);
}

Result<std::vector<Batch>> SqliteJobRecords::list_batches(std::string_view project,
                                                          std::string_view after, int limit) {
  std::lock_guard<std::mutex> lk(mu_);
  GANTRY_ASSIGN_OR_RETURN(
      Query q, db_->query(RECORD_SQL("SELECT " + batch_columns().select_list() +
                                     " FROM batches WHERE project = ? AND (? = '' OR rowid < "
                                     "(SELECT rowid FROM batches WHERE id = ?)) ORDER BY rowid "
                                     "DESC LIMIT ?")));
  q.text(project).text(after).text(after).i64(limit);
  return collect<Batch>(q, read_batch);
}

Result<BatchCounts> SqliteJobRecords::batch_counts(std::string_view batch_id) {
  std::lock_guard<std::mutex> lk(mu_);
  GANTRY_ASSIGN_OR_RETURN(Query q, db_->query("SELECT status, COUNT(*) FROM jobs WHERE batch_id "
                                              "= ? GROUP BY status"));
  q.text(batch_id);
  BatchCounts c;
  for (;;) {
    GANTRY_ASSIGN_OR_RETURN(bool row, q.step());
    if (!row)
      break;
    const std::string s = q.col_text(0);
    const int64_t n = q.col_i64(1);
    c.total += n;
    if (s == "succeeded")
      c.succeeded += n;
    else if (s == "failed" || s == "canceled" || s == "expired")
      c.failed += n;
  }
  return c;
}

} // namespace gantry::jobs
