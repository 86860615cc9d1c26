// Runs queued jobs: a pool of worker threads, each leasing one job at a time from the JobQueue,
// executing it through a JobExecutor (the gateway's inference path), renewing the lease while
// it runs and recording the outcome exactly once. A maintenance thread reclaims lapsed leases,
// expires jobs past Cancel-After and purges old results.
//
// Failure policy: 2xx → succeeded; overload (429 queue_full/rate limits, 503) → back to the queue
// without spending an attempt; other 4xx → failed for good (the request is wrong); 5xx or no
// answer → retried with backoff until max_attempts, then failed with the reason. Cut off by a
// drain (SIGTERM, a preemption notice) → handed back at once (JobQueue::release), not a failure.
//
// Threading: start()/stop() on the owner's thread; cancel() from any thread; events are
// reported on worker or maintenance threads.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "core/clock.h"
#include "jobs/job_queue.h"

namespace gantry::jobs {

struct ExecResult {
  int status = 0; // HTTP status; 0 = no answer
  std::string body;
  double cost_usd = 0;
  int64_t retry_after_ms = 0;
};

// Starts one job's execution. `done` is called exactly once, from any thread. The returned
// function cancels the execution (the generation stops at the engine's next step; `done` still
// follows).
class JobExecutor {
public:
  virtual ~JobExecutor() = default;
  virtual std::function<void()> start(const Job &job, std::function<void(ExecResult)> done) = 0;
};

struct RunnerOptions {
  int workers = 4;
  std::chrono::milliseconds visibility{30'000}; // lease length; renewed every third of it
  std::chrono::milliseconds maintenance{500};   // reclaim / expiry / purge period
  std::chrono::milliseconds retry_base{1000};   // backoff after a failed attempt
  std::chrono::milliseconds retry_max{std::chrono::minutes(5)};
};

struct RunnerCounters {
  std::atomic<uint64_t> started{0}, succeeded{0}, failed{0}, retried{0}, deferred{0},
      lost_leases{0}, reclaimed{0}, expired{0}, released{0};
};

class JobRunner {
public:
  // `on_event(job, "started" | "completed")`: completed is reported once per job, for every
  // terminal state reached here (succeeded, failed, expired, and canceled while running).
  using EventHook = std::function<void(const Job &job, std::string_view event)>;

  JobRunner(JobQueue &queue, JobExecutor &executor, RunnerOptions options, EventHook on_event);
  ~JobRunner();

  void start();
  // No new leases from now on (graceful shutdown begins); running executions go on.
  void stop_leasing();
  // The drain (SIGTERM, a preemption notice): stops leasing, gives running jobs until `grace` to
  // finish, then hands the leases of the unfinished ones back at once (JobQueue::release: another
  // node runs them now, not after the visibility timeout, and the attempt is not spent) before
  // cancelling their executions, which then cannot record a result. Joins. Returns how many
  // jobs it handed back.
  int drain(std::chrono::milliseconds grace);
  // drain(0): stops leasing, hands back and cancels what runs, joins.
  void stop();
  // Stops the job's execution if it runs in this process; true when it did.
  bool cancel(const std::string &job_id);

  const RunnerCounters &counters() const { return counters_; }

private:
  void work(int index);
  void run_leased(const Lease &lease); // one job, start to finish; throws only on a bug
  void maintain();
  void finish(const Lease &lease, const ExecResult &r);

  JobQueue &queue_;
  JobExecutor &executor_;
  const RunnerOptions options_;
  EventHook on_event_;
  RunnerCounters counters_;
  std::atomic<bool> stopping_{false};
  bool joined_ = false;
  std::mutex mu_;
  std::condition_variable cv_;
  struct Running {
    Lease lease;
    std::function<void()> cancel;
  };
  std::map<std::string, Running> running_; // job id → its lease and the execution's cancel
  int active_ = 0; // leases held by worker threads (running_ plus those not yet started)
  std::vector<std::thread> threads_;
  std::thread maintenance_;
};

} // namespace gantry::jobs
