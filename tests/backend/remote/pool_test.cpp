#include "backend/remote/pool.h"

#include <gtest/gtest.h>

#include <map>
#include <thread>

#include "support/fake_clock.h"

namespace gantry::backend::remote {
namespace {

std::vector<EndpointSpec> two(int w0 = 1, int w1 = 1, int max0 = 0, int max1 = 0) {
  return {{"a", w0, max0}, {"b", w1, max1}};
}

TEST(Pool, LeastOutstandingSpreadsSequentialLoadEvenly) {
  FakeClock clock;
  Pool pool(two(), {}, clock);
  std::map<int, int> got;
  for (int i = 0; i < 1000; ++i) {
    auto l = pool.acquire({}, std::nullopt);
    ASSERT_TRUE(l.ok());
    ++got[l->index];
    pool.release(*l, Outcome::kSuccess);
  }
  EXPECT_GT(got[0], 300);
  EXPECT_GT(got[1], 300);
}

TEST(Pool, PowerOfTwoPrefersTheLessLoaded) {
  FakeClock clock;
  Pool pool(two(), {}, clock);
  auto first = *pool.acquire({}, std::nullopt);
  // With two backends both are always drawn: the idle one wins every time.
  for (int i = 0; i < 20; ++i) {
    auto l = *pool.acquire({}, std::nullopt);
    EXPECT_NE(l.index, first.index);
    pool.release(l, Outcome::kSuccess);
  }
  pool.release(first, Outcome::kSuccess);
}

// Placement (issue 14): workers that have the model loaded take every request while any is
// usable; the ones that would first load it are the fallback.
TEST(Pool, PreferredMembersTakeTheLoadAndTheOthersAreTheFallback) {
  FakeClock clock;
  PoolOptions o;
  o.eject_after = 1;
  Pool pool(two(), o, clock);
  pool.set_preferred(1, false);
  for (int i = 0; i < 50; ++i) {
    auto l = *pool.acquire({}, std::nullopt);
    EXPECT_EQ(l.index, 0) << "the loaded member, even while it carries more";
  }
  auto excluded = pool.acquire({0}, std::nullopt); // a retry elsewhere falls back
  ASSERT_TRUE(excluded.ok());
  EXPECT_EQ(excluded->index, 1);
  pool.release(*excluded, Outcome::kSuccess);
  for (int i = 0; i < 50; ++i)
    pool.release(Pool::Lease{0, false}, Outcome::kSuccess);
  auto failed = *pool.acquire({}, std::nullopt);
  pool.release(failed, Outcome::kFailure); // ejects the preferred one
  auto l = pool.acquire({}, std::nullopt);
  ASSERT_TRUE(l.ok());
  EXPECT_EQ(l->index, 1) << "the fallback serves while the loaded worker is out";
  pool.release(*l, Outcome::kSuccess);
  pool.set_preferred(1, true); // it loaded the model too: both share again
  clock.advance(std::chrono::minutes(5));
  std::map<int, int> got;
  for (int i = 0; i < 200; ++i) {
    auto x = *pool.acquire({}, std::nullopt);
    ++got[x.index];
    pool.release(x, Outcome::kSuccess);
  }
  EXPECT_GT(got[0], 50);
  EXPECT_GT(got[1], 50);
}

TEST(Pool, WeightsShiftTheShare) {
  FakeClock clock;
  Pool pool({{"a", 1, 0}, {"b", 3, 0}, {"c", 1, 0}}, {}, clock);
  std::vector<Pool::Lease> held;
  std::map<int, int> got;
  for (int i = 0; i < 50; ++i) { // held concurrently: per-weight load decides
    auto l = *pool.acquire({}, std::nullopt);
    ++got[l.index];
    held.push_back(l);
  }
  EXPECT_GT(got[1], got[0] + 10);
  EXPECT_GT(got[1], got[2] + 10);
  for (auto &l : held)
    pool.release(l, Outcome::kSuccess);
}

TEST(Pool, MaxConcurrentAndBoundedQueue) {
  FakeClock clock;
  PoolOptions o;
  o.max_queue = 0;
  Pool pool(two(1, 1, 1, 1), o, clock);
  auto a = *pool.acquire({}, std::nullopt);
  auto b = *pool.acquire({}, std::nullopt);
  EXPECT_NE(a.index, b.index);
  auto c = pool.acquire({}, std::nullopt);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.error().code, ErrorCode::kQueueFull);
  EXPECT_GT(c.error().retry_after_ms, 0);
  EXPECT_EQ(pool.stats().queue_rejected, 1u);
  pool.release(a, Outcome::kSuccess);
  EXPECT_TRUE(pool.acquire({}, std::nullopt).ok());
}

TEST(Pool, QueuedRequestTakesTheFreedSlot) {
  FakeClock clock;
  PoolOptions o;
  o.max_queue = 4;
  o.max_queue_wait = std::chrono::seconds(30);
  Pool pool({{"a", 1, 1}}, o, clock);
  auto a = *pool.acquire({}, std::nullopt);
  std::thread t([&] {
    while (pool.stats().queued == 0)
      std::this_thread::yield();
    pool.release(a, Outcome::kSuccess);
  });
  auto b = pool.acquire({}, std::nullopt);
  t.join();
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->index, 0);
}

TEST(Pool, ConsecutiveFailuresEjectWithBackoffAndTrialBringsBack) {
  FakeClock clock;
  PoolOptions o;
  o.eject_after = 2;
  o.eject_base = std::chrono::seconds(1);
  Pool pool(two(), o, clock);
  for (int i = 0; i < 2; ++i)
    pool.release(*pool.acquire({1}, std::nullopt), Outcome::kFailure, ErrorKind::kConnect);
  EXPECT_TRUE(pool.stats().endpoints[0].ejected);
  EXPECT_EQ(pool.stats().endpoints[0].errors[static_cast<int>(ErrorKind::kConnect)], 2u);
  for (int i = 0; i < 10; ++i) { // all traffic to b while a is out
    auto l = *pool.acquire({}, std::nullopt);
    EXPECT_EQ(l.index, 1);
    pool.release(l, Outcome::kSuccess);
  }
  EXPECT_FALSE(pool.acquire({1}, std::nullopt).ok()) << "only a left, and it is ejected";
  clock.advance(std::chrono::milliseconds(1001));
  auto trial = *pool.acquire({}, std::nullopt);
  EXPECT_EQ(trial.index, 0);
  EXPECT_TRUE(trial.trial);
  pool.release(trial, Outcome::kFailure, ErrorKind::kStatus5xx); // fails: out for 2 s now
  clock.advance(std::chrono::milliseconds(1500));
  EXPECT_EQ(pool.acquire({}, std::nullopt)->index, 1);
  clock.advance(std::chrono::milliseconds(600));
  auto trial2 = *pool.acquire({}, std::nullopt);
  EXPECT_TRUE(trial2.trial);
  pool.release(trial2, Outcome::kSuccess);
  EXPECT_FALSE(pool.stats().endpoints[0].ejected);
  EXPECT_EQ(pool.stats().endpoints[0].ejections, 2u);
}

TEST(Pool, AllEjectedIsUnavailableWithRetryAfterAndNotReady) {
  FakeClock clock;
  PoolOptions o;
  o.eject_after = 1;
  Pool pool({{"a", 1, 0}}, o, clock);
  EXPECT_TRUE(pool.ready());
  pool.release(*pool.acquire({}, std::nullopt), Outcome::kFailure, ErrorKind::kConnect);
  EXPECT_FALSE(pool.ready());
  auto r = pool.acquire({}, std::nullopt);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kUnavailable);
  EXPECT_GT(r.error().retry_after_ms, 0);
  pool.probe_result(0, true); // an active probe passes: back at once
  EXPECT_TRUE(pool.ready());
  EXPECT_TRUE(pool.acquire({}, std::nullopt).ok());
}

TEST(Pool, RetryAfterCoolsABackendDownWithoutEjecting) {
  FakeClock clock;
  Pool pool(two(), {}, clock);
  pool.release(*pool.acquire({1}, std::nullopt), Outcome::kOverloaded, ErrorKind::kStatus429, 2000);
  EXPECT_FALSE(pool.stats().endpoints[0].ejected);
  for (int i = 0; i < 5; ++i) {
    auto l = *pool.acquire({}, std::nullopt);
    EXPECT_EQ(l.index, 1);
    pool.release(l, Outcome::kSuccess);
  }
  auto only_a = pool.acquire({1}, std::nullopt);
  ASSERT_FALSE(only_a.ok());
  EXPECT_NEAR(static_cast<double>(only_a.error().retry_after_ms), 2000, 1);
  clock.advance(std::chrono::seconds(2));
  EXPECT_TRUE(pool.acquire({1}, std::nullopt).ok());
}

TEST(Pool, RetryBudgetIsAShareOfTraffic) {
  FakeClock clock;
  PoolOptions o;
  o.retry_ratio = 0.1;
  o.min_retries = 2;
  Pool pool(two(), o, clock);
  for (int i = 0; i < 50; ++i)
    pool.record_request();
  int allowed = 0;
  for (int i = 0; i < 20; ++i)
    allowed += pool.allow_retry();
  EXPECT_EQ(allowed, 5);
  EXPECT_EQ(pool.stats().retries_refused, 15u);
  clock.advance(o.budget_window);
  pool.record_request();
  EXPECT_TRUE(pool.allow_retry()) << "a new window";
}

TEST(Pool, PrefixAffinityIsStickyWithBoundedLoad) {
  FakeClock clock;
  PoolOptions o;
  o.prefix_affinity = true;
  Pool pool({{"a", 1, 0}, {"b", 1, 0}, {"c", 1, 0}}, o, clock);
  const uint64_t key = prefix_key("a long shared system prompt ...");
  const int home = pool.acquire({}, key)->index;
  pool.release({home, false}, Outcome::kSuccess);
  for (int i = 0; i < 20; ++i) { // sequential: always the same backend
    auto l = *pool.acquire({}, key);
    EXPECT_EQ(l.index, home);
    pool.release(l, Outcome::kSuccess);
  }
  std::vector<Pool::Lease> held; // concurrent: spills once home carries more than its share
  std::map<int, int> got;
  for (int i = 0; i < 30; ++i) {
    held.push_back(*pool.acquire({}, key));
    ++got[held.back().index];
  }
  EXPECT_LT(got[home], 30);
  EXPECT_LE(got[home], 30 * 1.5 / 3 + 2);
  for (auto &l : held)
    pool.release(l, Outcome::kSuccess);
  std::map<int, int> homes; // different prefixes spread
  for (int i = 0; i < 300; ++i)
    ++homes[pool.acquire({}, prefix_key("prompt " + std::to_string(i)))->index];
  EXPECT_EQ(homes.size(), 3u);
}

TEST(Pool, BackoffHonoursRetryAfterAndCap) {
  FakeClock clock;
  Pool pool(two(), {}, clock);
  using ms = std::chrono::milliseconds;
  for (int i = 0; i < 20; ++i) {
    auto b = pool.backoff(1, 0, ms(100), ms(1000));
    EXPECT_GE(b, ms(50));
    EXPECT_LT(b, ms(100));
  }
  EXPECT_EQ(pool.backoff(1, 700, ms(100), ms(1000)), ms(700));
  EXPECT_EQ(pool.backoff(1, 5000, ms(100), ms(1000)), ms(1000));
  EXPECT_LE(pool.backoff(10, 0, ms(100), ms(1000)), ms(1000));
}

// Membership (issue 13): worker nodes join and leave a running pool.
TEST(PoolMembership, AnAddedMemberTakesItsShareAtOnce) {
  FakeClock clock;
  Pool pool(two(), {}, clock);
  const int c = pool.add_endpoint({"c", 1, 0});
  EXPECT_EQ(c, 2);
  EXPECT_EQ(pool.members(), 3);
  std::map<int, int> got;
  for (int i = 0; i < 900; ++i) {
    auto l = pool.acquire({}, std::nullopt);
    ASSERT_TRUE(l.ok());
    ++got[l->index];
    pool.release(*l, Outcome::kSuccess);
  }
  for (int i = 0; i < 3; ++i)
    EXPECT_GT(got[i], 200) << "member " << i << " got " << got[i] << " of 900";
}

TEST(PoolMembership, ARemovedMemberGetsNothingAndItsCallsReleaseNormally) {
  FakeClock clock;
  Pool pool(two(), {}, clock);
  // Hold a call on each member, then remove "a" while its call runs.
  auto l0 = *pool.acquire({}, std::nullopt);
  auto l1 = *pool.acquire({}, std::nullopt);
  pool.remove_endpoint(0);
  EXPECT_EQ(pool.members(), 1);
  for (int i = 0; i < 50; ++i) {
    auto l = pool.acquire({}, std::nullopt);
    ASSERT_TRUE(l.ok());
    EXPECT_EQ(l->index, 1) << "a removed member must get no new call";
    pool.release(*l, Outcome::kSuccess);
  }
  pool.release(l0, Outcome::kSuccess);
  pool.release(l1, Outcome::kSuccess);
  auto s = pool.stats();
  EXPECT_TRUE(s.endpoints[0].removed);
  EXPECT_EQ(s.endpoints[0].in_flight, 0) << "the call that ran on it was released";
}

TEST(PoolMembership, WithEveryMemberGoneAcquireIsUnavailableAndNotReady) {
  FakeClock clock;
  Pool pool(two(), {}, clock);
  pool.remove_endpoint(0);
  pool.remove_endpoint(1);
  EXPECT_FALSE(pool.ready());
  auto l = pool.acquire({}, std::nullopt);
  ASSERT_FALSE(l.ok());
  EXPECT_EQ(l.error().code, ErrorCode::kUnavailable);
  // A worker appearing again makes the model servable without anything else changing.
  EXPECT_EQ(pool.add_endpoint({"b", 1, 0}), 1) << "the slot of the same name is reused";
  EXPECT_TRUE(pool.ready());
  auto again = pool.acquire({}, std::nullopt);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->index, 1);
}

TEST(PoolMembership, ASlotWithACallInFlightIsNotReused) {
  FakeClock clock;
  Pool pool({{"a", 1, 0}}, {}, clock);
  auto held = *pool.acquire({}, std::nullopt);
  pool.remove_endpoint(0);
  EXPECT_EQ(pool.add_endpoint({"x", 1, 0}), 1) << "slot 0 still has a call: a new slot";
  pool.release(held, Outcome::kSuccess);
  pool.remove_endpoint(1);
  EXPECT_EQ(pool.add_endpoint({"y", 1, 0}), 0) << "a free slot is reused; the table stays small";
  EXPECT_EQ(pool.size(), 2);
  EXPECT_EQ(pool.name(0), "y");
}

TEST(PoolMembership, AQueuedCallTakesANewMember) {
  FakeClock clock;
  PoolOptions o;
  o.max_queue_wait = std::chrono::seconds(30);
  Pool pool({{"a", 1, 1}}, o, clock);
  auto held = *pool.acquire({}, std::nullopt);
  Result<Pool::Lease> got = Err(Error{ErrorCode::kInternal, "not run", {}});
  std::thread t([&] { got = pool.acquire({}, std::nullopt); });
  while (pool.stats().queued == 0)
    std::this_thread::yield();
  pool.add_endpoint({"b", 1, 1});
  t.join();
  ASSERT_TRUE(got.ok()) << got.error().message;
  EXPECT_EQ(got->index, 1);
  pool.release(held, Outcome::kSuccess);
}

} // namespace
} // namespace gantry::backend::remote
