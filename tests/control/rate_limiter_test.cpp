#include "control/rate_limiter.h"
#include "support/fake_clock.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>

namespace gantry::control {
namespace {

using namespace std::chrono_literals;

TEST(RateLimiter, AdmitsExactlyTheRpmThenRefillsOverTime) {
  FakeClock clock;
  MemoryRateLimiter rl(clock);
  std::vector<LimitRule> rules{{"key:a", {60, 0, 0}}};
  for (int i = 0; i < 60; ++i)
    ASSERT_TRUE(rl.acquire(rules, 0).allowed) << i;
  RateDecision d = rl.acquire(rules, 0);
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.what, "requests");
  EXPECT_EQ(d.retry_after, 1000ms); // one request per second refills
  clock.advance(999ms);
  EXPECT_FALSE(rl.acquire(rules, 0).allowed);
  clock.advance(1ms);
  EXPECT_TRUE(rl.acquire(rules, 0).allowed);
}

// Audit M4: the check before tokenizing sees RPM and concurrency, ignores tokens, takes nothing.
TEST(RateLimiter, CheckSeesRpmAndConcurrencyAndTakesNothing) {
  FakeClock clock;
  MemoryRateLimiter rl(clock);
  std::vector<LimitRule> rules{{"key:a", {2, 10, 1}}};
  for (int i = 0; i < 5; ++i)
    ASSERT_TRUE(rl.check(rules).allowed) << "check must not consume: " << i;
  RateDecision first = rl.acquire(rules, 5);
  ASSERT_TRUE(first.allowed);
  RateDecision busy = rl.check(rules);
  EXPECT_FALSE(busy.allowed);
  EXPECT_EQ(busy.what, "concurrent requests");
  rl.release(first.lease, 5);
  ASSERT_TRUE(rl.check(rules).allowed);
  RateDecision second = rl.acquire(rules, 0);
  ASSERT_TRUE(second.allowed);
  rl.release(second.lease, 0);
  RateDecision over = rl.check(rules);
  EXPECT_FALSE(over.allowed);
  EXPECT_EQ(over.what, "requests");
}

TEST(RateLimiter, ManyThreadsHammeringOneKeyAdmitExactlyTheLimit) {
  FakeClock clock; // frozen: no refill while the threads race
  MemoryRateLimiter rl(clock);
  std::vector<LimitRule> rules{{"key:a", {500, 0, 0}}, {"global", {100000, 0, 0}}};
  std::atomic<int> admitted{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < 8; ++t) {
    ts.emplace_back([&] {
      for (int i = 0; i < 200; ++i) {
        if (rl.acquire(rules, 0).allowed)
          ++admitted;
      }
    });
  }
  for (auto &t : ts)
    t.join();
  EXPECT_EQ(admitted.load(), 500);
}

TEST(RateLimiter, TokensAreReservedAndUnusedOnesRefunded) {
  FakeClock clock;
  MemoryRateLimiter rl(clock);
  std::vector<LimitRule> rules{{"key:a", {0, 1000, 0}}};
  RateDecision a = rl.acquire(rules, 600);
  ASSERT_TRUE(a.allowed);
  EXPECT_EQ(a.snapshot.limit_tokens, 1000);
  EXPECT_EQ(a.snapshot.remaining_tokens, 400);
  RateDecision b = rl.acquire(rules, 600);
  EXPECT_FALSE(b.allowed);
  EXPECT_EQ(b.what, "tokens");
  // The first request was cancelled after using 100 tokens: 500 come back.
  rl.release(a.lease, 100);
  RateDecision c = rl.acquire(rules, 600);
  EXPECT_TRUE(c.allowed);
  EXPECT_EQ(c.snapshot.remaining_tokens, 300);
  rl.release(a.lease, 0); // a second release of the same lease changes nothing
  EXPECT_FALSE(rl.acquire(rules, 400).allowed);
}

TEST(RateLimiter, RequestLargerThanTheWholeTpmIsRefusedWithAClearMessage) {
  FakeClock clock;
  MemoryRateLimiter rl(clock);
  RateDecision d = rl.acquire({{"key:a", {0, 100, 0}}}, 101);
  EXPECT_FALSE(d.allowed);
  EXPECT_NE(d.message.find("Request too large"), std::string::npos);
}

TEST(RateLimiter, RefusalByOneScopeTakesNothingFromTheOthers) {
  FakeClock clock;
  MemoryRateLimiter rl(clock);
  std::vector<LimitRule> tight{{"key:a", {10, 0, 0}}, {"project:p", {1, 0, 0}}};
  ASSERT_TRUE(rl.acquire(tight, 0).allowed);
  for (int i = 0; i < 5; ++i)
    EXPECT_FALSE(rl.acquire(tight, 0).allowed);
  // key:a paid for exactly one request: 9 remain for it under a looser project.
  std::vector<LimitRule> loose{{"key:a", {10, 0, 0}}};
  int ok = 0;
  while (rl.acquire(loose, 0).allowed)
    ++ok;
  EXPECT_EQ(ok, 9);
}

TEST(RateLimiter, ConcurrencyCapFreesSlotsOnRelease) {
  FakeClock clock;
  MemoryRateLimiter rl(clock);
  std::vector<LimitRule> rules{{"key:a", {0, 0, 2}}};
  auto a = rl.acquire(rules, 0), b = rl.acquire(rules, 0);
  ASSERT_TRUE(a.allowed && b.allowed);
  auto c = rl.acquire(rules, 0);
  EXPECT_FALSE(c.allowed);
  EXPECT_EQ(c.what, "concurrent requests");
  rl.release(a.lease, 0);
  EXPECT_TRUE(rl.acquire(rules, 0).allowed);
}

TEST(RateLimiter, HeadersReportTheTightestScope) {
  FakeClock clock;
  MemoryRateLimiter rl(clock);
  auto d = rl.acquire({{"key:a", {100, 0, 0}}, {"project:p", {10, 0, 0}}}, 0);
  ASSERT_TRUE(d.allowed);
  EXPECT_EQ(d.snapshot.limit_requests, 10);
  EXPECT_EQ(d.snapshot.remaining_requests, 9);
  EXPECT_EQ(d.snapshot.reset_requests, 6000ms); // one request at 10/min takes 6 s to refill
  EXPECT_EQ(d.snapshot.limit_tokens, -1);
}

TEST(RateLimiter, ResetDurationsUseOpenAIsFormat) {
  EXPECT_EQ(format_reset(20ms), "20ms");
  EXPECT_EQ(format_reset(1000ms), "1s");
  EXPECT_EQ(format_reset(1500ms), "1.5s");
  EXPECT_EQ(format_reset(360000ms), "6m0s");
  EXPECT_EQ(format_reset(3723000ms), "1h2m3s");
}

TEST(RateLimiter, RollbackGivesBackTheRequestUnitTooButReleaseDoesNot) {
  FakeClock clock;
  MemoryRateLimiter rl(clock);
  const std::vector<LimitRule> rules{{"key:k", {1, 100, 1}}};
  auto a = rl.acquire(rules, 10);
  ASSERT_TRUE(a.allowed);
  rl.rollback(a.lease); // refused later by a quota: as if it never came
  auto b = rl.acquire(rules, 10);
  ASSERT_TRUE(b.allowed) << b.message;
  rl.release(b.lease, 10); // it ran: the request counts
  EXPECT_FALSE(rl.acquire(rules, 10).allowed);
}

} // namespace
} // namespace gantry::control
