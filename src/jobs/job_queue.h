// The durable job queue port: jobs are persisted before they are acknowledged, leased by workers
// with a visibility timeout, renewed while they run, retried with backoff when a lease lapses
// (the worker or its node died) and recorded exactly once through a conditional write on
// (id, attempt, owner node).
//
// Several nodes may share one queue: a lease names its owner node and expiry, and a node only
// ever takes back a lease that lapsed. The interface fits a PostgreSQL adapter without changing
// callers: lease is `UPDATE … WHERE id = (SELECT … FOR UPDATE SKIP LOCKED)` woken by
// LISTEN/NOTIFY, renew and complete are conditional updates, reclaim() selects lapsed leases.
//
// Threading: implementations are safe to call from any thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.h"

namespace gantry::jobs {

enum class JobStatus { kQueued, kRunning, kSucceeded, kFailed, kCanceled, kExpired };

std::string_view job_status_name(JobStatus s);
std::optional<JobStatus> parse_job_status(std::string_view s);
inline bool is_terminal(JobStatus s) { return s != JobStatus::kQueued && s != JobStatus::kRunning; }

struct Job {
  std::string id;
  std::string project;  // the fairness and visibility scope
  std::string key_id;   // the key that submitted it: the job runs as that key
  std::string endpoint; // "/v1/chat/completions" | "/v1/completions"
  // The request's "model" (set at submission): a node leases only jobs for the models it serves
  // (JobQueueOptions::lease_models). "" for jobs stored before it was recorded: any node.
  std::string model;
  std::string body; // the request body, "stream" already forced off
  std::string webhook_url;
  std::vector<std::string> webhook_events; // "started", "completed"
  std::string metadata = "{}";             // JSON object text
  std::string batch_id;                    // set for lines of a batch
  std::string custom_id;
  int priority = 0; // higher first, inside a project
  JobStatus status = JobStatus::kQueued;
  int attempts = 0; // leases handed out so far; the lease token
  // Times the job was put back without spending an attempt (overload). Each deferral gives the
  // next execution a new request id, since the refused one already has its ledger row.
  int deferrals = 0;
  int max_attempts = 3;
  int64_t created_ms = 0;
  int64_t started_ms = 0;
  int64_t finished_ms = 0;
  int64_t not_before_ms = 0; // backoff: not leased before this
  int64_t expires_at_ms = 0; // Cancel-After; 0 = never
  int result_status = 0;     // HTTP status of the recorded response
  std::string result;        // the response body (success) or the error body (failure)
  std::string error;         // why it failed / was canceled / expired
  int64_t input_tokens = 0;
  int64_t output_tokens = 0;
  double cost_usd = 0;
};

// A job handed to one worker. `attempt` is the lease token: every write about the outcome is
// conditional on it, so a worker whose lease lapsed cannot overwrite its successor's result.
struct Lease {
  Job job;
  int attempt = 0;
};

struct JobOutcome {
  bool success = false;
  int status = 0;
  std::string body;
  std::string error;
  int64_t input_tokens = 0;
  int64_t output_tokens = 0;
  double cost_usd = 0;
};

struct ListFilter {
  std::string project; // "" is the project of unauthenticated callers, not "any"
  std::optional<JobStatus> status;
  std::string after; // job id cursor (exclusive), in insertion order (ids are random)
  int limit = 20;
  std::string batch_id; // when set: the batch's lines, whatever the project
};

// What maintenance changed, for the runner to act on (cancel running executions, webhooks).
struct Reclaimed {
  std::vector<Job> requeued; // leases that lapsed and went back to the queue
  std::vector<Job> failed;   // leases that lapsed on their last attempt
  std::vector<Job> expired;  // Cancel-After passed
  int64_t purged = 0;        // finished jobs past retention, deleted
};

struct QueueDepth {
  int64_t queued = 0;
  int64_t oldest_created_ms = 0;
};

// How an adapter is opened: the node it runs for, the bounds and the schedule.
struct JobQueueOptions {
  // This process's node id, recorded as the owner of its leases. Must be unique among the live
  // processes sharing the database; "" picks a random one at open().
  std::string node_id;
  int64_t max_queued_per_project = 10'000; // beyond this enqueue answers kQueueFull (429)
  // Stored jobs (any status, until retention purges them) per project, and their bytes (request
  // body + result); beyond either enqueue answers kQuotaExceeded (audit M3). 0 = unbounded.
  int64_t max_stored_per_project = 100'000;
  int64_t max_stored_bytes_per_project = int64_t{1} << 30;
  std::chrono::milliseconds retention{std::chrono::hours(24 * 7)}; // finished jobs kept
  std::chrono::milliseconds retry_base{1000}; // backoff after a lapsed lease: base * 2^(n-1)
  std::chrono::milliseconds retry_max{std::chrono::minutes(5)};
  std::map<std::string, int> weights; // project → round-robin weight (default 1)
  // The models whose jobs this node runs (roles, issue 13: a worker its loaded models, a gateway
  // the remote models it serves itself); nullopt = every job. lease() skips the others, which
  // wait for a node that serves them; jobs without a recorded model go to any node.
  std::optional<std::vector<std::string>> lease_models;
};

class JobQueue {
public:
  virtual ~JobQueue() = default;

  // Persists the jobs (all or none) before returning. kQueueFull when a project would exceed its
  // bound of queued jobs.
  virtual Status enqueue(std::vector<Job> jobs) = 0;
  // The same, answered through `done` (called exactly once, with what enqueue() would have
  // returned) instead of by blocking the caller: an HTTP I/O thread submits and answers its 202
  // from `done`, so an adapter whose commit waits on a disk flush can commit many callers'
  // submissions together (PostgreSQL: one WAL flush for a group). `done` may run on another
  // thread, after this returns. The default commits inline.
  virtual void enqueue_async(std::vector<Job> jobs, std::function<void(Status)> done) {
    done(enqueue(std::move(jobs)));
  }
  // Returns once every enqueue_async() called so far has had its `done` run (shutdown: the
  // callers' state must outlive their callbacks).
  virtual void drain_submissions() {}
  // The next job by the fair schedule, marked running with a fresh attempt and a lease that lapses
  // after `visibility` unless renewed; std::nullopt when nothing is ready within `wait`.
  virtual Result<std::optional<Lease>> lease(std::string_view worker_id,
                                             std::chrono::milliseconds visibility,
                                             std::chrono::milliseconds wait) = 0;
  // False when the lease is no longer this worker's (lapsed, canceled).
  virtual Result<bool> renew(const Lease &lease, std::chrono::milliseconds visibility) = 0;
  // Records the outcome exactly once: true when this call wrote it, false when the lease was lost
  // (another attempt, a cancel or an expiry got there first).
  virtual Result<bool> complete(const Lease &lease, const JobOutcome &outcome) = 0;
  // The attempt failed: back to the queue after `delay`, or failed for good when it was the last
  // attempt. `count_attempt` false gives the attempt back (overload, shutdown: not the job's
  // fault).
  virtual Result<bool> retry(const Lease &lease, std::string_view error,
                             std::chrono::milliseconds delay, bool count_attempt) = 0;
  // Hands a running job back at once (its node is draining: SIGTERM, a preemption notice): queued
  // again with no backoff and no lease, so any node may take it now rather than after the
  // visibility timeout, and the attempt given back (it does not count against max_attempts, nor
  // does it change the job's request id: the ledger still holds one row per job). Conditional on
  // (id, attempt, owner) like complete(): false when the lease was no longer this node's. The
  // caller stops the execution afterwards; a late complete() of it fails on the lease. Called only
  // once this process leases no more, since the next lease reuses the attempt number.
  virtual Result<bool> release(const Lease &lease, std::string_view reason) = 0;
  // Marks a queued or running job canceled; the job as it is afterwards, std::nullopt when the
  // project has no such job.
  virtual Result<std::optional<Job>> cancel(std::string_view project, std::string_view id) = 0;
  virtual Result<std::optional<Job>> get(std::string_view id) = 0;
  // Without the request bodies (Job::body is empty): a page must not load them (audit M3).
  virtual Result<std::vector<Job>> list(const ListFilter &filter) = 0;
  // Lapsed leases of any node back to the queue (or failed), Cancel-After expiries, retention
  // purge.
  virtual Result<Reclaimed> reclaim() = 0;
  // Wakes every lease() that is waiting (shutdown).
  virtual void wake_all() = 0;
  // For /metrics: how many jobs wait, and since when the oldest (0 when none).
  virtual Result<QueueDepth> depth() = 0;
};

} // namespace gantry::jobs
