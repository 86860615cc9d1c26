#include "store/sqlite/sqlite_job_queue.h"

#include <algorithm>
#include <cstdio>

#include "store/sqlite/sqlite_db.h"

namespace gantry::jobs {

using control::Query;
using control::Transaction;
namespace {

constexpr const char *kStatusNames[] = {"queued", "running",  "succeeded",
                                        "failed", "canceled", "expired"};

#define JOB_COLUMNS                                                                                \
  "id, project, key_id, endpoint, body, webhook_url, webhook_events, metadata, batch_id, "         \
  "custom_id, priority, status, attempts, max_attempts, created_ms, started_ms, finished_ms, "     \
  "not_before_ms, expires_at_ms, result_status, result, error, input_tokens, output_tokens, "      \
  "cost_usd, deferrals"

std::vector<std::string> split_events(const std::string &s) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start < s.size()) {
    size_t comma = s.find(',', start);
    if (comma == std::string::npos)
      comma = s.size();
    if (comma > start)
      out.push_back(s.substr(start, comma - start));
    start = comma + 1;
  }
  return out;
}

std::string join_events(const std::vector<std::string> &v) {
  std::string out;
  for (const auto &e : v)
    out += (out.empty() ? "" : ",") + e;
  return out;
}

Job read_job(const Query &q) {
  Job j;
  j.id = q.col_text(0);
  j.project = q.col_text(1);
  j.key_id = q.col_text(2);
  j.endpoint = q.col_text(3);
  j.body = q.col_text(4);
  j.webhook_url = q.col_text(5);
  j.webhook_events = split_events(q.col_text(6));
  j.metadata = q.col_text(7);
  j.batch_id = q.col_text(8);
  j.custom_id = q.col_text(9);
  j.priority = static_cast<int>(q.col_i64(10));
  j.status = parse_job_status(q.col_text(11)).value_or(JobStatus::kFailed);
  j.attempts = static_cast<int>(q.col_i64(12));
  j.max_attempts = static_cast<int>(q.col_i64(13));
  j.created_ms = q.col_i64(14);
  j.started_ms = q.col_i64(15);
  j.finished_ms = q.col_i64(16);
  j.not_before_ms = q.col_i64(17);
  j.expires_at_ms = q.col_i64(18);
  j.result_status = static_cast<int>(q.col_i64(19));
  j.result = q.col_text(20);
  j.error = q.col_text(21);
  j.input_tokens = q.col_i64(22);
  j.output_tokens = q.col_i64(23);
  j.cost_usd = q.col_f64(24);
  j.deferrals = static_cast<int>(q.col_i64(25));
  return j;
}

} // namespace

std::string_view job_status_name(JobStatus s) { return kStatusNames[static_cast<int>(s)]; }

std::optional<JobStatus> parse_job_status(std::string_view s) {
  for (int i = 0; i < 6; ++i) {
    if (s == kStatusNames[i])
      return static_cast<JobStatus>(i);
  }
  return std::nullopt;
}

std::chrono::milliseconds retry_delay(const JobQueueOptions &o, int attempt) {
  auto d = o.retry_base;
  for (int i = 1; i < attempt && d < o.retry_max; ++i)
    d *= 2;
  return std::min(d, o.retry_max);
}

SqliteJobQueue::SqliteJobQueue(std::unique_ptr<Db> db, JobQueueOptions options, const Clock &clock)
    : db_(std::move(db)), options_(std::move(options)), clock_(clock) {}

SqliteJobQueue::~SqliteJobQueue() = default;

Result<std::unique_ptr<SqliteJobQueue>>
SqliteJobQueue::open(const std::string &db_path, JobQueueOptions options, const Clock &clock) {
  GANTRY_ASSIGN_OR_RETURN(auto db, Db::open(db_path));
  std::unique_ptr<SqliteJobQueue> q(new SqliteJobQueue(std::move(db), std::move(options), clock));
  GANTRY_TRY(q->recover());
  return q;
}

Status SqliteJobQueue::recover() {
  std::lock_guard<std::mutex> lk(mu_);
  const int64_t now = clock_.unix_millis();
  struct Row {
    std::string id, project, status;
    int priority, attempts, max_attempts;
    int64_t not_before;
  };
  std::vector<Row> rows;
  {
    GANTRY_ASSIGN_OR_RETURN(
        Query q, db_->query("SELECT id, project, status, priority, attempts, max_attempts, "
                            "not_before_ms FROM jobs WHERE status IN ('queued', 'running')"));
    for (;;) {
      GANTRY_ASSIGN_OR_RETURN(bool row, q.step());
      if (!row)
        break;
      rows.push_back({q.col_text(0), q.col_text(1), q.col_text(2), static_cast<int>(q.col_i64(3)),
                      static_cast<int>(q.col_i64(4)), static_cast<int>(q.col_i64(5)),
                      q.col_i64(6)});
    }
  }
  GANTRY_ASSIGN_OR_RETURN(auto tx, Transaction::begin(*db_));
  for (auto &r : rows) {
    if (r.status == "running") {
      // Its worker was this process's predecessor, which died: the attempt is spent.
      if (r.attempts >= r.max_attempts) {
        GANTRY_ASSIGN_OR_RETURN(
            Query u, db_->query("UPDATE jobs SET status = 'failed', finished_ms = ?, error = ?, "
                                "lease_until_ms = 0 WHERE id = ?"));
        GANTRY_TRY(u.i64(now)
                       .text("the worker running it was lost on each of " +
                             std::to_string(r.attempts) + " attempts")
                       .text(r.id)
                       .run());
        continue;
      }
      r.not_before = now + retry_delay(options_, r.attempts).count();
      GANTRY_ASSIGN_OR_RETURN(Query u,
                              db_->query("UPDATE jobs SET status = 'queued', not_before_ms = ?, "
                                         "lease_until_ms = 0 WHERE id = ?"));
      GANTRY_TRY(u.i64(r.not_before).text(r.id).run());
    }
    push_queued(r.project, Entry{r.priority, r.id}, r.not_before);
  }
  return tx.commit();
}

int64_t SqliteJobQueue::queued_count(const std::string &project) {
  std::lock_guard<std::mutex> lk(mu_);
  auto it = projects_.find(project);
  return it == projects_.end() ? 0 : it->second.queued;
}

void SqliteJobQueue::push_ready(const std::string &project, Entry e) {
  auto &pq = projects_[project];
  if (pq.ready.empty())
    ring_.push_back(project);
  pq.ready.insert(std::move(e));
}

void SqliteJobQueue::push_queued(const std::string &project, Entry e, int64_t not_before_ms) {
  queued_[e.id] = project;
  projects_[project].queued++;
  if (not_before_ms > clock_.unix_millis()) {
    delayed_.emplace(not_before_ms, Delayed{project, std::move(e)});
  } else {
    push_ready(project, std::move(e));
  }
}

void SqliteJobQueue::promote_due(int64_t now_ms) {
  while (!delayed_.empty() && delayed_.begin()->first <= now_ms) {
    auto node = delayed_.extract(delayed_.begin());
    if (queued_.count(node.mapped().entry.id))
      push_ready(node.mapped().project, std::move(node.mapped().entry));
  }
}

std::optional<std::pair<std::string, SqliteJobQueue::Entry>> SqliteJobQueue::pick() {
  while (!ring_.empty()) {
    const std::string project = ring_.front();
    auto &pq = projects_[project];
    if (pq.ready.empty()) {
      ring_.pop_front();
      pq.served = 0;
      continue;
    }
    Entry e = *pq.ready.begin();
    pq.ready.erase(pq.ready.begin());
    auto w = options_.weights.find(project);
    const int weight = w == options_.weights.end() ? 1 : std::max(1, w->second);
    if (++pq.served >= weight || pq.ready.empty()) {
      pq.served = 0;
      ring_.pop_front();
      if (!pq.ready.empty())
        ring_.push_back(project);
    }
    if (!queued_.count(e.id))
      continue; // canceled or expired while queued
    forget_queued(e.id);
    return std::pair{project, std::move(e)};
  }
  return std::nullopt;
}

void SqliteJobQueue::forget_queued(const std::string &id) {
  auto it = queued_.find(id);
  if (it == queued_.end())
    return;
  auto p = projects_.find(it->second);
  if (p != projects_.end()) {
    p->second.queued--;
    if (p->second.queued == 0 && p->second.ready.empty())
      projects_.erase(p); // no stale turn state for projects that went quiet
  }
  queued_.erase(it);
}

Status SqliteJobQueue::enqueue(std::vector<Job> jobs) {
  std::unique_lock<std::mutex> lk(mu_);
  std::map<std::string, int64_t> adding;
  for (const auto &j : jobs)
    adding[j.project]++;
  for (const auto &[project, n] : adding) {
    auto it = projects_.find(project);
    const int64_t have = it == projects_.end() ? 0 : it->second.queued;
    if (have + n > options_.max_queued_per_project) {
      Error e{ErrorCode::kQueueFull,
              "project '" + project + "' has " + std::to_string(have) +
                  " queued jobs; the limit is " + std::to_string(options_.max_queued_per_project),
              ""};
      e.retry_after_ms = 1000;
      return e;
    }
  }
  {
    GANTRY_ASSIGN_OR_RETURN(auto tx, Transaction::begin(*db_));
    for (const auto &j : jobs) {
      GANTRY_ASSIGN_OR_RETURN(
          Query q, db_->query("INSERT INTO jobs(id, project, key_id, endpoint, body, webhook_url, "
                              "webhook_events, metadata, batch_id, custom_id, priority, status, "
                              "max_attempts, created_ms, not_before_ms, expires_at_ms) VALUES "
                              "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'queued', ?, ?, ?, ?)"));
      GANTRY_TRY(q.text(j.id)
                     .text(j.project)
                     .text(j.key_id)
                     .text(j.endpoint)
                     .text(j.body)
                     .text(j.webhook_url)
                     .text(join_events(j.webhook_events))
                     .text(j.metadata.empty() ? "{}" : j.metadata)
                     .text(j.batch_id)
                     .text(j.custom_id)
                     .i64(j.priority)
                     .i64(j.max_attempts)
                     .i64(j.created_ms)
                     .i64(j.not_before_ms)
                     .i64(j.expires_at_ms)
                     .run());
    }
    GANTRY_TRY(tx.commit());
  }
  for (auto &j : jobs)
    push_queued(j.project, Entry{j.priority, j.id}, j.not_before_ms);
  lk.unlock();
  cv_.notify_all();
  return Ok();
}

Result<std::optional<Lease>> SqliteJobQueue::lease(std::string_view,
                                                   std::chrono::milliseconds visibility,
                                                   std::chrono::milliseconds wait) {
  const auto deadline = std::chrono::steady_clock::now() + wait;
  std::unique_lock<std::mutex> lk(mu_);
  const uint64_t gen = wake_gen_;
  for (;;) {
    const int64_t now = clock_.unix_millis();
    promote_due(now);
    auto picked = pick();
    if (picked) {
      const int64_t until = now + visibility.count();
      GANTRY_ASSIGN_OR_RETURN(
          Query q,
          db_->query("UPDATE jobs SET status = 'running', attempts = attempts + 1, started_ms = "
                     "CASE WHEN started_ms = 0 THEN ? ELSE started_ms END, lease_until_ms = ? "
                     "WHERE id = ? AND status = 'queued' RETURNING " JOB_COLUMNS));
      GANTRY_ASSIGN_OR_RETURN(bool row, q.i64(now).i64(until).text(picked->second.id).step());
      if (!row)
        continue; // changed under us (canceled by another process)
      Lease l{read_job(q), 0};
      l.attempt = l.job.attempts;
      GANTRY_TRY(q.run()); // finish the statement so the change is committed
      running_[l.job.id] = {l.attempt, l.job.max_attempts, until};
      return std::optional<Lease>(std::move(l));
    }
    if (wake_gen_ != gen || std::chrono::steady_clock::now() >= deadline)
      return std::optional<Lease>();
    auto until = deadline;
    if (!delayed_.empty()) {
      const auto due = std::chrono::steady_clock::now() +
                       std::chrono::milliseconds(delayed_.begin()->first - now);
      until = std::min(until, due);
    }
    cv_.wait_until(lk, until);
  }
}

Result<bool> SqliteJobQueue::renew(const Lease &l, std::chrono::milliseconds visibility) {
  std::lock_guard<std::mutex> lk(mu_);
  const int64_t until = clock_.unix_millis() + visibility.count();
  GANTRY_ASSIGN_OR_RETURN(Query q, db_->query("UPDATE jobs SET lease_until_ms = ? WHERE id = ? "
                                              "AND attempts = ? AND status = 'running'"));
  GANTRY_TRY(q.i64(until).text(l.job.id).i64(l.attempt).run());
  if (q.changes() != 1)
    return false;
  if (auto it = running_.find(l.job.id); it != running_.end())
    it->second.lease_until_ms = until;
  return true;
}

Result<bool> SqliteJobQueue::complete(const Lease &l, const JobOutcome &o) {
  std::lock_guard<std::mutex> lk(mu_);
  GANTRY_ASSIGN_OR_RETURN(
      Query q, db_->query("UPDATE jobs SET status = ?, finished_ms = ?, result_status = ?, "
                          "result = ?, error = ?, input_tokens = ?, output_tokens = ?, "
                          "cost_usd = ?, lease_until_ms = 0 WHERE id = ? AND attempts = ? AND "
                          "status = 'running'"));
  GANTRY_TRY(q.text(o.success ? "succeeded" : "failed")
                 .i64(clock_.unix_millis())
                 .i64(o.status)
                 .text(o.body)
                 .text(o.error)
                 .i64(o.input_tokens)
                 .i64(o.output_tokens)
                 .f64(o.cost_usd)
                 .text(l.job.id)
                 .i64(l.attempt)
                 .run());
  const bool won = q.changes() == 1;
  if (auto it = running_.find(l.job.id); it != running_.end() && it->second.attempt == l.attempt)
    running_.erase(it);
  return won;
}

Result<bool> SqliteJobQueue::requeue_or_fail(const std::string &id, int attempt, int max_attempts,
                                             std::string_view error,
                                             std::chrono::milliseconds delay, bool count_attempt,
                                             std::vector<Job> *failed) {
  const int64_t now = clock_.unix_millis();
  if (count_attempt && attempt >= max_attempts) {
    GANTRY_ASSIGN_OR_RETURN(
        Query q, db_->query("UPDATE jobs SET status = 'failed', finished_ms = ?, error = ?, "
                            "lease_until_ms = 0 WHERE id = ? AND attempts = ? AND status = "
                            "'running'"));
    GANTRY_TRY(q.i64(now).text(error).text(id).i64(attempt).run());
    const bool won = q.changes() == 1;
    running_.erase(id);
    if (won && failed != nullptr) {
      GANTRY_ASSIGN_OR_RETURN(auto j, get_locked(id));
      if (j)
        failed->push_back(std::move(*j));
    }
    return won;
  }
  GANTRY_ASSIGN_OR_RETURN(
      Query q,
      db_->query(
          "UPDATE jobs SET status = 'queued', not_before_ms = ?, error = ?, "
          "attempts = attempts - ?, deferrals = deferrals + ?, lease_until_ms = 0 WHERE id = ? AND "
          "attempts = ? AND status = 'running' RETURNING project, priority"));
  GANTRY_ASSIGN_OR_RETURN(bool row, q.i64(now + delay.count())
                                        .text(error)
                                        .i64(count_attempt ? 0 : 1)
                                        .i64(count_attempt ? 0 : 1)
                                        .text(id)
                                        .i64(attempt)
                                        .step());
  running_.erase(id);
  if (!row)
    return false;
  const std::string project = q.col_text(0);
  const int priority = static_cast<int>(q.col_i64(1));
  GANTRY_TRY(q.run());
  push_queued(project, Entry{priority, id}, now + delay.count());
  return true;
}

Result<bool> SqliteJobQueue::retry(const Lease &l, std::string_view error,
                                   std::chrono::milliseconds delay, bool count_attempt) {
  std::unique_lock<std::mutex> lk(mu_);
  GANTRY_ASSIGN_OR_RETURN(bool done, requeue_or_fail(l.job.id, l.attempt, l.job.max_attempts, error,
                                                     delay, count_attempt, nullptr));
  lk.unlock();
  cv_.notify_all();
  return done;
}

Result<std::optional<Job>> SqliteJobQueue::get_locked(std::string_view id) {
  GANTRY_ASSIGN_OR_RETURN(Query q, db_->query("SELECT " JOB_COLUMNS " FROM jobs WHERE id = ?"));
  GANTRY_ASSIGN_OR_RETURN(bool row, q.text(id).step());
  if (!row)
    return std::optional<Job>();
  return std::optional<Job>(read_job(q));
}

Result<QueueDepth> SqliteJobQueue::depth() {
  std::lock_guard<std::mutex> lk(mu_);
  GANTRY_ASSIGN_OR_RETURN(
      Query q, db_->query("SELECT COUNT(*), COALESCE(MIN(created_ms), 0) FROM jobs WHERE status = "
                          "'queued'"));
  GANTRY_ASSIGN_OR_RETURN(bool row, q.step());
  QueueDepth d;
  if (row) {
    d.queued = q.col_i64(0);
    d.oldest_created_ms = q.col_i64(1);
  }
  return d;
}

Result<std::optional<Job>> SqliteJobQueue::get(std::string_view id) {
  std::lock_guard<std::mutex> lk(mu_);
  return get_locked(id);
}

Result<std::optional<Job>> SqliteJobQueue::cancel(std::string_view project, std::string_view id) {
  std::lock_guard<std::mutex> lk(mu_);
  GANTRY_ASSIGN_OR_RETURN(auto job, get_locked(id));
  if (!job || job->project != project)
    return std::optional<Job>();
  if (is_terminal(job->status))
    return job;
  GANTRY_ASSIGN_OR_RETURN(
      Query q, db_->query("UPDATE jobs SET status = 'canceled', finished_ms = ?, error = "
                          "'canceled by the caller', lease_until_ms = 0 WHERE id = ? AND status "
                          "IN ('queued', 'running')"));
  GANTRY_TRY(q.i64(clock_.unix_millis()).text(id).run());
  forget_queued(std::string(id));
  running_.erase(std::string(id));
  return get_locked(id);
}

Result<std::vector<Job>> SqliteJobQueue::list(const ListFilter &f) {
  std::lock_guard<std::mutex> lk(mu_);
  // A batch's lines (any project) or one project's jobs, each walking its own index in id
  // order; the status filter matches everything when empty.
  const std::string status = f.status ? std::string(job_status_name(*f.status)) : "";
  GANTRY_ASSIGN_OR_RETURN(
      Query q, f.batch_id.empty()
                   ? db_->query("SELECT " JOB_COLUMNS " FROM jobs WHERE project = ? AND id > ? "
                                "AND (status = ? OR ? = '') ORDER BY id LIMIT ?")
                   : db_->query("SELECT " JOB_COLUMNS " FROM jobs WHERE batch_id = ? AND id > ? "
                                "AND (status = ? OR ? = '') ORDER BY id LIMIT ?"));
  q.text(f.batch_id.empty() ? f.project : f.batch_id).text(f.after).text(status).text(status);
  q.i64(f.limit);
  std::vector<Job> out;
  for (;;) {
    GANTRY_ASSIGN_OR_RETURN(bool row, q.step());
    if (!row)
      break;
    out.push_back(read_job(q));
  }
  return out;
}

Result<Reclaimed> SqliteJobQueue::reclaim() {
  std::unique_lock<std::mutex> lk(mu_);
  Reclaimed out;
  const int64_t now = clock_.unix_millis();
  std::vector<std::pair<std::string, Running>> lapsed;
  for (const auto &[id, r] : running_) {
    if (r.lease_until_ms < now)
      lapsed.emplace_back(id, r);
  }
  for (const auto &[id, r] : lapsed) {
    std::vector<Job> failed;
    GANTRY_ASSIGN_OR_RETURN(bool changed,
                            requeue_or_fail(id, r.attempt, r.max_attempts,
                                            "the lease lapsed (worker stalled or lost)",
                                            retry_delay(options_, r.attempt), true, &failed));
    if (!changed)
      continue;
    if (!failed.empty()) {
      out.failed.push_back(std::move(failed.front()));
    } else {
      GANTRY_ASSIGN_OR_RETURN(auto j, get_locked(id));
      if (j)
        out.requeued.push_back(std::move(*j));
    }
  }
  {
    GANTRY_ASSIGN_OR_RETURN(
        Query q, db_->query("UPDATE jobs SET status = 'expired', finished_ms = ?, error = "
                            "'Cancel-After passed before the job finished', lease_until_ms = 0 "
                            "WHERE expires_at_ms > 0 AND expires_at_ms <= ? AND status IN "
                            "('queued', 'running') RETURNING " JOB_COLUMNS));
    q.i64(now).i64(now);
    for (;;) {
      GANTRY_ASSIGN_OR_RETURN(bool row, q.step());
      if (!row)
        break;
      out.expired.push_back(read_job(q));
    }
  }
  for (const auto &j : out.expired) {
    forget_queued(j.id);
    running_.erase(j.id);
  }
  {
    GANTRY_ASSIGN_OR_RETURN(
        Query q, db_->query("DELETE FROM jobs WHERE finished_ms > 0 AND finished_ms < ?"));
    GANTRY_TRY(q.i64(now - options_.retention.count()).run());
    out.purged = q.changes();
  }
  lk.unlock();
  cv_.notify_all();
  return out;
}

void SqliteJobQueue::wake_all() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    wake_gen_++;
  }
  cv_.notify_all();
}

} // namespace gantry::jobs
