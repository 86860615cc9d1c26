// JobQueue::release on every adapter (issue 14, spot and preemption): a draining node hands its
// unfinished jobs back at once. The job is queued again with no backoff and no lease, so another
// node takes it immediately (not after the visibility timeout), the attempt does not count, and
// the released holder can neither renew nor complete it: a job never runs twice to completion.
#include <gtest/gtest.h>

#include "contract/store_factories.h"
#include "jobs/job_ids.h"
#include "jobs/job_queue.h"
#include "support/fake_clock.h"

namespace gantry::jobs {
namespace {

using namespace std::chrono_literals;

template <typename Factory> class JobReleaseContract : public ::testing::Test {
protected:
  void SetUp() override {
    // A long backoff and visibility: only release() can make the job leasable at once.
    options_.retry_base = 60s;
    options_.node_id = "node-a";
    a_ = factory_.job_queue(options_, clock_);
    ASSERT_TRUE(a_);
    JobQueueOptions o = options_;
    o.node_id = "node-b";
    b_ = factory_.job_queue(o, clock_);
    ASSERT_TRUE(b_);
  }
  std::string add(int max_attempts = 3) {
    Job j;
    j.id = ids_.next("job_");
    j.project = "p";
    j.endpoint = "/v1/completions";
    j.body = "{}";
    j.max_attempts = max_attempts;
    j.created_ms = clock_.unix_millis();
    std::string id = j.id;
    EXPECT_TRUE(a_->enqueue({std::move(j)}));
    return id;
  }
  static std::optional<Lease> lease(JobQueue &q) {
    auto l = q.lease("w", 60s, 0ms);
    EXPECT_TRUE(l) << l.error().message;
    return l ? std::move(*l) : std::nullopt;
  }
  static JobOutcome ok(const std::string &body) {
    JobOutcome o;
    o.success = true;
    o.status = 200;
    o.body = body;
    return o;
  }

  Factory factory_;
  FakeClock clock_;
  JobIds ids_;
  JobQueueOptions options_;
  std::unique_ptr<JobQueue> a_, b_;
};

TYPED_TEST_SUITE(JobReleaseContract, contract::StoreAdapters, contract::AdapterName);

TYPED_TEST(JobReleaseContract, AReleasedJobIsLeasedAtOnceByAnotherNodeAndRunsToCompletionOnce) {
  const std::string id = this->add();
  auto on_a = this->lease(*this->a_);
  ASSERT_TRUE(on_a);
  ASSERT_EQ(on_a->attempt, 1);
  auto released = this->a_->release(*on_a, "node draining");
  ASSERT_TRUE(released) << released.error().message;
  EXPECT_TRUE(*released);
  auto j = *this->a_->get(id);
  EXPECT_EQ(j->status, JobStatus::kQueued);
  EXPECT_EQ(j->attempts, 0) << "the released attempt is given back";
  EXPECT_EQ(j->deferrals, 0) << "the request id (and so the ledger row) stays the job's";
  EXPECT_EQ(j->error, "node draining");
  // No clock advance: neither the 60 s visibility nor the 60 s backoff is waited out. (B's
  // maintenance runs reclaim() twice a second; the embedded adapter learns of it there.)
  ASSERT_TRUE(this->b_->reclaim());
  auto on_b = this->lease(*this->b_);
  ASSERT_TRUE(on_b) << "node b did not get the released job at once";
  EXPECT_EQ(on_b->job.id, id);
  EXPECT_EQ(on_b->attempt, 1);
  EXPECT_FALSE(*this->a_->renew(*on_a, 60s)) << "the released holder lost its lease";
  EXPECT_FALSE(*this->a_->complete(*on_a, this->ok("from a"))) << "and cannot record a result";
  EXPECT_TRUE(*this->b_->complete(*on_b, this->ok("from b")));
  EXPECT_FALSE(*this->a_->complete(*on_a, this->ok("from a")));
  j = *this->b_->get(id);
  EXPECT_EQ(j->status, JobStatus::kSucceeded);
  EXPECT_EQ(j->result, "from b");
  EXPECT_EQ(j->attempts, 1);
}

TYPED_TEST(JobReleaseContract, AReleasedJobCannotCompleteBeforeAnotherNodeLeasesIt) {
  const std::string id = this->add();
  auto on_a = this->lease(*this->a_);
  ASSERT_TRUE(on_a);
  ASSERT_TRUE(*this->a_->release(*on_a, "node draining"));
  EXPECT_FALSE(*this->a_->complete(*on_a, this->ok("late"))) << "queued: nobody holds it";
  EXPECT_FALSE(*this->a_->retry(*on_a, "late", 0ms, true));
  EXPECT_FALSE(*this->a_->release(*on_a, "twice")) << "a lease is released once";
  EXPECT_EQ((*this->a_->get(id))->status, JobStatus::kQueued);
}

TYPED_TEST(JobReleaseContract, ReleasesDoNotCountAgainstMaxAttempts) {
  const std::string id = this->add(1);
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE((i % 2 ? this->b_ : this->a_)->reclaim());
    auto l = this->lease(i % 2 ? *this->b_ : *this->a_);
    ASSERT_TRUE(l) << "release " << i;
    EXPECT_EQ(l->attempt, 1);
    ASSERT_TRUE(*(i % 2 ? this->b_ : this->a_)->release(*l, "draining"));
  }
  ASSERT_TRUE(this->b_->reclaim());
  auto last = this->lease(*this->b_);
  ASSERT_TRUE(last) << "three releases did not use up the job's one attempt";
  EXPECT_TRUE(*this->b_->complete(*last, this->ok("done")));
  EXPECT_EQ((*this->b_->get(id))->status, JobStatus::kSucceeded);
}

TYPED_TEST(JobReleaseContract, OnlyTheHoldersLiveLeaseCanBeReleased) {
  const std::string id = this->add();
  auto on_a = this->lease(*this->a_);
  ASSERT_TRUE(on_a);
  EXPECT_FALSE(*this->b_->release(*on_a, "not mine")) << "node b cannot release node a's lease";
  EXPECT_EQ((*this->a_->get(id))->status, JobStatus::kRunning);
  // A's lease lapses and B takes the job over: A's stale lease releases nothing.
  this->clock_.advance(61s);
  ASSERT_EQ(this->b_->reclaim()->requeued.size(), 1u);
  this->clock_.advance(61s); // the backoff after a lapsed lease
  auto on_b = this->lease(*this->b_);
  ASSERT_TRUE(on_b);
  ASSERT_EQ(on_b->attempt, 2);
  EXPECT_FALSE(*this->a_->release(*on_a, "stale"));
  auto j = *this->b_->get(id);
  EXPECT_EQ(j->status, JobStatus::kRunning) << "B's live lease is untouched";
  EXPECT_TRUE(*this->b_->complete(*on_b, this->ok("from b")));
  EXPECT_FALSE(*this->b_->release(*on_b, "after the end")) << "a finished job stays finished";
  EXPECT_EQ((*this->b_->get(id))->status, JobStatus::kSucceeded);
}

} // namespace
} // namespace gantry::jobs
