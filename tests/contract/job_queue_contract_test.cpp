// The JobQueue contract: every adapter passes the same suite (tests/contract/store_factories.h
// lists them; adding PostgreSQL means adding its factory there). A FakeClock drives time:
// exactly-once results, leases with a visibility timeout, lapsed leases retried and only lapsed
// ones reclaimed (two nodes sharing one backend), recovery when a node restarts, fair scheduling
// between projects, bounds, cancel and expiry.
#include <gtest/gtest.h>

#include <condition_variable>
#include <mutex>
#include <set>
#include <thread>

#include "contract/store_factories.h"
#include "jobs/job_ids.h"
#include "jobs/job_queue.h"
#include "support/fake_clock.h"

namespace gantry::jobs {
namespace {

using namespace std::chrono_literals;

template <typename Factory> class JobQueueContract : public ::testing::Test {
protected:
  void SetUp() override {
    options_.node_id = "node-a"; // reopen() is the same node restarting
    reopen();
  }
  void reopen() {
    queue_.reset();
    queue_ = factory_.job_queue(options_, clock_);
    ASSERT_TRUE(queue_);
  }
  // Another node on the same backend, with its own node id and connection.
  std::unique_ptr<JobQueue> open_node(const std::string &node) {
    JobQueueOptions o = options_;
    o.node_id = node;
    return factory_.job_queue(o, clock_);
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

  Factory factory_;
  FakeClock clock_;
  JobIds ids_;
  JobQueueOptions options_;
  std::unique_ptr<JobQueue> queue_;
};

TYPED_TEST_SUITE(JobQueueContract, contract::StoreAdapters, contract::AdapterName);

TYPED_TEST(JobQueueContract, TheResultIsRecordedExactlyOnce) {
  const std::string id = this->add("p");
  auto l = this->lease();
  ASSERT_TRUE(l);
  EXPECT_EQ(l->job.id, id);
  EXPECT_EQ(l->attempt, 1);
  EXPECT_EQ(l->job.status, JobStatus::kRunning);
  EXPECT_TRUE(*this->queue_->complete(*l, this->ok()));
  EXPECT_FALSE(*this->queue_->complete(*l, this->ok()))
      << "a second write of the same outcome is refused";
  auto j = *this->queue_->get(id);
  ASSERT_TRUE(j);
  EXPECT_EQ(j->status, JobStatus::kSucceeded);
  EXPECT_EQ(j->result, R"({"ok":true})");
  EXPECT_EQ(j->output_tokens, 5);
  EXPECT_FALSE(this->lease()) << "nothing left to lease";
}

TYPED_TEST(JobQueueContract, ALapsedLeaseIsRetriedAndTheStaleWorkerCannotRecord) {
  this->options_.retry_base = 2s;
  this->reopen();
  const std::string id = this->add("p");
  auto first = this->lease(5s);
  ASSERT_TRUE(first);
  this->clock_.advance(6s);
  auto r = this->queue_->reclaim();
  ASSERT_TRUE(r);
  ASSERT_EQ(r->requeued.size(), 1u);
  EXPECT_FALSE(this->lease()) << "backoff: not before retry_base has passed";
  this->clock_.advance(2s);
  auto second = this->lease();
  ASSERT_TRUE(second);
  EXPECT_EQ(second->attempt, 2);
  EXPECT_FALSE(*this->queue_->complete(*first, this->ok()))
      << "the lapsed worker's result is discarded";
  EXPECT_TRUE(*this->queue_->complete(*second, this->ok()));
  EXPECT_EQ((*this->queue_->get(id))->attempts, 2);
}

TYPED_TEST(JobQueueContract, RenewKeepsTheLeaseAlive) {
  this->add("p");
  auto l = this->lease(5s);
  ASSERT_TRUE(l);
  for (int i = 0; i < 4; ++i) {
    this->clock_.advance(3s);
    EXPECT_TRUE(*this->queue_->renew(*l, 5s));
    EXPECT_TRUE(this->queue_->reclaim()->requeued.empty());
  }
  EXPECT_TRUE(*this->queue_->complete(*l, this->ok()));
}

TYPED_TEST(JobQueueContract, TheLastAttemptLapsingFailsTheJobWithTheReason) {
  Job j = this->job("p");
  j.max_attempts = 1;
  const std::string id = j.id;
  ASSERT_TRUE(this->queue_->enqueue({j}));
  ASSERT_TRUE(this->lease(1s));
  this->clock_.advance(2s);
  auto r = this->queue_->reclaim();
  ASSERT_EQ(r->failed.size(), 1u);
  auto got = *this->queue_->get(id);
  EXPECT_EQ(got->status, JobStatus::kFailed);
  EXPECT_NE(got->error.find("lease lapsed"), std::string::npos) << got->error;
}

TYPED_TEST(JobQueueContract, JobsRunningWhenTheSameNodeDiedAreRetriedAfterReopen) {
  this->options_.retry_base = 1s;
  this->reopen();
  const std::string a = this->add("p"), b = this->add("p");
  auto l = this->lease();
  ASSERT_TRUE(l);
  EXPECT_EQ(l->job.id, a);
  this->reopen(); // the old process is gone; its lease is not honoured
  auto next = this->lease();
  ASSERT_TRUE(next);
  EXPECT_EQ(next->job.id, b) << "the interrupted job waits out its backoff";
  this->clock_.advance(1s);
  auto again = this->lease();
  ASSERT_TRUE(again);
  EXPECT_EQ(again->job.id, a);
  EXPECT_EQ(again->attempt, 2);
  EXPECT_FALSE(*this->queue_->complete(*l, this->ok()));
  EXPECT_TRUE(*this->queue_->complete(*again, this->ok()));
}

TYPED_TEST(JobQueueContract, ProjectsTakeTurnsSoOneCannotStarveAnother) {
  for (int i = 0; i < 100; ++i)
    this->add("a");
  this->add("b");
  this->add("b");
  std::string order;
  for (int i = 0; i < 6; ++i)
    order += this->lease()->job.project;
  EXPECT_EQ(order, "ababaa");
}

TYPED_TEST(JobQueueContract, WeightsGiveAProjectMoreTurns) {
  this->options_.weights["a"] = 3;
  this->reopen();
  for (int i = 0; i < 10; ++i) {
    this->add("a");
    this->add("b");
  }
  std::string order;
  for (int i = 0; i < 8; ++i)
    order += this->lease()->job.project;
  EXPECT_EQ(order, "aaabaaab");
}

TYPED_TEST(JobQueueContract, HigherPriorityFirstInsideAProjectThenOldest) {
  const std::string low = this->add("p", -5), first = this->add("p"), second = this->add("p"),
                    high = this->add("p", 7);
  EXPECT_EQ(this->lease()->job.id, high);
  EXPECT_EQ(this->lease()->job.id, first);
  EXPECT_EQ(this->lease()->job.id, second);
  EXPECT_EQ(this->lease()->job.id, low);
}

TYPED_TEST(JobQueueContract, AProjectBeyondItsBoundIsRefused) {
  this->options_.max_queued_per_project = 3;
  this->reopen();
  for (int i = 0; i < 3; ++i)
    this->add("full");
  auto st = this->queue_->enqueue({this->job("full")});
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code, ErrorCode::kQueueFull);
  EXPECT_TRUE(this->queue_->enqueue({this->job("other")})) << "the bound is per project";
  ASSERT_TRUE(this->lease());
  EXPECT_TRUE(this->queue_->enqueue({this->job("full")}))
      << "a leased job no longer counts as queued";
}

TYPED_TEST(JobQueueContract, CancelStopsQueuedAndRunningJobs) {
  const std::string a = this->add("p"), b = this->add("p");
  auto c = this->queue_->cancel("p", b);
  ASSERT_TRUE(c && *c);
  EXPECT_EQ((*c)->status, JobStatus::kCanceled);
  EXPECT_FALSE(*this->queue_->cancel("other", a)) << "another project's job is not found";
  auto l = this->lease();
  ASSERT_TRUE(l);
  EXPECT_EQ(l->job.id, a);
  EXPECT_FALSE(this->lease()) << "the canceled job is never leased";
  ASSERT_TRUE(*this->queue_->cancel("p", a));
  EXPECT_FALSE(*this->queue_->complete(*l, this->ok()))
      << "a canceled job's result is not recorded";
  EXPECT_EQ((*this->queue_->get(a))->status, JobStatus::kCanceled);
}

TYPED_TEST(JobQueueContract, CancelAfterExpiresUnfinishedJobsAndRetentionPurgesOldOnes) {
  this->options_.retention = 60s;
  this->reopen();
  Job j = this->job("p");
  j.expires_at_ms = this->clock_.unix_millis() + 5000;
  const std::string id = j.id;
  ASSERT_TRUE(this->queue_->enqueue({j}));
  const std::string done = this->add("p");
  this->clock_.advance(6s);
  auto r = this->queue_->reclaim();
  ASSERT_EQ(r->expired.size(), 1u);
  EXPECT_EQ((*this->queue_->get(id))->status, JobStatus::kExpired);
  auto l = this->lease();
  ASSERT_TRUE(l);
  EXPECT_EQ(l->job.id, done);
  ASSERT_TRUE(*this->queue_->complete(*l, this->ok()));
  this->clock_.advance(61s);
  EXPECT_EQ(this->queue_->reclaim()->purged, 2);
  EXPECT_FALSE(*this->queue_->get(done));
}

TYPED_TEST(JobQueueContract, OverloadGivesTheAttemptBack) {
  const std::string id = this->add("p");
  auto l = this->lease();
  ASSERT_TRUE(*this->queue_->retry(*l, "HTTP 429", 0ms, false));
  auto again = this->lease();
  ASSERT_TRUE(again);
  EXPECT_EQ(again->attempt, 1) << "a deferral is not an attempt";
  EXPECT_EQ(again->job.deferrals, 1) << "but it is counted, for the next request id";
}

TYPED_TEST(JobQueueContract, ListPagesInCreationOrderPerProject) {
  std::vector<std::string> ids;
  for (int i = 0; i < 5; ++i)
    ids.push_back(this->add("p"));
  this->add("q");
  ListFilter f;
  f.project = "p";
  f.limit = 3;
  auto page1 = *this->queue_->list(f);
  ASSERT_EQ(page1.size(), 3u);
  EXPECT_EQ(page1[0].id, ids[0]);
  f.after = page1.back().id;
  auto page2 = *this->queue_->list(f);
  ASSERT_EQ(page2.size(), 2u);
  EXPECT_EQ(page2[1].id, ids[4]);
  f = {};
  f.project = "p";
  f.status = JobStatus::kRunning;
  EXPECT_TRUE(this->queue_->list(f)->empty());
}

TYPED_TEST(JobQueueContract, DepthCountsWaitingJobsAndTheOldestOnesAge) {
  auto empty = this->queue_->depth();
  ASSERT_TRUE(empty);
  EXPECT_EQ(empty->queued, 0);
  EXPECT_EQ(empty->oldest_created_ms, 0);
  const int64_t first = this->clock_.unix_millis();
  this->add("a");
  this->clock_.advance(5s);
  this->add("b");
  this->add("a");
  auto d = this->queue_->depth();
  ASSERT_TRUE(d);
  EXPECT_EQ(d->queued, 3);
  EXPECT_EQ(d->oldest_created_ms, first);
  auto l = this->lease(); // the oldest starts running: no longer waiting
  ASSERT_TRUE(l);
  d = this->queue_->depth();
  EXPECT_EQ(d->queued, 2);
  EXPECT_EQ(d->oldest_created_ms, first + 5000);
}

TYPED_TEST(JobQueueContract, ANodeStartingLeavesAnotherNodesLiveLeaseAlone) {
  this->options_.retry_base = 1s;
  this->reopen();
  const std::string id = this->add("p");
  auto on_a = this->lease(10s);
  ASSERT_TRUE(on_a);
  auto b = this->open_node("node-b"); // recover() runs here
  ASSERT_TRUE(b);
  EXPECT_EQ((*b->get(id))->status, JobStatus::kRunning) << "B's start did not requeue A's job";
  EXPECT_FALSE(*b->lease("w", 10s, 0ms)) << "nothing for B to run";
  EXPECT_TRUE(b->reclaim()->requeued.empty()) << "A's lease is live";
  this->clock_.advance(5s);
  EXPECT_TRUE(*this->queue_->renew(*on_a, 10s)) << "A still holds its lease";
  EXPECT_TRUE(*this->queue_->complete(*on_a, this->ok()));
  EXPECT_EQ((*b->get(id))->status, JobStatus::kSucceeded);
}

TYPED_TEST(JobQueueContract, ALapsedLeaseIsTakenOverAndTheStaleHolderCannotCompleteIt) {
  this->options_.retry_base = 1s;
  this->reopen();
  const std::string id = this->add("p");
  auto on_a = this->lease(10s);
  ASSERT_TRUE(on_a);
  auto b = this->open_node("node-b");
  ASSERT_TRUE(b);
  this->clock_.advance(11s); // A stalls (or died): its lease lapses
  auto r = b->reclaim();
  ASSERT_TRUE(r);
  ASSERT_EQ(r->requeued.size(), 1u) << "any node reclaims a lapsed lease";
  EXPECT_FALSE(*this->queue_->complete(*on_a, this->ok()))
      << "requeued: the stale holder is refused";
  this->clock_.advance(1s);
  auto on_b = b->lease("w", 10s, 0ms);
  ASSERT_TRUE(on_b && *on_b);
  EXPECT_EQ((*on_b)->job.id, id);
  EXPECT_EQ((*on_b)->attempt, 2);
  EXPECT_FALSE(*this->queue_->renew(*on_a, 10s)) << "the stale holder cannot renew";
  EXPECT_FALSE(*this->queue_->complete(*on_a, this->ok())) << "nor complete while B runs it";
  JobOutcome from_b = this->ok();
  from_b.body = R"({"from":"b"})";
  EXPECT_TRUE(*b->complete(**on_b, from_b));
  EXPECT_FALSE(*b->complete(**on_b, this->ok())) << "never completed twice";
  EXPECT_FALSE(*this->queue_->complete(*on_a, this->ok()));
  auto j = *b->get(id);
  EXPECT_EQ(j->result, R"({"from":"b"})");
  EXPECT_EQ(j->attempts, 2);
}

TYPED_TEST(JobQueueContract, ANodeStartingAfterTheLeaseLapsedReclaimsIt) {
  this->options_.retry_base = 1s;
  this->reopen();
  const std::string id = this->add("p");
  auto on_a = this->lease(10s);
  ASSERT_TRUE(on_a);
  this->clock_.advance(11s);
  auto b = this->open_node("node-b");
  ASSERT_TRUE(b);
  EXPECT_EQ((*b->get(id))->status, JobStatus::kQueued);
  this->clock_.advance(1s);
  auto on_b = b->lease("w", 10s, 0ms);
  ASSERT_TRUE(on_b && *on_b);
  EXPECT_EQ((*on_b)->job.id, id);
  EXPECT_FALSE(*this->queue_->complete(*on_a, this->ok()));
}

TYPED_TEST(JobQueueContract, AJobBothNodesKnowIsLeasedByOnlyOne) {
  const std::string id = this->add("p");
  auto b = this->open_node("node-b"); // B's schedule learns of the queued job at start
  ASSERT_TRUE(b);
  auto on_b = b->lease("w", 10s, 0ms);
  ASSERT_TRUE(on_b && *on_b);
  EXPECT_EQ((*on_b)->job.id, id);
  EXPECT_FALSE(this->lease()) << "A's conditional lease finds the job no longer queued";
  EXPECT_FALSE(*b->cancel("other-project", id)) << "cancel stays per project across nodes";
}

// Roles (issue 13): a node with a lease filter takes only jobs of its models; the others wait
// for a node that serves them, and jobs without a recorded model go to any node.
TYPED_TEST(JobQueueContract, ANodeWithALeaseFilterTakesOnlyJobsOfItsModels) {
  this->options_.lease_models = std::vector<std::string>{"m1", "m\"3"};
  this->reopen();
  auto with_model = [&](const std::string &project, const std::string &model) {
    Job j = this->job(project);
    j.model = model;
    std::string id = j.id;
    EXPECT_TRUE(this->queue_->enqueue({std::move(j)}));
    this->clock_.advance(1ms); // creation order is the lease order inside a project
    return id;
  };
  const std::string a1 = with_model("p", "m1");
  const std::string b1 = with_model("p", "m2");
  const std::string a2 = with_model("q", "m\"3"); // quoting survives the filter
  const std::string legacy = with_model("q", "");
  std::set<std::string> got;
  for (int i = 0; i < 3; ++i) {
    auto l = this->lease();
    ASSERT_TRUE(l) << "lease " << i;
    got.insert(l->job.id);
    EXPECT_TRUE(*this->queue_->complete(*l, this->ok()));
  }
  EXPECT_EQ(got, (std::set<std::string>{a1, a2, legacy}));
  EXPECT_FALSE(this->lease()) << "the m2 job is not this node's";
  // A node that serves m2 (opened now, so an embedded adapter's schedule knows the job) runs it.
  JobQueueOptions o = this->options_;
  o.node_id = "node-m2";
  o.lease_models = std::vector<std::string>{"m2"};
  auto other = this->factory_.job_queue(o, this->clock_);
  ASSERT_TRUE(other);
  auto l = other->lease("w", 10s, 0ms);
  ASSERT_TRUE(l && *l);
  EXPECT_EQ((*l)->job.id, b1);
}

TYPED_TEST(JobQueueContract, AnEmptyLeaseFilterTakesNothing) {
  this->options_.lease_models = std::vector<std::string>{};
  this->reopen();
  Job j = this->job("p");
  j.model = "m1";
  ASSERT_TRUE(this->queue_->enqueue({std::move(j)}));
  EXPECT_FALSE(this->lease()) << "a gateway serving no model itself runs no job";
}

TYPED_TEST(JobQueueContract, StoredJobsAreBoundedPerProjectInCountAndBytes) {
  this->options_.max_stored_per_project = 3;
  this->options_.max_stored_bytes_per_project = 1000;
  this->options_.retention = 60s;
  this->reopen();
  for (int i = 0; i < 3; ++i)
    this->add("p");
  auto l = this->lease();
  ASSERT_TRUE(*this->queue_->complete(*l, this->ok()));
  auto st = this->queue_->enqueue({this->job("p")});
  ASSERT_FALSE(st) << "finished jobs still count until retention removes them";
  EXPECT_EQ(st.error().code, ErrorCode::kQuotaExceeded);
  EXPECT_TRUE(this->queue_->enqueue({this->job("q")})) << "per project";
  Job big = this->job("q");
  big.body = std::string(1001, 'x');
  st = this->queue_->enqueue({big});
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code, ErrorCode::kQuotaExceeded);
  EXPECT_NE(st.error().message.find("bytes"), std::string::npos) << st.error().message;
  this->clock_.advance(61s);
  ASSERT_EQ(this->queue_->reclaim()->purged, 1);
  EXPECT_TRUE(this->queue_->enqueue({this->job("p")})) << "retention frees the room";
}

TYPED_TEST(JobQueueContract, ListingLoadsNoRequestBodies) {
  Job j = this->job("p");
  j.body = R"({"prompt":"a long request body"})";
  ASSERT_TRUE(this->queue_->enqueue({j}));
  ListFilter f;
  f.project = "p";
  auto page = *this->queue_->list(f);
  ASSERT_EQ(page.size(), 1u);
  EXPECT_EQ(page[0].id, j.id);
  EXPECT_TRUE(page[0].body.empty());
  EXPECT_EQ((*this->queue_->get(j.id))->body, j.body) << "get() still has it, for the runner";
}

// enqueue_async answers every submission exactly once, with enqueue()'s outcome: submissions
// from many threads at once (the adapter may commit them in groups) are all stored, and the
// project's bound refuses exactly the ones past it, each on its own.
TYPED_TEST(JobQueueContract, AsyncSubmissionsAreEachAnsweredOnceAndBoundedPerProject) {
  this->options_.max_queued_per_project = 50;
  this->reopen();
  constexpr int kThreads = 8, kEach = 10;
  std::mutex mu;
  std::condition_variable cv;
  int answered = 0, accepted = 0, full = 0;
  std::vector<std::string> ids;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    std::vector<Job> mine;
    for (int i = 0; i < kEach; ++i)
      mine.push_back(this->job(t % 2 ? "odd" : "even"));
    threads.emplace_back([&, mine = std::move(mine)]() mutable {
      for (auto &j : mine) {
        const std::string id = j.id;
        std::vector<Job> one;
        one.push_back(std::move(j));
        this->queue_->enqueue_async(std::move(one), [&, id](Status st) {
          std::lock_guard<std::mutex> lk(mu);
          ++answered;
          if (st) {
            ++accepted;
            ids.push_back(id);
          } else if (st.error().code == ErrorCode::kQueueFull) {
            ++full;
          }
          cv.notify_all();
        });
      }
    });
  }
  for (auto &t : threads)
    t.join();
  this->queue_->drain_submissions();
  std::unique_lock<std::mutex> lk(mu);
  ASSERT_TRUE(cv.wait_for(lk, 30s, [&] { return answered == kThreads * kEach; }))
      << answered << " of " << kThreads * kEach << " submissions answered";
  // 40 per project were submitted and the bound is 50: every one fits.
  EXPECT_EQ(accepted, kThreads * kEach);
  EXPECT_EQ(full, 0);
  for (const auto &id : ids)
    EXPECT_TRUE(*this->queue_->get(id)) << id << " was answered Ok but is not stored";
  // Past the bound: 10 more "even" fit, the rest are refused one by one.
  answered = accepted = 0;
  lk.unlock();
  for (int i = 0; i < 15; ++i)
    this->queue_->enqueue_async({this->job("even")}, [&](Status st) {
      std::lock_guard<std::mutex> g(mu);
      ++answered;
      accepted += st ? 1 : 0;
      full += !st && st.error().code == ErrorCode::kQueueFull ? 1 : 0;
      cv.notify_all();
    });
  this->queue_->drain_submissions();
  lk.lock();
  ASSERT_TRUE(cv.wait_for(lk, 30s, [&] { return answered == 15; }));
  EXPECT_EQ(accepted, 10);
  EXPECT_EQ(full, 5);
  EXPECT_EQ(this->queue_->depth()->queued, kThreads * kEach + 10);
}

} // namespace
} // namespace gantry::jobs
