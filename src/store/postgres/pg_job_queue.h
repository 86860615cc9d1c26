// The PostgreSQL JobQueue: one queue shared by every node (issue 13). A job is committed before
// enqueue() returns (the API answers 202 after that); lease() claims the next job with
// `FOR UPDATE SKIP LOCKED`, so two nodes never take the same job and never wait on each other;
// renew, complete and retry are conditional on (id, attempt, owner node), so a worker whose
// lease lapsed cannot overwrite its successor's result; reclaim() takes back lapsed leases of
// any node.
//
// The fair schedule lives in the database, not in a node's memory: job_projects holds each
// project's place in a weighted round-robin ring (`turn`, a sequence) and how many turns it has
// used (`served`), so every node serves projects in the same order the embedded adapter does.
//
// Submissions are committed in groups (enqueue_async): committer threads take every submission
// waiting, check each project's bounds once, insert the group's jobs with multi-row INSERTs and
// commit once, then answer each caller. synchronous_commit stays on, so a 202 still means the
// job is on disk; the WAL flush, which bounds one-at-a-time commits on a slow disk, is shared by
// the group. The statements a submission always runs are prepared once per connection.
//
// Idle workers are woken through LISTEN/NOTIFY (a listener thread on its own connection; after
// enqueue, retry or a reclaim commits, a notifier thread sends one NOTIFY per burst), with a 1 s
// re-check for backoffs coming due, not a polling loop as the main path. The node's own waiting
// workers are woken directly.
//
// Threading: thread-safe.
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>

#include "core/clock.h"
#include "jobs/job_queue.h"
#include "store/postgres/pg_store.h"

namespace gantry::store {

class PgJobQueue final : public jobs::JobQueue {
public:
  // Migrates the job tables if needed, then recovers: this node's own running jobs (its previous
  // process died) and every lapsed lease go back to the queue.
  static Result<std::unique_ptr<PgJobQueue>>
  open(std::shared_ptr<PgPool> pool, jobs::JobQueueOptions options, const Clock &clock);
  ~PgJobQueue() override;

  Status enqueue(std::vector<jobs::Job> jobs) override;
  void enqueue_async(std::vector<jobs::Job> jobs, std::function<void(Status)> done) override;
  void drain_submissions() override;
  Result<std::optional<jobs::Lease>> lease(std::string_view worker_id,
                                           std::chrono::milliseconds visibility,
                                           std::chrono::milliseconds wait) override;
  Result<bool> renew(const jobs::Lease &lease, std::chrono::milliseconds visibility) override;
  Result<bool> complete(const jobs::Lease &lease, const jobs::JobOutcome &outcome) override;
  Result<bool> retry(const jobs::Lease &lease, std::string_view error,
                     std::chrono::milliseconds delay, bool count_attempt) override;
  Result<bool> release(const jobs::Lease &lease, std::string_view reason) override;
  Result<std::optional<jobs::Job>> cancel(std::string_view project, std::string_view id) override;
  Result<std::optional<jobs::Job>> get(std::string_view id) override;
  Result<std::vector<jobs::Job>> list(const jobs::ListFilter &filter) override;
  Result<jobs::Reclaimed> reclaim() override;
  void wake_all() override;
  Result<jobs::QueueDepth> depth() override;

  uint64_t notifications() const { return notifications_.load(); } // wake-ups received

private:
  struct Submission {
    std::vector<jobs::Job> jobs;
    std::function<void(Status)> done;
  };
  PgJobQueue(std::shared_ptr<PgPool> pool, jobs::JobQueueOptions options, const Clock &clock);
  Status recover();
  Result<std::optional<jobs::Lease>> try_lease(std::chrono::milliseconds visibility);
  std::string lease_models_literal() const; // options_.lease_models as a text[] literal
  int weight(const std::string &project) const;
  // Checks each submission's bounds and inserts the admitted ones on `c` (in its transaction);
  // outcomes[i] is submission i's answer. An error is the transaction's (nothing to commit).
  Status admit_and_insert(PgConn &c, const std::vector<Submission *> &subs,
                          std::vector<Status> &outcomes);
  void commit_loop();
  void commit_group(std::vector<Submission> group);
  void listen_loop();
  void announce();
  void notify_loop();

  std::shared_ptr<PgPool> pool_;
  jobs::JobQueueOptions options_;
  const Clock &clock_;

  std::mutex mu_;
  std::condition_variable cv_;
  uint64_t wake_gen_ = 0; // bumped by wake_all(): waiting lease() calls return
  uint64_t notify_gen_ = 0;
  std::atomic<uint64_t> notifications_{0};
  std::atomic<bool> stopping_{false};
  bool notify_pending_ = false; // guarded by mu_
  std::thread listener_;
  std::thread notifier_;

  // Group commit (guarded by submit_mu_): submissions waiting for a committer, bounded.
  std::mutex submit_mu_;
  std::condition_variable submit_cv_;  // a submission arrived, or stopping
  std::condition_variable drained_cv_; // a group was answered
  std::deque<Submission> pending_;
  size_t pending_jobs_ = 0;
  int committing_ = 0; // groups taken and not yet answered
  bool submit_stop_ = false;
  std::vector<std::thread> committers_;
};

} // namespace gantry::store
