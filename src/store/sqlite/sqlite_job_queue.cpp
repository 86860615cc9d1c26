#include "store/sqlite/sqlite_job_queue.h"

#include <algorithm>
#include <cstdio>
#include <tuple>

#include "jobs/job_ids.h"
#include "store/sqlite/sqlite_db.h"
#include "store/sqlite/sqlite_record.h"

namespace gantry::jobs {

using control::col;
using control::Columns;
using control::join_list;
using control::Query;
using control::split_list;
using control::Transaction;
namespace {

const Columns<Job> &job_columns() {
  static const Columns<Job> c{
      col<&Job::id>("id"),
      col<&Job::project>("project"),
      col<&Job::key_id>("key_id"),
      col<&Job::endpoint>("endpoint"),
      col<&Job::body>("body"),
      col<&Job::webhook_url>("webhook_url"),
      {"webhook_events", [](Query &q, const Job &j) { q.text(join_list(j.webhook_events, ',')); },
       [](const Query &q, int i, Job &j) { j.webhook_events = split_list(q.col_text(i), ','); }},
      col<&Job::metadata>("metadata"),
      col<&Job::batch_id>("batch_id"),
      col<&Job::custom_id>("custom_id"),
      col<&Job::priority>("priority"),
      {"status", [](Query &q, const Job &j) { q.text(job_status_name(j.status)); },
       [](const Query &q, int i, Job &j) {
         j.status = parse_job_status(q.col_text(i)).value_or(JobStatus::kFailed);
       }},
      col<&Job::attempts>("attempts"),
      col<&Job::max_attempts>("max_attempts"),
      col<&Job::created_ms>("created_ms"),
      col<&Job::started_ms>("started_ms"),
      col<&Job::finished_ms>("finished_ms"),
      col<&Job::not_before_ms>("not_before_ms"),
      col<&Job::expires_at_ms>("expires_at_ms"),
      col<&Job::result_status>("result_status"),
      col<&Job::result>("result"),
      col<&Job::error>("error"),
      col<&Job::input_tokens>("input_tokens"),
      col<&Job::output_tokens>("output_tokens"),
      col<&Job::cost_usd>("cost_usd"),
      col<&Job::deferrals>("deferrals"),
  };
  return c;
}

// `sql` followed by the job's SELECT list (for SELECT and RETURNING), kept for the statement
// cache, which holds statements by the address of their text.
#define JOB_SQL(before, after)                                                                     \
  [] {                                                                                             \
    static const std::string sql = std::string(before) + job_columns().select_list() + (after);    \
    return sql.c_str();                                                                            \
  }()
// Listings never load the request bodies (up to the body limit each, audit M3): '' in its place.
#define JOB_LIST_SQL(before, after)                                                                \
  [] {                                                                                             \
    static const std::string sql =                                                                 \
        std::string(before) + job_columns().select_list("body") + (after);                         \
    return sql.c_str();                                                                            \
  }()

} // namespace

std::chrono::milliseconds retry_delay(const JobQueueOptions &o, int attempt) {
  auto d = o.retry_base;
  for (int i = 1; i < attempt && d < o.retry_max; ++i)
    d *= 2;
  return std::min(d, o.retry_max);
}

SqliteJobQueue::SqliteJobQueue(std::unique_ptr<Db> db, JobQueueOptions options, const Clock &clock)
    : db_(std::move(db)), options_(std::move(options)), clock_(clock) {}

SqliteJobQueue::~SqliteJobQueue() {
  {
    // The committer answers every submission still waiting before it returns.
    std::lock_guard<std::mutex> lk(submit_mu_);
    submit_stop_ = true;
  }
  submit_cv_.notify_all();
  if (committer_.joinable())
    committer_.join();
}

Result<std::unique_ptr<SqliteJobQueue>>
SqliteJobQueue::open(const std::string &db_path, JobQueueOptions options, const Clock &clock) {
  GANTRY_ASSIGN_OR_RETURN(auto db, Db::open(db_path));
  if (options.node_id.empty())
    options.node_id = JobIds().next("node_");
  std::unique_ptr<SqliteJobQueue> q(new SqliteJobQueue(std::move(db), std::move(options), clock));
  GANTRY_TRY(q->recover());
  return q;
}

Status SqliteJobQueue::recover() {
  std::lock_guard<std::mutex> lk(mu_);
  const int64_t now = clock_.unix_millis();
  struct Row {
    std::string id, project, status, owner;
    int priority, attempts, max_attempts;
    int64_t not_before, created, lease_until;
    std::string model;
  };
  std::vector<Row> rows;
  {
    GANTRY_ASSIGN_OR_RETURN(
        Query q,
        db_->query("SELECT id, project, status, priority, attempts, max_attempts, "
                   "not_before_ms, created_ms, lease_owner, lease_until_ms, model FROM "
                   "jobs WHERE status IN ('queued', 'running') ORDER BY created_ms, rowid"));
    for (;;) {
      GANTRY_ASSIGN_OR_RETURN(bool row, q.step());
      if (!row)
        break;
      rows.push_back({q.col_text(0), q.col_text(1), q.col_text(2), q.col_text(8),
                      static_cast<int>(q.col_i64(3)), static_cast<int>(q.col_i64(4)),
                      static_cast<int>(q.col_i64(5)), q.col_i64(6), q.col_i64(7), q.col_i64(9),
                      q.col_text(10)});
    }
  }
  GANTRY_ASSIGN_OR_RETURN(auto tx, Transaction::begin(*db_));
  for (auto &r : rows) {
    if (r.status == "running") {
      // A live lease of another node: that node runs it (and its reclaim() or ours takes it
      // back if the lease lapses).
      if (r.owner != options_.node_id && r.lease_until >= now)
        continue;
      // Its lease lapsed, or its worker was this node's predecessor, which died: the attempt is
      // spent. Conditional on the row as read, so a concurrent node's write wins.
      if (r.attempts >= r.max_attempts) {
        GANTRY_ASSIGN_OR_RETURN(
            Query u, db_->query("UPDATE jobs SET status = 'failed', finished_ms = ?, error = ?, "
                                "lease_until_ms = 0, lease_owner = '' WHERE id = ? AND "
                                "status = 'running' AND attempts = ? AND lease_owner = ?"));
        GANTRY_TRY(u.i64(now)
                       .text("the worker running it was lost on each of " +
                             std::to_string(r.attempts) + " attempts")
                       .text(r.id)
                       .i64(r.attempts)
                       .text(r.owner)
                       .run());
        continue;
      }
      r.not_before = now + retry_delay(options_, r.attempts).count();
      GANTRY_ASSIGN_OR_RETURN(Query u,
                              db_->query("UPDATE jobs SET status = 'queued', "
                                         "not_before_ms = ?, lease_until_ms = 0, "
                                         "lease_owner = '' WHERE id = ? AND status = "
                                         "'running' AND attempts = ? AND lease_owner = ?"));
      GANTRY_TRY(u.i64(r.not_before).text(r.id).i64(r.attempts).text(r.owner).run());
      if (u.changes() != 1)
        continue;
    }
    push_queued(r.project, entry(r.priority, r.created, r.id, r.model), r.not_before);
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

bool SqliteJobQueue::leasable(const Entry &e) const {
  const auto &models = options_.lease_models;
  return !models || e.model.empty() ||
         std::find(models->begin(), models->end(), e.model) != models->end();
}

std::optional<std::pair<std::string, SqliteJobQueue::Entry>> SqliteJobQueue::pick_filtered() {
  // The ring in turn order; a project's first leasable job (by priority, then age) is taken and
  // the others stay for the nodes that serve their models. A linear scan, bounded by the queued
  // jobs (max_queued_per_project each); the same round-robin accounting as pick().
  for (std::size_t r = 0; r < ring_.size(); ++r) {
    const std::string project = ring_[r];
    auto &pq = projects_[project];
    for (auto it = pq.ready.begin(); it != pq.ready.end();) {
      if (!queued_.count(it->id)) { // canceled or expired while queued
        it = pq.ready.erase(it);
        continue;
      }
      if (!leasable(*it)) {
        ++it;
        continue;
      }
      Entry e = *it;
      pq.ready.erase(it);
      auto w = options_.weights.find(project);
      const int weight = w == options_.weights.end() ? 1 : std::max(1, w->second);
      if (++pq.served >= weight || pq.ready.empty()) {
        pq.served = 0;
        ring_.erase(ring_.begin() + static_cast<std::ptrdiff_t>(r));
        if (!pq.ready.empty())
          ring_.push_back(project);
      }
      forget_queued(e.id);
      return std::pair{project, std::move(e)};
    }
    if (pq.ready.empty()) {
      pq.served = 0;
      ring_.erase(ring_.begin() + static_cast<std::ptrdiff_t>(r));
      --r;
    }
  }
  return std::nullopt;
}

std::optional<std::pair<std::string, SqliteJobQueue::Entry>> SqliteJobQueue::pick() {
  if (options_.lease_models)
    return pick_filtered();
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

void SqliteJobQueue::enqueue_locked(const std::vector<Submission *> &subs,
                                    std::vector<Status> &outcomes) {
  outcomes.assign(subs.size(), Ok());
  std::map<std::string, std::pair<int64_t, int64_t>> group; // admitted so far: (jobs, bytes)
  std::vector<size_t> admitted;
  for (size_t i = 0; i < subs.size(); ++i) {
    std::map<std::string, std::pair<int64_t, int64_t>> adding; // this one plus the group's
    for (const auto &j : subs[i]->jobs) {
      adding[j.project].first++;
      adding[j.project].second += static_cast<int64_t>(j.body.size());
    }
    for (auto &[project, add] : adding) {
      if (auto g = group.find(project); g != group.end()) {
        add.first += g->second.first;
        add.second += g->second.second;
      }
    }
    Status ok = Ok();
    for (const auto &[project, add] : adding) {
      auto it = projects_.find(project);
      const int64_t have = it == projects_.end() ? 0 : it->second.queued;
      if (have + add.first > options_.max_queued_per_project) {
        const int64_t before = have + (group.count(project) ? group[project].first : 0);
        Error e{ErrorCode::kQueueFull,
                "project '" + project + "' has " + std::to_string(before) +
                    " queued jobs; the limit is " + std::to_string(options_.max_queued_per_project),
                ""};
        e.retry_after_ms = 1000;
        ok = e;
        break;
      }
    }
    if (ok)
      ok = check_storage(adding);
    if (!ok) {
      outcomes[i] = std::move(ok);
      continue;
    }
    group = std::move(adding);
    admitted.push_back(i);
  }
  if (admitted.empty())
    return;
  Status st = [&]() -> Status {
    GANTRY_ASSIGN_OR_RETURN(auto tx, Transaction::begin(*db_));
    for (size_t i : admitted) {
      for (const auto &j : subs[i]->jobs) {
        GANTRY_ASSIGN_OR_RETURN(
            Query q,
            db_->query("INSERT INTO jobs(id, project, key_id, endpoint, body, webhook_url, "
                       "webhook_events, metadata, batch_id, custom_id, priority, status, "
                       "max_attempts, created_ms, not_before_ms, expires_at_ms, bytes, model) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'queued', ?, ?, ?, ?, ?, ?)"));
        GANTRY_TRY(q.text(j.id)
                       .text(j.project)
                       .text(j.key_id)
                       .text(j.endpoint)
                       .text(j.body)
                       .text(j.webhook_url)
                       .text(join_list(j.webhook_events, ','))
                       .text(j.metadata.empty() ? "{}" : j.metadata)
                       .text(j.batch_id)
                       .text(j.custom_id)
                       .i64(j.priority)
                       .i64(j.max_attempts)
                       .i64(j.created_ms)
                       .i64(j.not_before_ms)
                       .i64(j.expires_at_ms)
                       .i64(static_cast<int64_t>(j.body.size()))
                       .text(j.model)
                       .run());
      }
    }
    return tx.commit();
  }();
  if (!st) {
    for (size_t i : admitted)
      outcomes[i] = st; // rolled back: none of them is stored
    return;
  }
  for (const auto &[project, add] : group) {
    if (auto it = stored_.find(project); it != stored_.end()) {
      it->second.first += add.first;
      it->second.second += add.second;
    }
  }
  for (size_t i : admitted)
    for (auto &j : subs[i]->jobs)
      push_queued(j.project, entry(j.priority, j.created_ms, j.id, j.model), j.not_before_ms);
}

Status SqliteJobQueue::enqueue(std::vector<Job> jobs) {
  Submission one{std::move(jobs), nullptr};
  std::vector<Status> outcomes;
  {
    std::lock_guard<std::mutex> lk(mu_);
    enqueue_locked({&one}, outcomes);
  }
  cv_.notify_all();
  return std::move(outcomes[0]);
}

void SqliteJobQueue::enqueue_async(std::vector<Job> jobs, std::function<void(Status)> done) {
  constexpr size_t kMaxPendingJobs = 8192; // beyond, the disk is not keeping up: say so at once
  {
    std::lock_guard<std::mutex> lk(submit_mu_);
    if (!submit_stop_ && pending_jobs_ + jobs.size() <= kMaxPendingJobs) {
      pending_jobs_ += jobs.size();
      pending_.push_back(Submission{std::move(jobs), std::move(done)});
      if (!committer_.joinable())
        committer_ = std::thread([this] { commit_loop(); });
      submit_cv_.notify_one();
      return;
    }
  }
  Error e{ErrorCode::kUnavailable, "too many job submissions are waiting for the database", ""};
  e.retry_after_ms = 1000;
  done(e);
}

void SqliteJobQueue::drain_submissions() {
  std::unique_lock<std::mutex> lk(submit_mu_);
  drained_cv_.wait(lk, [&] { return pending_.empty() && committing_ == 0; });
}

// Takes every submission waiting (up to a group's bound), commits them as one transaction and
// answers each; submissions arriving meanwhile form the next group.
void SqliteJobQueue::commit_loop() {
  constexpr size_t kMaxGroupJobs = 512;
  std::unique_lock<std::mutex> lk(submit_mu_);
  for (;;) {
    submit_cv_.wait(lk, [&] { return submit_stop_ || !pending_.empty(); });
    if (pending_.empty())
      return; // stopping, and everything was answered
    std::vector<Submission> group;
    size_t n = 0;
    while (!pending_.empty() &&
           (group.empty() || n + pending_.front().jobs.size() <= kMaxGroupJobs)) {
      n += pending_.front().jobs.size();
      group.push_back(std::move(pending_.front()));
      pending_.pop_front();
    }
    pending_jobs_ -= n;
    ++committing_;
    lk.unlock();
    std::vector<Submission *> subs;
    for (auto &s : group)
      subs.push_back(&s);
    std::vector<Status> outcomes;
    {
      std::lock_guard<std::mutex> q(mu_);
      enqueue_locked(subs, outcomes);
    }
    cv_.notify_all();
    for (size_t i = 0; i < group.size(); ++i)
      group[i].done(std::move(outcomes[i]));
    lk.lock();
    --committing_;
    drained_cv_.notify_all();
  }
}

Result<std::optional<Lease>> SqliteJobQueue::lease(std::string_view,
                                                   std::chrono::milliseconds visibility,
                                                   std::chrono::milliseconds wait) {
  const auto deadline = clock_.now() + wait;
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
          db_->query(JOB_SQL("UPDATE jobs SET status = 'running', attempts = attempts + 1, "
                             "started_ms = CASE WHEN started_ms = 0 THEN ? ELSE started_ms END, "
                             "lease_until_ms = ?, lease_owner = ? WHERE id = ? AND "
                             "status = 'queued' RETURNING ",
                             "")));
      GANTRY_ASSIGN_OR_RETURN(
          bool row, q.i64(now).i64(until).text(options_.node_id).text(picked->second.id).step());
      if (!row)
        continue; // changed under us (canceled by another process)
      Lease l{job_columns().read(q), 0};
      l.attempt = l.job.attempts;
      GANTRY_TRY(q.run()); // finish the statement so the change is committed
      running_[l.job.id] = {l.attempt, l.job.max_attempts, until};
      return std::optional<Lease>(std::move(l));
    }
    if (wake_gen_ != gen || clock_.now() >= deadline)
      return std::optional<Lease>();
    // A relative wait, so that it means the same on the Clock as on the condition variable's.
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock_.now());
    if (!delayed_.empty())
      left = std::min(left, std::chrono::milliseconds(delayed_.begin()->first - now));
    cv_.wait_for(lk, left);
  }
}

Status
SqliteJobQueue::check_storage(const std::map<std::string, std::pair<int64_t, int64_t>> &adding) {
  if (options_.max_stored_per_project <= 0 && options_.max_stored_bytes_per_project <= 0)
    return Ok();
  for (const auto &[project, add] : adding) {
    auto it = stored_.find(project);
    if (it == stored_.end()) {
      if (stored_.size() >= kMaxStoredEntries)
        stored_.clear();
      // Covered by the (project, bytes) index: no job row is read.
      GANTRY_ASSIGN_OR_RETURN(Query q, db_->query("SELECT COUNT(*), COALESCE(SUM(bytes), 0) "
                                                  "FROM jobs WHERE project = ?"));
      GANTRY_ASSIGN_OR_RETURN(bool row, q.text(project).step());
      it =
          stored_.emplace(project, std::pair{row ? q.col_i64(0) : 0, row ? q.col_i64(1) : 0}).first;
    }
    const int64_t count = it->second.first;
    const int64_t bytes = it->second.second;
    const auto &o = options_;
    if (o.max_stored_per_project > 0 && count + add.first > o.max_stored_per_project)
      return Error{ErrorCode::kQuotaExceeded,
                   "project '" + project + "' stores " + std::to_string(count) +
                       " jobs; the limit is " + std::to_string(o.max_stored_per_project) +
                       " (finished jobs count until retention removes them)",
                   ""};
    if (o.max_stored_bytes_per_project > 0 && bytes + add.second > o.max_stored_bytes_per_project)
      return Error{ErrorCode::kQuotaExceeded,
                   "project '" + project + "' stores " + std::to_string(bytes) +
                       " bytes of jobs; the limit is " +
                       std::to_string(o.max_stored_bytes_per_project) +
                       " (finished jobs count until retention removes them)",
                   ""};
  }
  return Ok();
}

Result<bool> SqliteJobQueue::renew(const Lease &l, std::chrono::milliseconds visibility) {
  std::lock_guard<std::mutex> lk(mu_);
  const int64_t until = clock_.unix_millis() + visibility.count();
  GANTRY_ASSIGN_OR_RETURN(Query q,
                          db_->query("UPDATE jobs SET lease_until_ms = ? WHERE id = ? AND "
                                     "attempts = ? AND status = 'running' AND lease_owner = ?"));
  GANTRY_TRY(q.i64(until).text(l.job.id).i64(l.attempt).text(options_.node_id).run());
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
                          "cost_usd = ?, lease_until_ms = 0, bytes = bytes + ? WHERE id = ? AND "
                          "attempts = ? AND status = 'running' AND lease_owner = ?"));
  GANTRY_TRY(q.text(o.success ? "succeeded" : "failed")
                 .i64(clock_.unix_millis())
                 .i64(o.status)
                 .text(o.body)
                 .text(o.error)
                 .i64(o.input_tokens)
                 .i64(o.output_tokens)
                 .f64(o.cost_usd)
                 .i64(static_cast<int64_t>(o.body.size() + o.error.size()))
                 .text(l.job.id)
                 .i64(l.attempt)
                 .text(options_.node_id)
                 .run());
  const bool won = q.changes() == 1;
  if (won) {
    if (auto it = stored_.find(l.job.project); it != stored_.end())
      it->second.second += static_cast<int64_t>(o.body.size() + o.error.size());
  }
  if (auto it = running_.find(l.job.id); it != running_.end() && it->second.attempt == l.attempt)
    running_.erase(it);
  return won;
}

Result<bool> SqliteJobQueue::requeue_or_fail(const std::string &id, int attempt, int max_attempts,
                                             std::string_view owner, std::string_view error,
                                             std::chrono::milliseconds delay, bool count_attempt,
                                             std::vector<Job> *failed) {
  const int64_t now = clock_.unix_millis();
  // Either the lease is this owner's, or (owner "") it must have lapsed: a lease renewed by its
  // node between reclaim()'s read and this write is left alone.
  const int64_t lapsed_before = owner.empty() ? now : INT64_MAX;
  if (count_attempt && attempt >= max_attempts) {
    GANTRY_ASSIGN_OR_RETURN(
        Query q, db_->query("UPDATE jobs SET status = 'failed', finished_ms = ?, error = ?, "
                            "lease_until_ms = 0, lease_owner = '' WHERE id = ? AND attempts = ? "
                            "AND status = 'running' AND (lease_owner = ? OR ? = '') AND "
                            "lease_until_ms < ?"));
    GANTRY_TRY(q.i64(now)
                   .text(error)
                   .text(id)
                   .i64(attempt)
                   .text(owner)
                   .text(owner)
                   .i64(lapsed_before)
                   .run());
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
          "attempts = attempts - ?, deferrals = deferrals + ?, lease_until_ms = 0, lease_owner = "
          "'' WHERE id = ? AND attempts = ? AND status = 'running' AND (lease_owner = ? OR ? = "
          "'') AND lease_until_ms < ? RETURNING project, priority, created_ms, model"));
  GANTRY_ASSIGN_OR_RETURN(bool row, q.i64(now + delay.count())
                                        .text(error)
                                        .i64(count_attempt ? 0 : 1)
                                        .i64(count_attempt ? 0 : 1)
                                        .text(id)
                                        .i64(attempt)
                                        .text(owner)
                                        .text(owner)
                                        .i64(lapsed_before)
                                        .step());
  running_.erase(id);
  if (!row)
    return false;
  const std::string project = q.col_text(0);
  const int priority = static_cast<int>(q.col_i64(1));
  const int64_t created = q.col_i64(2);
  std::string model = q.col_text(3);
  GANTRY_TRY(q.run());
  push_queued(project, entry(priority, created, id, std::move(model)), now + delay.count());
  return true;
}

Result<bool> SqliteJobQueue::retry(const Lease &l, std::string_view error,
                                   std::chrono::milliseconds delay, bool count_attempt) {
  std::unique_lock<std::mutex> lk(mu_);
  GANTRY_ASSIGN_OR_RETURN(bool done,
                          requeue_or_fail(l.job.id, l.attempt, l.job.max_attempts, options_.node_id,
                                          error, delay, count_attempt, nullptr));
  lk.unlock();
  cv_.notify_all();
  return done;
}

Result<bool> SqliteJobQueue::release(const Lease &l, std::string_view reason) {
  std::unique_lock<std::mutex> lk(mu_);
  const int64_t now = clock_.unix_millis();
  // lease_until_ms = -1 marks it handed back: the other nodes' reclaim() adopts it into their
  // schedules (they learn of other nodes' queued jobs only at open() otherwise).
  GANTRY_ASSIGN_OR_RETURN(
      Query q, db_->query("UPDATE jobs SET status = 'queued', not_before_ms = ?, error = ?, "
                          "attempts = attempts - 1, lease_until_ms = -1, lease_owner = '' WHERE "
                          "id = ? AND attempts = ? AND status = 'running' AND lease_owner = ? "
                          "RETURNING project, priority, created_ms, model"));
  GANTRY_ASSIGN_OR_RETURN(
      bool row,
      q.i64(now).text(reason).text(l.job.id).i64(l.attempt).text(options_.node_id).step());
  if (auto it = running_.find(l.job.id); it != running_.end() && it->second.attempt == l.attempt)
    running_.erase(it);
  if (!row)
    return false;
  const std::string project = q.col_text(0);
  const int priority = static_cast<int>(q.col_i64(1));
  const int64_t created = q.col_i64(2);
  std::string model = q.col_text(3);
  GANTRY_TRY(q.run());
  push_queued(project, entry(priority, created, l.job.id, std::move(model)), now);
  lk.unlock();
  cv_.notify_all();
  return true;
}

Result<std::optional<Job>> SqliteJobQueue::get_locked(std::string_view id) {
  GANTRY_ASSIGN_OR_RETURN(Query q, db_->query(JOB_SQL("SELECT ", " FROM jobs WHERE id = ?")));
  GANTRY_ASSIGN_OR_RETURN(bool row, q.text(id).step());
  if (!row)
    return std::optional<Job>();
  return std::optional<Job>(job_columns().read(q));
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
                          "'canceled by the caller', lease_until_ms = 0, lease_owner = '' WHERE "
                          "id = ? AND status IN ('queued', 'running')"));
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
  // Ids are random: pages follow the insertion order (rowid), the cursor being the rowid of the
  // `after` job (an unknown cursor gives an empty page).
  GANTRY_ASSIGN_OR_RETURN(
      Query q,
      f.batch_id.empty()
          ? db_->query(JOB_LIST_SQL("SELECT ",
                                    " FROM jobs WHERE project = ? AND "
                                    "(? = '' OR rowid > (SELECT rowid FROM jobs WHERE id = ?)) AND "
                                    "(status = ? OR ? = '') ORDER BY rowid LIMIT ?"))
          : db_->query(JOB_LIST_SQL("SELECT ",
                                    " FROM jobs WHERE batch_id = ? AND "
                                    "(? = '' OR rowid > (SELECT rowid FROM jobs WHERE id = ?)) AND "
                                    "(status = ? OR ? = '') ORDER BY rowid LIMIT ?")));
  q.text(f.batch_id.empty() ? f.project : f.batch_id).text(f.after).text(f.after);
  q.text(status).text(status).i64(f.limit);
  std::vector<Job> out;
  for (;;) {
    GANTRY_ASSIGN_OR_RETURN(bool row, q.step());
    if (!row)
      break;
    out.push_back(job_columns().read(q));
  }
  return out;
}

Result<Reclaimed> SqliteJobQueue::reclaim() {
  std::unique_lock<std::mutex> lk(mu_);
  Reclaimed out;
  const int64_t now = clock_.unix_millis();
  // Every lapsed lease in the table, whichever node held it: a node that died is noticed by
  // the others once its leases lapse. (Each write below re-checks that the lease still lapsed.)
  std::vector<std::pair<std::string, Running>> lapsed;
  {
    GANTRY_ASSIGN_OR_RETURN(Query q,
                            db_->query("SELECT id, attempts, max_attempts, lease_until_ms FROM "
                                       "jobs WHERE status = 'running' AND lease_until_ms < ?"));
    q.i64(now);
    for (;;) {
      GANTRY_ASSIGN_OR_RETURN(bool row, q.step());
      if (!row)
        break;
      lapsed.emplace_back(q.col_text(0), Running{static_cast<int>(q.col_i64(1)),
                                                 static_cast<int>(q.col_i64(2)), q.col_i64(3)});
    }
  }
  for (const auto &[id, r] : lapsed) {
    std::vector<Job> failed;
    GANTRY_ASSIGN_OR_RETURN(bool changed,
                            requeue_or_fail(id, r.attempt, r.max_attempts, "",
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
        Query q,
        db_->query(JOB_SQL("UPDATE jobs SET status = 'expired', finished_ms = ?, error = "
                           "'Cancel-After passed before the job finished', lease_until_ms = 0, "
                           "lease_owner = '' WHERE expires_at_ms > 0 AND expires_at_ms <= ? AND "
                           "status IN ('queued', 'running') RETURNING ",
                           "")));
    q.i64(now).i64(now);
    for (;;) {
      GANTRY_ASSIGN_OR_RETURN(bool row, q.step());
      if (!row)
        break;
      out.expired.push_back(job_columns().read(q));
    }
  }
  for (const auto &j : out.expired) {
    forget_queued(j.id);
    running_.erase(j.id);
  }
  {
    // Jobs another node handed back (release() while it drained): one node adopts each, so they
    // run now rather than when some node next opens the database.
    GANTRY_ASSIGN_OR_RETURN(
        Query q, db_->query("UPDATE jobs SET lease_until_ms = 0 WHERE status = 'queued' AND "
                            "lease_until_ms = -1 RETURNING id, project, priority, created_ms, "
                            "not_before_ms, model"));
    std::vector<std::tuple<std::string, std::string, int, int64_t, int64_t, std::string>> adopted;
    for (;;) {
      GANTRY_ASSIGN_OR_RETURN(bool row, q.step());
      if (!row)
        break;
      adopted.emplace_back(q.col_text(0), q.col_text(1), static_cast<int>(q.col_i64(2)),
                           q.col_i64(3), q.col_i64(4), q.col_text(5));
    }
    for (auto &[id, project, priority, created, not_before, model] : adopted) {
      if (!queued_.contains(id))
        push_queued(project, entry(priority, created, id, model), not_before);
    }
    if (!adopted.empty())
      cv_.notify_all();
  }
  {
    GANTRY_ASSIGN_OR_RETURN(
        Query q, db_->query("DELETE FROM jobs WHERE finished_ms > 0 AND finished_ms < ?"));
    GANTRY_TRY(q.i64(now - options_.retention.count()).run());
    out.purged = q.changes();
    if (out.purged > 0)
      stored_.clear(); // rows went away: each project's count is read again when needed
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
