// The job runner over a real SQLite queue: what happens when an executor throws (issue 15,
// item 4: exceptions on the job-runner threads are captured, never the end of the process).
#include "jobs/job_runner.h"

#include <gtest/gtest.h>

#include <condition_variable>
#include <mutex>

#include "control/temp_dir.h"
#include "core/thread_guard.h"
#include "jobs/job_ids.h"
#include "store/sqlite/sqlite_job_queue.h"
#include "store/sqlite/sqlite_store.h"

namespace gantry::jobs {
namespace {

using namespace std::chrono_literals;

// Throws on its first start (a bug in the executor), answers 200 after that.
class ThrowsOnce final : public JobExecutor {
public:
  std::function<void()> start(const Job &, std::function<void(ExecResult)> done) override {
    if (starts_.fetch_add(1) == 0)
      throw std::logic_error("executor bug");
    done({200, R"({"usage":{"prompt_tokens":1,"completion_tokens":2}})", 0, 0});
    return [] {};
  }
  std::atomic<int> starts_{0};
};

TEST(JobRunner, AnExecutorThatThrowsIsReportedAndItsJobRetriedWithoutWaitingForTheLease) {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::string> reported;
  ScopedFailureReporter scope([&](std::string_view site, const std::exception &e) {
    std::lock_guard lk(mu);
    reported.push_back(std::string(site) + ": " + e.what());
  });

  gantry::testing::TempDir dir;
  SystemClock clock;
  ASSERT_TRUE(control::SqliteStore::open(dir.path())); // creates the schema
  JobQueueOptions qo;
  qo.node_id = "n1";
  auto q = SqliteJobQueue::open(control::database_path(dir.path()), qo, clock);
  ASSERT_TRUE(q) << q.error().message;
  Job j;
  j.id = "job_1";
  j.project = "p";
  j.endpoint = "/v1/completions";
  j.body = "{}";
  j.max_attempts = 3;
  j.created_ms = clock.unix_millis();
  ASSERT_TRUE((*q)->enqueue({j}));

  ThrowsOnce exec;
  RunnerOptions ro;
  ro.workers = 1;
  ro.visibility = 1h; // a job left leased would wait an hour: the test would time out
  ro.retry_base = 10ms;
  bool completed = false;
  JobRunner runner(**q, exec, ro, [&](const Job &job, std::string_view event) {
    if (event == "completed" && job.id == "job_1") {
      std::lock_guard lk(mu);
      completed = true;
      cv.notify_all();
    }
  });
  runner.start();
  {
    std::unique_lock lk(mu);
    ASSERT_TRUE(cv.wait_for(lk, 30s, [&] { return completed; }));
  }
  runner.stop();

  auto got = (*q)->get("job_1");
  ASSERT_TRUE(got && *got);
  EXPECT_EQ((*got)->status, JobStatus::kSucceeded);
  EXPECT_EQ((*got)->attempts, 2) << "the failed attempt counts, the second one succeeds";
  EXPECT_EQ(exec.starts_.load(), 2);
  EXPECT_EQ(runner.counters().succeeded.load(), 1u);
  std::lock_guard lk(mu);
  ASSERT_EQ(reported.size(), 1u);
  EXPECT_EQ(reported[0], "jobs.worker: executor bug");
}

// Job "slow" runs until cancelled, and then (the worst case) still reports a 200; the others
// answer at once.
class RunsUntilCancelled final : public JobExecutor {
public:
  std::function<void()> start(const Job &job, std::function<void(ExecResult)> done) override {
    if (job.id != "slow") {
      done({200, R"({"usage":{"prompt_tokens":1,"completion_tokens":2}})", 0, 0});
      return [] {};
    }
    auto once = std::make_shared<std::atomic<bool>>(false);
    return [done, once] {
      if (!once->exchange(true))
        done({200, R"({"partial":true})", 0, 0});
    };
  }
};

TEST(JobRunner, ADrainFinishesWhatItCanThenHandsTheRestBackAtOnce) {
  gantry::testing::TempDir dir;
  SystemClock clock;
  ASSERT_TRUE(control::SqliteStore::open(dir.path()));
  JobQueueOptions qo;
  qo.node_id = "n1";
  qo.retry_base = 1h; // a deferral or lapse would keep the job waiting an hour
  auto q = SqliteJobQueue::open(control::database_path(dir.path()), qo, clock);
  ASSERT_TRUE(q) << q.error().message;
  for (const char *id : {"slow", "fast"}) {
    Job j;
    j.id = id;
    j.project = "p";
    j.endpoint = "/v1/completions";
    j.body = "{}";
    j.max_attempts = 1;
    j.created_ms = clock.unix_millis();
    ASSERT_TRUE((*q)->enqueue({j}));
  }
  RunsUntilCancelled exec;
  RunnerOptions ro;
  ro.workers = 2;
  ro.visibility = 1h;
  std::mutex mu;
  std::condition_variable cv;
  int started = 0;
  JobRunner runner(**q, exec, ro, [&](const Job &, std::string_view event) {
    std::lock_guard lk(mu);
    started += event == "started";
    cv.notify_all();
  });
  runner.start();
  {
    std::unique_lock lk(mu);
    ASSERT_TRUE(cv.wait_for(lk, 30s, [&] { return started == 2; }));
  }
  EXPECT_EQ(runner.drain(200ms), 1) << "the job still running at the deadline is handed back";

  auto fast = *(*q)->get("fast");
  EXPECT_EQ(fast->status, JobStatus::kSucceeded);
  auto slow = *(*q)->get("slow");
  EXPECT_EQ(slow->status, JobStatus::kQueued) << "back in the queue, not waiting out its lease";
  EXPECT_EQ(slow->attempts, 0) << "its one attempt was not spent";
  EXPECT_TRUE(slow->result.empty()) << "the cancelled execution's late 200 was not recorded";
  EXPECT_EQ(runner.counters().released.load(), 1u);
  EXPECT_EQ(runner.counters().succeeded.load(), 1u);
  EXPECT_EQ(runner.counters().lost_leases.load(), 1u);
  // Any node may take it at once (here the same queue, as another node would).
  auto again = (*q)->lease("w", 1h, 0ms);
  ASSERT_TRUE(again && *again);
  EXPECT_EQ((*again)->job.id, "slow");
  EXPECT_EQ((*again)->attempt, 1);
}

} // namespace
} // namespace gantry::jobs
