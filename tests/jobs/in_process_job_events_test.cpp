// The in-process JobEvents adapter on a FakeClock: completion and cancel wake the job's waiters
// once, deadlines end waits with kTimedOut only when the clock passes them, the bound on waiters
// holds, and shutdown answers everyone.
#include <gtest/gtest.h>

#include <optional>
#include <vector>

#include "jobs/in_process_job_events.h"
#include "support/fake_clock.h"

namespace gantry::jobs {
namespace {

using namespace std::chrono_literals;

class JobEventsTest : public ::testing::Test {
protected:
  // Records how each wait ended.
  JobEvents::WaitCallback record(std::optional<WaitOutcome> &out) {
    return [&out](WaitOutcome o) {
      EXPECT_FALSE(out.has_value()) << "a wait ends exactly once";
      out = o;
    };
  }
  int64_t in(int64_t ms) const { return clock_.unix_millis() + ms; }

  FakeClock clock_;
  InProcessJobEvents events_{clock_, 3};
};

TEST_F(JobEventsTest, CompletionWakesTheJobsWaitersOnly) {
  std::optional<WaitOutcome> a1, a2, b;
  ASSERT_TRUE(events_.wait("job_a", in(10'000), record(a1)));
  ASSERT_TRUE(events_.wait("job_a", in(10'000), record(a2)));
  ASSERT_TRUE(events_.wait("job_b", in(10'000), record(b)));
  events_.publish({"job_a", JobEventKind::kCompleted});
  EXPECT_EQ(a1, WaitOutcome::kCompleted);
  EXPECT_EQ(a2, WaitOutcome::kCompleted);
  EXPECT_FALSE(b.has_value());
  EXPECT_EQ(events_.waiting(), 1u);
  events_.publish({"job_a", JobEventKind::kCompleted}); // nobody left: no second call
  events_.publish({"job_b", JobEventKind::kCanceled});
  EXPECT_EQ(b, WaitOutcome::kCanceled);
}

TEST_F(JobEventsTest, DeadlinesPassOnlyWhenTheClockDoes) {
  std::optional<WaitOutcome> soon, later;
  ASSERT_TRUE(events_.wait("job_a", in(1'000), record(soon)));
  ASSERT_TRUE(events_.wait("job_b", in(5'000), record(later)));
  EXPECT_EQ(events_.expire_due(), in(1'000)) << "the next deadline, for the timer";
  EXPECT_FALSE(soon.has_value());
  clock_.advance(1s);
  EXPECT_EQ(events_.expire_due(), in(4'000));
  EXPECT_EQ(soon, WaitOutcome::kTimedOut);
  EXPECT_FALSE(later.has_value());
  events_.publish({"job_a", JobEventKind::kCompleted}); // too late for the timed-out wait
  EXPECT_EQ(soon, WaitOutcome::kTimedOut);
  clock_.advance(4s);
  EXPECT_EQ(events_.expire_due(), 0) << "none left";
  EXPECT_EQ(later, WaitOutcome::kTimedOut);
  EXPECT_EQ(events_.counters().timed_out, 2u);
}

TEST_F(JobEventsTest, TheBoundOnWaitersHoldsAndCancelledWaitsFreeRoom) {
  std::optional<WaitOutcome> o[4];
  uint64_t first = 0;
  for (int i = 0; i < 3; ++i) {
    auto h = events_.wait("job_" + std::to_string(i), in(1'000), record(o[i]));
    ASSERT_TRUE(h);
    if (i == 0)
      first = *h;
  }
  auto refused = events_.wait("job_3", in(1'000), record(o[3]));
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, ErrorCode::kQueueFull);
  EXPECT_EQ(events_.counters().refused, 1u);
  EXPECT_TRUE(events_.cancel_wait(first));
  EXPECT_FALSE(events_.cancel_wait(first)) << "already gone";
  EXPECT_TRUE(events_.wait("job_3", in(1'000), record(o[3])));
  events_.publish({"job_0", JobEventKind::kCompleted});
  EXPECT_FALSE(o[0].has_value()) << "a cancelled wait is never called";
}

TEST_F(JobEventsTest, TheListenerHearsEveryEvent) {
  std::vector<std::pair<std::string, JobEventKind>> heard;
  events_.listen([&](const JobEvent &e) { heard.emplace_back(e.job_id, e.kind); });
  events_.publish({"job_a", JobEventKind::kCanceled});
  events_.publish({"job_b", JobEventKind::kCompleted});
  ASSERT_EQ(heard.size(), 2u);
  EXPECT_EQ(heard[0], std::make_pair(std::string("job_a"), JobEventKind::kCanceled));
  EXPECT_EQ(heard[1].second, JobEventKind::kCompleted);
}

TEST_F(JobEventsTest, ShutdownEndsEveryWaitAndRefusesNewOnes) {
  std::optional<WaitOutcome> a, b;
  ASSERT_TRUE(events_.wait("job_a", in(1'000), record(a)));
  events_.shutdown();
  EXPECT_EQ(a, WaitOutcome::kShutdown);
  EXPECT_FALSE(events_.wait("job_b", in(1'000), record(b)));
  EXPECT_FALSE(b.has_value());
}

} // namespace
} // namespace gantry::jobs
