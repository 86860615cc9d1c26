// The embedded JobQueue on a real SQLite file with a FakeClock: exactly-once results, lapsed
// leases, recovery after a crash, fair scheduling between projects, bounds, cancel and expiry.
#include <gtest/gtest.h>

#include <cmath>

#include "control/temp_dir.h"
#include "jobs/job_ids.h"
#include "jobs/webhook_dispatcher.h"
#include "store/sqlite/sqlite_job_queue.h"
#include "store/sqlite/sqlite_store.h"

namespace gantry::jobs {
namespace {

using namespace std::chrono_literals;
using gantry::testing::TempDir;

class JobQueueTest : public ::testing::Test {
protected:
  void SetUp() override {
    options_.node_id = "node-a";                          // reopen() is the same node restarting
    auto store = control::SqliteStore::open(dir_.path()); // creates and migrates gantry.db
    ASSERT_TRUE(store) << store.error().message;
    reopen();
  }
  void reopen() {
    queue_.reset();
    auto q = SqliteJobQueue::open(control::database_path(dir_.path()), options_, clock_);
    ASSERT_TRUE(q) << q.error().message;
    queue_ = std::move(q).value();
  }
  Job job(const std::string &project, int priority = 0) {
    Job j;
    j.id = ids_.next("job_");
    j.project = project;
    j.endpoint = "/v1/completions";
    j.body = "{}";
    j.priority = priority;
    j.max_attempts = 3;
    j.created_ms = clock_.unix_millis();
    return j;
  }
  std::string add(const std::string &project, int priority = 0) {
    Job j = job(project, priority);
    std::string id = j.id;
    EXPECT_TRUE(queue_->enqueue({std::move(j)}));
    return id;
  }
  std::optional<Lease> lease(std::chrono::milliseconds visibility = 10s) {
    auto l = queue_->lease("w", visibility, 0ms);
    EXPECT_TRUE(l) << l.error().message;
    return l ? std::move(*l) : std::nullopt;
  }
  JobOutcome ok() {
    JobOutcome o;
    o.success = true;
    o.status = 200;
    o.body = R"({"ok":true})";
    o.output_tokens = 5;
    return o;
  }

  TempDir dir_;
  FakeClock clock_;
  JobIds ids_;
  JobQueueOptions options_;
  std::unique_ptr<SqliteJobQueue> queue_;
};

TEST_F(JobQueueTest, TheResultIsRecordedExactlyOnce) {
  const std::string id = add("p");
  auto l = lease();
  ASSERT_TRUE(l);
  EXPECT_EQ(l->job.id, id);
  EXPECT_EQ(l->attempt, 1);
  EXPECT_EQ(l->job.status, JobStatus::kRunning);
  EXPECT_TRUE(*queue_->complete(*l, ok()));
  EXPECT_FALSE(*queue_->complete(*l, ok())) << "a second write of the same outcome is refused";
  auto j = *queue_->get(id);
  ASSERT_TRUE(j);
  EXPECT_EQ(j->status, JobStatus::kSucceeded);
  EXPECT_EQ(j->result, R"({"ok":true})");
  EXPECT_EQ(j->output_tokens, 5);
  EXPECT_FALSE(lease()) << "nothing left to lease";
}

TEST_F(JobQueueTest, ALapsedLeaseIsRetriedAndTheStaleWorkerCannotRecord) {
  options_.retry_base = 2s;
  reopen();
  const std::string id = add("p");
  auto first = lease(5s);
  ASSERT_TRUE(first);
  clock_.advance(6s);
  auto r = queue_->reclaim();
  ASSERT_TRUE(r);
  ASSERT_EQ(r->requeued.size(), 1u);
  EXPECT_FALSE(lease()) << "backoff: not before retry_base has passed";
  clock_.advance(2s);
  auto second = lease();
  ASSERT_TRUE(second);
  EXPECT_EQ(second->attempt, 2);
  EXPECT_FALSE(*queue_->complete(*first, ok())) << "the lapsed worker's result is discarded";
  EXPECT_TRUE(*queue_->complete(*second, ok()));
  EXPECT_EQ((*queue_->get(id))->attempts, 2);
}

TEST_F(JobQueueTest, RenewKeepsTheLeaseAlive) {
  add("p");
  auto l = lease(5s);
  ASSERT_TRUE(l);
  for (int i = 0; i < 4; ++i) {
    clock_.advance(3s);
    EXPECT_TRUE(*queue_->renew(*l, 5s));
    EXPECT_TRUE(queue_->reclaim()->requeued.empty());
  }
  EXPECT_TRUE(*queue_->complete(*l, ok()));
}

TEST_F(JobQueueTest, TheLastAttemptLapsingFailsTheJobWithTheReason) {
  Job j = job("p");
  j.max_attempts = 1;
  const std::string id = j.id;
  ASSERT_TRUE(queue_->enqueue({j}));
  ASSERT_TRUE(lease(1s));
  clock_.advance(2s);
  auto r = queue_->reclaim();
  ASSERT_EQ(r->failed.size(), 1u);
  auto got = *queue_->get(id);
  EXPECT_EQ(got->status, JobStatus::kFailed);
  EXPECT_NE(got->error.find("lease lapsed"), std::string::npos) << got->error;
}

TEST_F(JobQueueTest, JobsRunningWhenTheSameNodeDiedAreRetriedAfterReopen) {
  options_.retry_base = 1s;
  reopen();
  const std::string a = add("p"), b = add("p");
  auto l = lease();
  ASSERT_TRUE(l);
  EXPECT_EQ(l->job.id, a);
  reopen(); // the old process is gone; its lease is not honoured
  auto next = lease();
  ASSERT_TRUE(next);
  EXPECT_EQ(next->job.id, b) << "the interrupted job waits out its backoff";
  clock_.advance(1s);
  auto again = lease();
  ASSERT_TRUE(again);
  EXPECT_EQ(again->job.id, a);
  EXPECT_EQ(again->attempt, 2);
  EXPECT_FALSE(*queue_->complete(*l, ok()));
  EXPECT_TRUE(*queue_->complete(*again, ok()));
}

TEST_F(JobQueueTest, ProjectsTakeTurnsSoOneCannotStarveAnother) {
  for (int i = 0; i < 100; ++i)
    add("a");
  add("b");
  add("b");
  std::string order;
  for (int i = 0; i < 6; ++i)
    order += lease()->job.project;
  EXPECT_EQ(order, "ababaa");
}

TEST_F(JobQueueTest, WeightsGiveAProjectMoreTurns) {
  options_.weights["a"] = 3;
  reopen();
  for (int i = 0; i < 10; ++i) {
    add("a");
    add("b");
  }
  std::string order;
  for (int i = 0; i < 8; ++i)
    order += lease()->job.project;
  EXPECT_EQ(order, "aaabaaab");
}

TEST_F(JobQueueTest, HigherPriorityFirstInsideAProjectThenOldest) {
  const std::string low = add("p", -5), first = add("p"), second = add("p"), high = add("p", 7);
  EXPECT_EQ(lease()->job.id, high);
  EXPECT_EQ(lease()->job.id, first);
  EXPECT_EQ(lease()->job.id, second);
  EXPECT_EQ(lease()->job.id, low);
}

TEST_F(JobQueueTest, AProjectBeyondItsBoundIsRefused) {
  options_.max_queued_per_project = 3;
  reopen();
  for (int i = 0; i < 3; ++i)
    add("full");
  auto st = queue_->enqueue({job("full")});
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code, ErrorCode::kQueueFull);
  EXPECT_TRUE(queue_->enqueue({job("other")})) << "the bound is per project";
  ASSERT_TRUE(lease());
  EXPECT_TRUE(queue_->enqueue({job("full")})) << "a leased job no longer counts as queued";
}

TEST_F(JobQueueTest, CancelStopsQueuedAndRunningJobs) {
  const std::string a = add("p"), b = add("p");
  auto c = queue_->cancel("p", b);
  ASSERT_TRUE(c && *c);
  EXPECT_EQ((*c)->status, JobStatus::kCanceled);
  EXPECT_FALSE(*queue_->cancel("other", a)) << "another project's job is not found";
  auto l = lease();
  ASSERT_TRUE(l);
  EXPECT_EQ(l->job.id, a);
  EXPECT_FALSE(lease()) << "the canceled job is never leased";
  ASSERT_TRUE(*queue_->cancel("p", a));
  EXPECT_FALSE(*queue_->complete(*l, ok())) << "a canceled job's result is not recorded";
  EXPECT_EQ((*queue_->get(a))->status, JobStatus::kCanceled);
}

TEST_F(JobQueueTest, CancelAfterExpiresUnfinishedJobsAndRetentionPurgesOldOnes) {
  options_.retention = 60s;
  reopen();
  Job j = job("p");
  j.expires_at_ms = clock_.unix_millis() + 5000;
  const std::string id = j.id;
  ASSERT_TRUE(queue_->enqueue({j}));
  const std::string done = add("p");
  clock_.advance(6s);
  auto r = queue_->reclaim();
  ASSERT_EQ(r->expired.size(), 1u);
  EXPECT_EQ((*queue_->get(id))->status, JobStatus::kExpired);
  auto l = lease();
  ASSERT_TRUE(l);
  EXPECT_EQ(l->job.id, done);
  ASSERT_TRUE(*queue_->complete(*l, ok()));
  clock_.advance(61s);
  EXPECT_EQ(queue_->reclaim()->purged, 2);
  EXPECT_FALSE(*queue_->get(done));
}

TEST_F(JobQueueTest, OverloadGivesTheAttemptBack) {
  const std::string id = add("p");
  auto l = lease();
  ASSERT_TRUE(*queue_->retry(*l, "HTTP 429", 0ms, false));
  auto again = lease();
  ASSERT_TRUE(again);
  EXPECT_EQ(again->attempt, 1) << "a deferral is not an attempt";
  EXPECT_EQ(again->job.deferrals, 1) << "but it is counted, for the next request id";
}

TEST_F(JobQueueTest, ListPagesInCreationOrderPerProject) {
  std::vector<std::string> ids;
  for (int i = 0; i < 5; ++i)
    ids.push_back(add("p"));
  add("q");
  ListFilter f;
  f.project = "p";
  f.limit = 3;
  auto page1 = *queue_->list(f);
  ASSERT_EQ(page1.size(), 3u);
  EXPECT_EQ(page1[0].id, ids[0]);
  f.after = page1.back().id;
  auto page2 = *queue_->list(f);
  ASSERT_EQ(page2.size(), 2u);
  EXPECT_EQ(page2[1].id, ids[4]);
  f = {};
  f.project = "p";
  f.status = JobStatus::kRunning;
  EXPECT_TRUE(queue_->list(f)->empty());
}

TEST(WebhookRetryDelay, GrowsWithJitterUpToTheCap) {
  WebhookOptions o;
  o.retry_base = 1000ms;
  o.retry_max = 60'000ms;
  std::chrono::milliseconds prev{0};
  for (int attempt = 1; attempt <= 4; ++attempt) {
    auto d = webhook_retry_delay(o, "msg_x", attempt);
    const double nominal = std::min(1000.0 * std::pow(4.0, attempt - 1), 60'000.0);
    EXPECT_GE(d.count(), static_cast<int64_t>(nominal * 0.8)) << attempt;
    EXPECT_LE(d.count(), static_cast<int64_t>(nominal * 1.2)) << attempt;
    EXPECT_GT(d, prev);
    prev = d;
  }
  EXPECT_LE(webhook_retry_delay(o, "msg_x", 30).count(), 72'000);
  EXPECT_NE(webhook_retry_delay(o, "msg_a", 2), webhook_retry_delay(o, "msg_b", 2))
      << "jitter spreads deliveries that failed together";
}

} // namespace
} // namespace gantry::jobs

namespace gantry::jobs {
namespace {

TEST_F(JobQueueTest, DepthCountsWaitingJobsAndTheOldestOnesAge) {
  auto empty = queue_->depth();
  ASSERT_TRUE(empty);
  EXPECT_EQ(empty->queued, 0);
  EXPECT_EQ(empty->oldest_created_ms, 0);
  const int64_t first = clock_.unix_millis();
  add("a");
  clock_.advance(5s);
  add("b");
  add("a");
  auto d = queue_->depth();
  ASSERT_TRUE(d);
  EXPECT_EQ(d->queued, 3);
  EXPECT_EQ(d->oldest_created_ms, first);
  auto l = lease(); // the oldest starts running: no longer waiting
  ASSERT_TRUE(l);
  d = queue_->depth();
  EXPECT_EQ(d->queued, 2);
  EXPECT_EQ(d->oldest_created_ms, first + 5000);
}

} // namespace
} // namespace gantry::jobs

namespace gantry::jobs {
namespace {

// Two nodes: two queues over one database file, each with its own node id and connection.
class TwoNodesTest : public JobQueueTest {
protected:
  std::unique_ptr<SqliteJobQueue> open_node(const std::string &node) {
    JobQueueOptions o = options_;
    o.node_id = node;
    auto q = SqliteJobQueue::open(control::database_path(dir_.path()), o, clock_);
    EXPECT_TRUE(q) << q.error().message;
    return q ? std::move(q).value() : nullptr;
  }
};

TEST_F(TwoNodesTest, ANodeStartingLeavesAnotherNodesLiveLeaseAlone) {
  options_.retry_base = 1s;
  reopen();
  const std::string id = add("p");
  auto on_a = lease(10s);
  ASSERT_TRUE(on_a);
  auto b = open_node("node-b"); // recover() runs here
  ASSERT_TRUE(b);
  EXPECT_EQ((*b->get(id))->status, JobStatus::kRunning) << "B's start did not requeue A's job";
  EXPECT_FALSE(*b->lease("w", 10s, 0ms)) << "nothing for B to run";
  EXPECT_TRUE(b->reclaim()->requeued.empty()) << "A's lease is live";
  clock_.advance(5s);
  EXPECT_TRUE(*queue_->renew(*on_a, 10s)) << "A still holds its lease";
  EXPECT_TRUE(*queue_->complete(*on_a, ok()));
  EXPECT_EQ((*b->get(id))->status, JobStatus::kSucceeded);
}

TEST_F(TwoNodesTest, ALapsedLeaseIsTakenOverAndTheStaleHolderCannotCompleteIt) {
  options_.retry_base = 1s;
  reopen();
  const std::string id = add("p");
  auto on_a = lease(10s);
  ASSERT_TRUE(on_a);
  auto b = open_node("node-b");
  ASSERT_TRUE(b);
  clock_.advance(11s); // A stalls (or died): its lease lapses
  auto r = b->reclaim();
  ASSERT_TRUE(r);
  ASSERT_EQ(r->requeued.size(), 1u) << "any node reclaims a lapsed lease";
  EXPECT_FALSE(*queue_->complete(*on_a, ok())) << "requeued: the stale holder is refused";
  clock_.advance(1s);
  auto on_b = b->lease("w", 10s, 0ms);
  ASSERT_TRUE(on_b && *on_b);
  EXPECT_EQ((*on_b)->job.id, id);
  EXPECT_EQ((*on_b)->attempt, 2);
  EXPECT_FALSE(*queue_->renew(*on_a, 10s)) << "the stale holder cannot renew";
  EXPECT_FALSE(*queue_->complete(*on_a, ok())) << "nor complete while B runs it";
  JobOutcome from_b = ok();
  from_b.body = R"({"from":"b"})";
  EXPECT_TRUE(*b->complete(**on_b, from_b));
  EXPECT_FALSE(*b->complete(**on_b, ok())) << "never completed twice";
  EXPECT_FALSE(*queue_->complete(*on_a, ok()));
  auto j = *b->get(id);
  EXPECT_EQ(j->result, R"({"from":"b"})");
  EXPECT_EQ(j->attempts, 2);
}

TEST_F(TwoNodesTest, ANodeStartingAfterTheLeaseLapsedReclaimsIt) {
  options_.retry_base = 1s;
  reopen();
  const std::string id = add("p");
  auto on_a = lease(10s);
  ASSERT_TRUE(on_a);
  clock_.advance(11s);
  auto b = open_node("node-b");
  ASSERT_TRUE(b);
  EXPECT_EQ((*b->get(id))->status, JobStatus::kQueued);
  clock_.advance(1s);
  auto on_b = b->lease("w", 10s, 0ms);
  ASSERT_TRUE(on_b && *on_b);
  EXPECT_EQ((*on_b)->job.id, id);
  EXPECT_FALSE(*queue_->complete(*on_a, ok()));
}

TEST_F(TwoNodesTest, AJobBothNodesKnowIsLeasedByOnlyOne) {
  const std::string id = add("p");
  auto b = open_node("node-b"); // B's schedule learns of the queued job at start
  ASSERT_TRUE(b);
  auto on_b = b->lease("w", 10s, 0ms);
  ASSERT_TRUE(on_b && *on_b);
  EXPECT_EQ((*on_b)->job.id, id);
  EXPECT_FALSE(lease()) << "A's conditional lease finds the job no longer queued";
  EXPECT_FALSE(*b->cancel("other-project", id)) << "cancel stays per project across nodes";
}

TEST_F(JobQueueTest, StoredJobsAreBoundedPerProjectInCountAndBytes) {
  options_.max_stored_per_project = 3;
  options_.max_stored_bytes_per_project = 1000;
  options_.retention = 60s;
  reopen();
  for (int i = 0; i < 3; ++i)
    add("p");
  auto l = lease();
  ASSERT_TRUE(*queue_->complete(*l, ok()));
  auto st = queue_->enqueue({job("p")});
  ASSERT_FALSE(st) << "finished jobs still count until retention removes them";
  EXPECT_EQ(st.error().code, ErrorCode::kQuotaExceeded);
  EXPECT_TRUE(queue_->enqueue({job("q")})) << "per project";
  Job big = job("q");
  big.body = std::string(1001, 'x');
  st = queue_->enqueue({big});
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code, ErrorCode::kQuotaExceeded);
  EXPECT_NE(st.error().message.find("bytes"), std::string::npos) << st.error().message;
  clock_.advance(61s);
  ASSERT_EQ(queue_->reclaim()->purged, 1);
  EXPECT_TRUE(queue_->enqueue({job("p")})) << "retention frees the room";
}

TEST_F(JobQueueTest, ListingLoadsNoRequestBodies) {
  Job j = job("p");
  j.body = R"({"prompt":"a long request body"})";
  ASSERT_TRUE(queue_->enqueue({j}));
  ListFilter f;
  f.project = "p";
  auto page = *queue_->list(f);
  ASSERT_EQ(page.size(), 1u);
  EXPECT_EQ(page[0].id, j.id);
  EXPECT_TRUE(page[0].body.empty());
  EXPECT_EQ((*queue_->get(j.id))->body, j.body) << "get() still has it, for the runner";
}

} // namespace
} // namespace gantry::jobs
