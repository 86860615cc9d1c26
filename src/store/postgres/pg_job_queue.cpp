#include "store/postgres/pg_job_queue.h"

#include <libpq-fe.h>
#include <sys/select.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <map>

#include "control/store.h"
#include "jobs/job_ids.h"

namespace gantry::store {
namespace {

using jobs::Job;
using jobs::JobStatus;
using jobs::Lease;

// Every column a Job has, in read_job()'s order; LIST_COLUMNS has '' for the body (listings never
// load request bodies, audit M3).
#define JOB_COLUMNS_AFTER_BODY                                                                     \
  "webhook_url, webhook_events, metadata, batch_id, custom_id, priority, status, attempts, "       \
  "deferrals, max_attempts, created_ms, started_ms, finished_ms, not_before_ms, expires_at_ms, "   \
  "result_status, result, error, input_tokens, output_tokens, cost_usd"
constexpr const char *kColumns = "id, project, key_id, endpoint, body, " JOB_COLUMNS_AFTER_BODY;
constexpr const char *kListColumns =
    "id, project, key_id, endpoint, '' AS body, " JOB_COLUMNS_AFTER_BODY;

Job read_job(const PgResult &r, int i) {
  Job j;
  j.id = r.text(i, 0);
  j.project = r.text(i, 1);
  j.key_id = r.text(i, 2);
  j.endpoint = r.text(i, 3);
  j.body = r.text(i, 4);
  j.webhook_url = r.text(i, 5);
  j.webhook_events = control::split_list(r.text(i, 6), ',');
  j.metadata = r.text(i, 7);
  j.batch_id = r.text(i, 8);
  j.custom_id = r.text(i, 9);
  j.priority = static_cast<int>(r.i64(i, 10));
  j.status = jobs::parse_job_status(r.text(i, 11)).value_or(JobStatus::kFailed);
  j.attempts = static_cast<int>(r.i64(i, 12));
  j.deferrals = static_cast<int>(r.i64(i, 13));
  j.max_attempts = static_cast<int>(r.i64(i, 14));
  j.created_ms = r.i64(i, 15);
  j.started_ms = r.i64(i, 16);
  j.finished_ms = r.i64(i, 17);
  j.not_before_ms = r.i64(i, 18);
  j.expires_at_ms = r.i64(i, 19);
  j.result_status = static_cast<int>(r.i64(i, 20));
  j.result = r.text(i, 21);
  j.error = r.text(i, 22);
  j.input_tokens = r.i64(i, 23);
  j.output_tokens = r.i64(i, 24);
  j.cost_usd = r.f64(i, 25);
  return j;
}

std::vector<Job> read_jobs(const PgResult &r) {
  std::vector<Job> out;
  for (int i = 0; i < r.rows(); ++i)
    out.push_back(read_job(r, i));
  return out;
}

// The SQL for a requeue's backoff: base * 2^(attempts-1), capped (retry_delay of the embedded
// adapter), from parameters $base and $max.
std::string backoff_sql(const std::string &base, const std::string &max) {
  return "LEAST(" + base + "::bigint * (2 ^ GREATEST(attempts - 1, 0))::bigint, " + max +
         "::bigint)";
}

} // namespace

PgJobQueue::PgJobQueue(std::shared_ptr<PgPool> pool, jobs::JobQueueOptions options,
                       const Clock &clock)
    : pool_(std::move(pool)), options_(std::move(options)), clock_(clock) {}

Result<std::unique_ptr<PgJobQueue>>
PgJobQueue::open(std::shared_ptr<PgPool> pool, jobs::JobQueueOptions options, const Clock &clock) {
  GANTRY_TRY(migrate_pg_schema(*pool));
  if (options.node_id.empty())
    options.node_id = jobs::JobIds().next("node_");
  std::unique_ptr<PgJobQueue> q(new PgJobQueue(std::move(pool), std::move(options), clock));
  GANTRY_TRY(q->recover());
  q->listener_ = std::thread([raw = q.get()] { raw->listen_loop(); });
  q->notifier_ = std::thread([raw = q.get()] { raw->notify_loop(); });
  q->committers_.emplace_back([raw = q.get()] { raw->commit_loop(); });
  return q;
}

PgJobQueue::~PgJobQueue() {
  {
    // Committers answer every submission still waiting before they return.
    std::lock_guard<std::mutex> lk(submit_mu_);
    submit_stop_ = true;
  }
  submit_cv_.notify_all();
  for (auto &t : committers_)
    t.join();
  {
    std::lock_guard<std::mutex> lk(mu_);
    stopping_.store(true);
  }
  cv_.notify_all();
  if (listener_.joinable())
    listener_.join();
  if (notifier_.joinable())
    notifier_.join();
}

int PgJobQueue::weight(const std::string &project) const {
  auto w = options_.weights.find(project);
  return w == options_.weights.end() ? 1 : std::max(1, w->second);
}

// LISTEN on a connection of its own; each notification wakes the waiting lease() calls. Reconnects
// after a failure (the 1 s re-check in lease() covers the gap).
void PgJobQueue::listen_loop() {
  pg_conn *c = nullptr;
  while (!stopping_.load()) {
    if (!c) {
      auto opened = pool_->open_dedicated();
      if (!opened) {
        for (int i = 0; i < 10 && !stopping_.load(); ++i)
          ::usleep(100'000);
        continue;
      }
      c = *opened;
      PGresult *r = PQexec(c, "LISTEN gantry_jobs");
      const bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
      PQclear(r);
      if (!ok) {
        PQfinish(c);
        c = nullptr;
        continue;
      }
    }
    const int fd = PQsocket(c);
    fd_set in;
    FD_ZERO(&in);
    FD_SET(fd, &in);
    timeval tv{0, 200'000}; // re-check stopping_ five times a second
    const int n = ::select(fd + 1, &in, nullptr, nullptr, &tv);
    if (n < 0)
      continue;
    if (n == 0)
      continue;
    if (PQconsumeInput(c) == 0) {
      PQfinish(c);
      c = nullptr;
      continue;
    }
    bool any = false;
    while (PGnotify *note = PQnotifies(c)) {
      any = true;
      PQfreemem(note);
    }
    if (any) {
      ++notifications_;
      {
        std::lock_guard<std::mutex> lk(mu_);
        ++notify_gen_;
      }
      cv_.notify_all();
    }
  }
  if (c)
    PQfinish(c);
}

Status PgJobQueue::recover() {
  const int64_t now = clock_.unix_millis();
  const std::string delay = backoff_sql(std::to_string(options_.retry_base.count()),
                                        std::to_string(options_.retry_max.count()));
  // This node's own running jobs (its previous process died: the attempt is spent) and every
  // lapsed lease. A live lease of another node is left alone.
  return pool_->transaction([&](PgConn &c) -> Status {
    GANTRY_TRY(c.exec("UPDATE jobs SET status = 'failed', finished_ms = $1, error = 'the worker "
                      "running it was lost on each of ' || attempts || ' attempts', "
                      "lease_until_ms = 0, lease_owner = '' WHERE status = 'running' AND "
                      "(lease_owner = $2 OR lease_until_ms < $1) AND attempts >= max_attempts",
                      PgParams().i64(now).text(options_.node_id)));
    GANTRY_TRY(c.exec("UPDATE jobs SET status = 'queued', not_before_ms = $1 + " + delay +
                          ", lease_until_ms = 0, lease_owner = '' WHERE status = 'running' AND "
                          "(lease_owner = $2 OR lease_until_ms < $1)",
                      PgParams().i64(now).text(options_.node_id)));
    return Ok();
  });
}

Status PgJobQueue::admit_and_insert(PgConn &c, const std::vector<Submission *> &subs,
                                    std::vector<Status> &outcomes) {
  struct Totals {
    int64_t queued = 0, stored = 0, bytes = 0;
    bool was_empty = false, admitted = false;
  };
  std::map<std::string, Totals> projects;
  for (const Submission *s : subs)
    for (const auto &j : s->jobs)
      projects.emplace(j.project, Totals{});
  for (auto &[project, t] : projects) {
    // The project's ring entry, then its counters (kept by the jobs_count trigger). Not locked:
    // groups committing side by side may pass a bound together by at most their size (the
    // bounds stop runaway clients; they are not exact quotas).
    GANTRY_TRY(c.exec_prepared("gantry_job_project",
                               "INSERT INTO job_projects(project, turn) VALUES ($1, "
                               "nextval('job_turns')) ON CONFLICT (project) DO NOTHING",
                               PgParams().text(project)));
    GANTRY_ASSIGN_OR_RETURN(
        PgResult r, c.exec_prepared("gantry_job_counts",
                                    "SELECT coalesce(sum(queued), 0), coalesce(sum(stored), "
                                    "0), coalesce(sum(bytes), 0) FROM job_counts WHERE "
                                    "project = $1",
                                    PgParams().text(project)));
    t.queued = r.i64(0, 0);
    t.stored = r.i64(0, 1);
    t.bytes = r.i64(0, 2);
    t.was_empty = t.queued == 0;
  }
  // Each submission in arrival order, all of its jobs or none, against the counts plus what the
  // group admitted before it.
  std::vector<const Job *> rows;
  outcomes.assign(subs.size(), Ok());
  const auto &o = options_;
  for (size_t i = 0; i < subs.size(); ++i) {
    std::map<std::string, std::pair<int64_t, int64_t>> adding; // project → (jobs, bytes)
    for (const auto &j : subs[i]->jobs) {
      adding[j.project].first++;
      adding[j.project].second += static_cast<int64_t>(j.body.size());
    }
    Status refused = Ok();
    for (const auto &[project, add] : adding) {
      const Totals &t = projects[project];
      if (t.queued + add.first > o.max_queued_per_project) {
        Error e{ErrorCode::kQueueFull,
                "project '" + project + "' has " + std::to_string(t.queued) +
                    " queued jobs; the limit is " + std::to_string(o.max_queued_per_project),
                ""};
        e.retry_after_ms = 1000;
        refused = e;
      } else if (o.max_stored_per_project > 0 && t.stored + add.first > o.max_stored_per_project) {
        refused = Error{ErrorCode::kQuotaExceeded,
                        "project '" + project + "' stores " + std::to_string(t.stored) +
                            " jobs; the limit is " + std::to_string(o.max_stored_per_project) +
                            " (finished jobs count until retention removes them)",
                        ""};
      } else if (o.max_stored_bytes_per_project > 0 &&
                 t.bytes + add.second > o.max_stored_bytes_per_project) {
        refused = Error{ErrorCode::kQuotaExceeded,
                        "project '" + project + "' stores " + std::to_string(t.bytes) +
                            " bytes of jobs; the limit is " +
                            std::to_string(o.max_stored_bytes_per_project) +
                            " (finished jobs count until retention removes them)",
                        ""};
      }
      if (!refused)
        break;
    }
    if (!refused) {
      outcomes[i] = std::move(refused);
      continue;
    }
    for (const auto &[project, add] : adding) {
      Totals &t = projects[project];
      t.queued += add.first;
      t.stored += add.first;
      t.bytes += add.second;
      t.admitted = true;
    }
    for (const auto &j : subs[i]->jobs)
      rows.push_back(&j);
  }
  // A project with nothing queued joins at the back of the ring.
  for (const auto &[project, t] : projects)
    if (t.was_empty && t.admitted)
      GANTRY_TRY(c.exec_prepared("gantry_job_rejoin",
                                 "UPDATE job_projects SET turn = nextval('job_turns'), served = 0 "
                                 "WHERE project = $1",
                                 PgParams().text(project)));
  // Multi-row INSERTs: one statement per 64 jobs instead of one per job.
  constexpr size_t kRowsPerInsert = 64;
  constexpr int kColumnsPerRow = 17;
  for (size_t at = 0; at < rows.size(); at += kRowsPerInsert) {
    const size_t n = std::min(kRowsPerInsert, rows.size() - at);
    std::string sql =
        "INSERT INTO jobs(id, project, key_id, endpoint, body, webhook_url, "
        "webhook_events, metadata, batch_id, custom_id, priority, status, "
        "max_attempts, created_ms, not_before_ms, expires_at_ms, bytes, model) VALUES ";
    PgParams params;
    for (size_t k = 0; k < n; ++k) {
      const Job &j = *rows[at + k];
      const int b = static_cast<int>(k) * kColumnsPerRow;
      sql += k ? ", (" : "(";
      for (int col = 1; col <= kColumnsPerRow; ++col) {
        if (col == 12)
          sql += "'queued', ";
        sql += "$" + std::to_string(b + col) + (col == kColumnsPerRow ? ")" : ", ");
      }
      params.text(j.id)
          .text(j.project)
          .text(j.key_id)
          .text(j.endpoint)
          .text(j.body)
          .text(j.webhook_url)
          .text(control::join_list(j.webhook_events, ','))
          .text(j.metadata.empty() ? "{}" : j.metadata)
          .text(j.batch_id)
          .text(j.custom_id)
          .i64(j.priority)
          .i64(j.max_attempts)
          .i64(j.created_ms)
          .i64(j.not_before_ms)
          .i64(j.expires_at_ms)
          .i64(static_cast<int64_t>(j.body.size()))
          .text(j.model);
    }
    if (n == 1) {
      GANTRY_TRY(c.exec_prepared("gantry_job_insert", sql.c_str(), params));
    } else {
      GANTRY_TRY(c.exec(sql, params));
    }
  }
  return Ok();
}

Status PgJobQueue::enqueue(std::vector<Job> jobs_in) {
  Submission one{std::move(jobs_in), nullptr};
  std::vector<Status> outcomes;
  GANTRY_TRY(pool_->transaction(
      [&](PgConn &c) -> Status { return admit_and_insert(c, {&one}, outcomes); }));
  if (outcomes[0])
    announce();
  return std::move(outcomes[0]);
}

void PgJobQueue::enqueue_async(std::vector<Job> jobs_in, std::function<void(Status)> done) {
  // Bounded: past this many jobs waiting for a committer the database is not keeping up, and
  // the caller hears so at once instead of queueing without bound in memory.
  constexpr size_t kMaxPendingJobs = 8192;
  {
    std::lock_guard<std::mutex> lk(submit_mu_);
    if (!submit_stop_ && pending_jobs_ + jobs_in.size() <= kMaxPendingJobs) {
      pending_jobs_ += jobs_in.size();
      pending_.push_back(Submission{std::move(jobs_in), std::move(done)});
      submit_cv_.notify_one();
      return;
    }
  }
  Error e{ErrorCode::kUnavailable, "too many job submissions are waiting for PostgreSQL", ""};
  e.retry_after_ms = 1000;
  done(e);
}

void PgJobQueue::drain_submissions() {
  std::unique_lock<std::mutex> lk(submit_mu_);
  drained_cv_.wait(lk, [&] { return pending_.empty() && committing_ == 0; });
}

// The committer: takes every submission waiting (up to a group's bound) and commits them as one
// transaction; submissions arriving meanwhile form the next group. One committer: two groups
// of one project committing side by side update its counter rows (the jobs_count trigger) in
// different orders and deadlock, which PostgreSQL detects only after deadlock_timeout (1 s).
void PgJobQueue::commit_loop() {
  constexpr size_t kMaxGroupJobs = 512;
  std::unique_lock<std::mutex> lk(submit_mu_);
  for (;;) {
    submit_cv_.wait(lk, [&] { return submit_stop_ || !pending_.empty(); });
    if (pending_.empty())
      return; // stopping, and everything was answered
    std::vector<Submission> group;
    size_t jobs = 0;
    while (!pending_.empty() &&
           (group.empty() || jobs + pending_.front().jobs.size() <= kMaxGroupJobs)) {
      jobs += pending_.front().jobs.size();
      group.push_back(std::move(pending_.front()));
      pending_.pop_front();
    }
    pending_jobs_ -= jobs;
    ++committing_;
    lk.unlock();
    commit_group(std::move(group));
    lk.lock();
    --committing_;
    drained_cv_.notify_all();
  }
}

void PgJobQueue::commit_group(std::vector<Submission> group) {
  std::vector<Submission *> subs;
  for (auto &s : group)
    subs.push_back(&s);
  std::vector<Status> outcomes;
  Status st =
      pool_->transaction([&](PgConn &c) -> Status { return admit_and_insert(c, subs, outcomes); });
  if (!st) {
    // The group failed as a whole (a lost connection, a duplicate id): each submission on its
    // own, so one bad submission does not fail the others.
    for (auto &s : group) {
      if (group.size() == 1)
        s.done(st);
      else
        s.done(enqueue(std::move(s.jobs)));
    }
    return;
  }
  bool any = false;
  for (size_t i = 0; i < group.size(); ++i) {
    any = any || static_cast<bool>(outcomes[i]);
    group[i].done(std::move(outcomes[i]));
  }
  if (any)
    announce();
}

// The lease filter as a PostgreSQL text[] literal: {"a","b"}, each element quoted.
std::string PgJobQueue::lease_models_literal() const {
  if (!options_.lease_models)
    return {};
  std::string out = "{";
  for (const auto &m : *options_.lease_models) {
    if (out.size() > 1)
      out += ',';
    out += '"';
    for (char ch : m) {
      if (ch == '"' || ch == '\\')
        out += '\\';
      out += ch;
    }
    out += '"';
  }
  return out + "}";
}

Result<std::optional<Lease>> PgJobQueue::try_lease(std::chrono::milliseconds visibility) {
  const int64_t now = clock_.unix_millis();
  std::optional<Lease> out;
  GANTRY_TRY(pool_->transaction([&](PgConn &c) -> Status {
    // The project at the front of the ring among those with a job ready; one another node is
    // serving right now is skipped rather than waited for.
    // The lease filter: `any` true = every model; otherwise only jobs of this node's models
    // (a text[] literal), and jobs without a recorded model ('') go to any node.
    const bool any = !options_.lease_models.has_value();
    const std::string models = any ? "{}" : lease_models_literal();
    GANTRY_ASSIGN_OR_RETURN(
        PgResult p, c.exec("SELECT p.project, p.served FROM job_projects p WHERE EXISTS ("
                           "SELECT 1 FROM jobs j WHERE j.project = p.project AND "
                           "j.status = 'queued' AND j.not_before_ms <= $1 AND ($2::boolean OR "
                           "j.model = '' OR j.model = ANY($3::text[]))) "
                           "ORDER BY p.turn LIMIT 1 FOR UPDATE OF p SKIP LOCKED",
                           PgParams().i64(now).boolean(any).text(models)));
    if (p.rows() == 0)
      return Ok();
    const std::string project = p.text(0, 0);
    const int64_t served = p.i64(0, 1) + 1;
    GANTRY_ASSIGN_OR_RETURN(
        PgResult r,
        c.exec(std::string("UPDATE jobs SET status = 'running', attempts = attempts + 1, "
                           "started_ms = CASE WHEN started_ms = 0 THEN $1 ELSE started_ms END, "
                           "lease_until_ms = $2, lease_owner = $3 WHERE id = (SELECT id FROM jobs "
                           "WHERE project = $4 AND status = 'queued' AND not_before_ms <= $1 "
                           "AND ($5::boolean OR model = '' OR model = ANY($6::text[])) "
                           "ORDER BY priority DESC, created_ms, seq LIMIT 1 FOR UPDATE SKIP "
                           "LOCKED) RETURNING ") +
                   kColumns,
               PgParams()
                   .i64(now)
                   .i64(now + visibility.count())
                   .text(options_.node_id)
                   .text(project)
                   .boolean(any)
                   .text(models)));
    if (r.rows() == 0)
      return Ok();
    Lease l{read_job(r, 0), 0};
    l.attempt = l.job.attempts;
    out = std::move(l);
    // Weighted round robin: a project keeps the front for `weight` turns, or until it has
    // nothing more ready, then goes to the back of the ring.
    GANTRY_ASSIGN_OR_RETURN(PgResult more,
                            c.exec("SELECT EXISTS (SELECT 1 FROM jobs WHERE project = $1 AND "
                                   "status = 'queued' AND not_before_ms <= $2 AND ($3::boolean OR "
                                   "model = '' OR model = ANY($4::text[])))",
                                   PgParams().text(project).i64(now).boolean(any).text(models)));
    const bool has_more = more.rows() == 1 && more.text(0, 0) == "t";
    if (served >= weight(project) || !has_more)
      GANTRY_TRY(c.exec("UPDATE job_projects SET served = 0, turn = nextval('job_turns') "
                        "WHERE project = $1",
                        PgParams().text(project)));
    else
      GANTRY_TRY(c.exec("UPDATE job_projects SET served = $2 WHERE project = $1",
                        PgParams().text(project).i64(served)));
    return Ok();
  }));
  return out;
}

Result<std::optional<Lease>> PgJobQueue::lease(std::string_view,
                                               std::chrono::milliseconds visibility,
                                               std::chrono::milliseconds wait) {
  const auto deadline = clock_.now() + wait;
  uint64_t wake;
  {
    std::lock_guard<std::mutex> lk(mu_);
    wake = wake_gen_;
  }
  for (;;) {
    uint64_t seen;
    {
      std::lock_guard<std::mutex> lk(mu_);
      seen = notify_gen_;
    }
    GANTRY_ASSIGN_OR_RETURN(auto l, try_lease(visibility));
    if (l)
      return l;
    std::unique_lock<std::mutex> lk(mu_);
    if (wake_gen_ != wake || clock_.now() >= deadline)
      return std::optional<Lease>();
    // Until a NOTIFY (new work) arrives, or 1 s passes (a backoff may have come due).
    const auto left =
        std::min(std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock_.now()),
                 std::chrono::milliseconds(1000));
    cv_.wait_for(lk, left, [&] { return notify_gen_ != seen || wake_gen_ != wake; });
  }
}

Result<bool> PgJobQueue::renew(const Lease &l, std::chrono::milliseconds visibility) {
  GANTRY_ASSIGN_OR_RETURN(
      PgResult r, pool_->exec("UPDATE jobs SET lease_until_ms = $1 WHERE id = $2 AND attempts = "
                              "$3 AND status = 'running' AND lease_owner = $4",
                              PgParams()
                                  .i64(clock_.unix_millis() + visibility.count())
                                  .text(l.job.id)
                                  .i64(l.attempt)
                                  .text(options_.node_id)));
  return r.affected() == 1;
}

Result<bool> PgJobQueue::complete(const Lease &l, const jobs::JobOutcome &o) {
  GANTRY_ASSIGN_OR_RETURN(
      PgResult r,
      pool_->exec("UPDATE jobs SET status = $1, finished_ms = $2, result_status = $3, result = $4, "
                  "error = $5, input_tokens = $6, output_tokens = $7, cost_usd = $8, "
                  "lease_until_ms = 0, bytes = bytes + $9 WHERE id = $10 AND attempts = $11 AND "
                  "status = 'running' AND lease_owner = $12",
                  PgParams()
                      .text(o.success ? "succeeded" : "failed")
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
                      .text(options_.node_id)));
  return r.affected() == 1;
}

Result<bool> PgJobQueue::retry(const Lease &l, std::string_view error,
                               std::chrono::milliseconds delay, bool count_attempt) {
  const int64_t now = clock_.unix_millis();
  bool done = false;
  GANTRY_TRY(pool_->transaction([&](PgConn &c) -> Status {
    if (count_attempt && l.attempt >= l.job.max_attempts) {
      GANTRY_ASSIGN_OR_RETURN(
          PgResult r, c.exec("UPDATE jobs SET status = 'failed', finished_ms = $1, error = $2, "
                             "lease_until_ms = 0, lease_owner = '' WHERE id = $3 AND attempts = "
                             "$4 AND status = 'running' AND lease_owner = $5",
                             PgParams().i64(now).text(error).text(l.job.id).i64(l.attempt).text(
                                 options_.node_id)));
      done = r.affected() == 1;
      return Ok();
    }
    GANTRY_ASSIGN_OR_RETURN(
        PgResult r,
        c.exec("UPDATE jobs SET status = 'queued', not_before_ms = $1, error = $2, attempts = "
               "attempts - $3, deferrals = deferrals + $3, lease_until_ms = 0, lease_owner = '' "
               "WHERE id = $4 AND attempts = $5 AND status = 'running' AND lease_owner = $6",
               PgParams()
                   .i64(now + delay.count())
                   .text(error)
                   .i64(count_attempt ? 0 : 1)
                   .text(l.job.id)
                   .i64(l.attempt)
                   .text(options_.node_id)));
    done = r.affected() == 1;
    return Ok();
  }));
  if (done)
    announce();
  return done;
}

Result<bool> PgJobQueue::release(const Lease &l, std::string_view reason) {
  GANTRY_ASSIGN_OR_RETURN(
      PgResult r,
      pool_->exec("UPDATE jobs SET status = 'queued', not_before_ms = $1, error = $2, attempts = "
                  "attempts - 1, lease_until_ms = 0, lease_owner = '' WHERE id = $3 AND "
                  "attempts = $4 AND status = 'running' AND lease_owner = $5",
                  PgParams()
                      .i64(clock_.unix_millis())
                      .text(reason)
                      .text(l.job.id)
                      .i64(l.attempt)
                      .text(options_.node_id)));
  const bool done = r.affected() == 1;
  if (done)
    announce(); // the other nodes' idle workers take it now
  return done;
}

Result<std::optional<Job>> PgJobQueue::get(std::string_view id) {
  GANTRY_ASSIGN_OR_RETURN(
      PgResult r, pool_->exec(std::string("SELECT ") + kColumns + " FROM jobs WHERE id = $1",
                              PgParams().text(id)));
  if (r.rows() == 0)
    return std::optional<Job>();
  return std::optional<Job>(read_job(r, 0));
}

Result<std::optional<Job>> PgJobQueue::cancel(std::string_view project, std::string_view id) {
  GANTRY_ASSIGN_OR_RETURN(auto job, get(id));
  if (!job || job->project != project)
    return std::optional<Job>();
  if (jobs::is_terminal(job->status))
    return job;
  GANTRY_TRY(pool_->exec("UPDATE jobs SET status = 'canceled', finished_ms = $1, error = "
                         "'canceled by the caller', lease_until_ms = 0, lease_owner = '' WHERE "
                         "id = $2 AND status IN ('queued', 'running')",
                         PgParams().i64(clock_.unix_millis()).text(id)));
  return get(id);
}

Result<std::vector<Job>> PgJobQueue::list(const jobs::ListFilter &f) {
  const std::string status = f.status ? std::string(jobs::job_status_name(*f.status)) : "";
  // Pages follow insertion order (seq); the cursor is the seq of the `after` job (an unknown
  // cursor gives an empty page).
  const std::string scope = f.batch_id.empty() ? "project" : "batch_id";
  GANTRY_ASSIGN_OR_RETURN(
      PgResult r,
      pool_->exec(std::string("SELECT ") + kListColumns + " FROM jobs WHERE " + scope +
                      " = $1 AND ($2 = '' OR seq > (SELECT seq FROM jobs WHERE id = $2)) AND "
                      "($3 = '' OR status = $3) ORDER BY seq LIMIT $4",
                  PgParams()
                      .text(f.batch_id.empty() ? f.project : f.batch_id)
                      .text(f.after)
                      .text(status)
                      .i64(f.limit)));
  return read_jobs(r);
}

Result<jobs::Reclaimed> PgJobQueue::reclaim() {
  const int64_t now = clock_.unix_millis();
  jobs::Reclaimed out;
  const std::string delay = backoff_sql(std::to_string(options_.retry_base.count()),
                                        std::to_string(options_.retry_max.count()));
  GANTRY_TRY(pool_->transaction([&](PgConn &c) -> Status {
    // Every lapsed lease, whichever node held it: a node that died is noticed by the others.
    GANTRY_ASSIGN_OR_RETURN(
        PgResult failed,
        c.exec(std::string("UPDATE jobs SET status = 'failed', finished_ms = $1, error = 'the "
                           "lease lapsed (worker stalled or lost)', lease_until_ms = 0, "
                           "lease_owner = '' WHERE status = 'running' AND lease_until_ms < $1 "
                           "AND attempts >= max_attempts RETURNING ") +
                   kColumns,
               PgParams().i64(now)));
    out.failed = read_jobs(failed);
    GANTRY_ASSIGN_OR_RETURN(
        PgResult requeued,
        c.exec("UPDATE jobs SET status = 'queued', not_before_ms = $1 + " + delay +
                   ", error = 'the lease lapsed (worker stalled or lost)', lease_until_ms = 0, "
                   "lease_owner = '' WHERE status = 'running' AND lease_until_ms < $1 RETURNING " +
                   kColumns,
               PgParams().i64(now)));
    out.requeued = read_jobs(requeued);
    GANTRY_ASSIGN_OR_RETURN(
        PgResult expired,
        c.exec(std::string("UPDATE jobs SET status = 'expired', finished_ms = $1, error = "
                           "'Cancel-After passed before the job finished', lease_until_ms = 0, "
                           "lease_owner = '' WHERE expires_at_ms > 0 AND expires_at_ms <= $1 AND "
                           "status IN ('queued', 'running') RETURNING ") +
                   kColumns,
               PgParams().i64(now)));
    out.expired = read_jobs(expired);
    GANTRY_ASSIGN_OR_RETURN(PgResult purged,
                            c.exec("DELETE FROM jobs WHERE finished_ms > 0 AND finished_ms < $1",
                                   PgParams().i64(now - options_.retention.count())));
    out.purged = purged.affected();
    return Ok();
  }));
  if (!out.requeued.empty())
    announce();
  return out;
}

// New work is committed: wake this node's waiting lease() calls at once, and have the notifier
// thread tell the other nodes. The NOTIFY is its own statement after the commit, coalesced over
// a millisecond: PostgreSQL serialises every committing transaction that NOTIFYs on one global
// lock, so a NOTIFY inside each submission capped acceptance at one WAL flush at a time.
void PgJobQueue::announce() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    ++notify_gen_;
    notify_pending_ = true;
  }
  cv_.notify_all();
}

void PgJobQueue::notify_loop() {
  std::unique_lock<std::mutex> lk(mu_);
  while (!stopping_.load()) {
    cv_.wait_for(lk, std::chrono::milliseconds(200),
                 [&] { return notify_pending_ || stopping_.load(); });
    if (!notify_pending_)
      continue;
    lk.unlock();
    ::usleep(1000); // let a burst of submissions share one NOTIFY
    lk.lock();
    notify_pending_ = false;
    lk.unlock();
    (void)pool_->exec("NOTIFY gantry_jobs"); // best effort: lease() re-checks every second
    lk.lock();
  }
}

void PgJobQueue::wake_all() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    ++wake_gen_;
  }
  cv_.notify_all();
}

Result<jobs::QueueDepth> PgJobQueue::depth() {
  GANTRY_ASSIGN_OR_RETURN(PgResult r, pool_->exec("SELECT count(*), coalesce(min(created_ms), 0) "
                                                  "FROM jobs WHERE status = 'queued'"));
  return jobs::QueueDepth{r.i64(0, 0), r.i64(0, 1)};
}

} // namespace gantry::store
