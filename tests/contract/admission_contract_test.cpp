// The AdmissionStore contract: every adapter passes the same suite — the embedded one and the
// Redis one (against a real redis-server the suite starts on a free loopback port; each store
// gets its own key prefix, so the tests never see each other's counters).
//
// A factory makes a store with one breaker (model "m": over $1 per minute opens it for 300 s)
// and a usage loader that reports nothing used yet; the clock is the suite's FakeClock.
#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <thread>

#include "control/admission_store.h"
#include "control/memory_admission_store.h"
#include "store/redis/redis_admission_store.h"
#include "support/fake_clock.h"
#include "support/redis_fixture.h"

namespace gantry::control {
namespace {

using namespace std::chrono_literals;

struct MemoryAdmissionFactory {
  std::unique_ptr<AdmissionStore> make(const Clock &clock, std::vector<BreakerSpec> breakers) {
    return std::make_unique<MemoryAdmissionStore>(
        clock, std::move(breakers),
        [](OwnerKind, std::string_view, int64_t) -> Result<UsageTotals> { return UsageTotals{}; });
  }
};

struct RedisAdmissionFactory {
  std::unique_ptr<AdmissionStore> make(const Clock &clock, std::vector<BreakerSpec> breakers) {
    return std::make_unique<store::RedisAdmissionStore>(
        testing::fresh_redis_client(clock), clock, std::move(breakers),
        [](OwnerKind, std::string_view, int64_t) -> Result<UsageTotals> { return UsageTotals{}; });
  }
};

template <typename Factory> class AdmissionContract : public ::testing::Test {
protected:
  AdmissionContract() : store_(Factory().make(clock_, {{"m", {1.0, 60s, 300s}}})) {}

  static AdmissionAsk ask(Limits key, int64_t tokens = 10, double usd = 0,
                          std::optional<Limits> project = std::nullopt) {
    AdmissionAsk a;
    a.key_id = "k1";
    a.project = "p1";
    a.model = "m";
    a.tokens = tokens;
    a.usd = usd;
    a.rules.push_back({"key:k1", key});
    if (project)
      a.rules.push_back({"project:p1", *project});
    return a;
  }
  Result<AdmissionLease> reserve(const AdmissionAsk &a, RateSnapshot *refusal = nullptr) {
    return store_->reserve(a, refusal);
  }
  static Budget budget(OwnerKind kind, std::string owner, int64_t tokens, double usd) {
    Budget b;
    b.owner_kind = kind;
    b.owner_id = std::move(owner);
    b.period = Period::kMonth;
    b.token_quota = tokens;
    b.spend_limit_usd = usd;
    return b;
  }

  FakeClock clock_;
  std::unique_ptr<AdmissionStore> store_;
};

using AdmissionAdapters = ::testing::Types<MemoryAdmissionFactory, RedisAdmissionFactory>;
TYPED_TEST_SUITE(AdmissionContract, AdmissionAdapters);

TYPED_TEST(AdmissionContract, ARefusalByOneScopeTakesNothingFromTheOthers) {
  // The key allows 2 requests a minute; the project 1 at a time.
  const auto a = this->ask({.rpm = 2}, 10, 0, Limits{.max_concurrent = 1});
  auto first = this->reserve(a);
  ASSERT_TRUE(first) << first.error().message;
  auto refused = this->reserve(a);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, ErrorCode::kRateLimited);
  EXPECT_NE(refused.error().message.find("project:p1"), std::string::npos)
      << refused.error().message;
  this->store_->settle(*first, {10, 0});
  // Had the refusal taken the key's second request, this one would be refused on RPM.
  auto second = this->reserve(a);
  ASSERT_TRUE(second) << second.error().message;
  this->store_->settle(*second, {10, 0});
  auto third = this->reserve(a);
  ASSERT_FALSE(third);
  EXPECT_NE(third.error().message.find("requests per minute"), std::string::npos);
}

TYPED_TEST(AdmissionContract, AQuotaRefusalRollsBackTheRateScopes) {
  this->store_->set_budgets({this->budget(OwnerKind::kProject, "p1", 100, 0)});
  const auto a = this->ask({.rpm = 2, .tpm = 1000, .max_concurrent = 2}, 100);
  auto first = this->reserve(a);
  ASSERT_TRUE(first) << first.error().message;
  // The rate scopes admit the second (one request left), the quota (100 reserved) refuses it.
  auto refused = this->reserve(a);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, ErrorCode::kQuotaExceeded);
  this->store_->settle(*first, {0, 0}); // nothing used: the quota is free again
  // Had the refusal kept the key's second request of the minute, this would be refused on RPM.
  auto again = this->reserve(a);
  ASSERT_TRUE(again) << again.error().message;
  EXPECT_EQ(again->snapshot.remaining_requests, 0);
}

TYPED_TEST(AdmissionContract, SettleRefundsTheUnusedTokens) {
  const auto a = this->ask({.tpm = 100}, 80);
  auto first = this->reserve(a);
  ASSERT_TRUE(first);
  EXPECT_FALSE(this->reserve(a)) << "20 tokens left, 80 asked";
  this->store_->settle(*first, {10, 0}); // 70 of the 80 come back
  auto second = this->reserve(a);
  ASSERT_TRUE(second) << second.error().message;
  EXPECT_EQ(second->snapshot.limit_tokens, 100);
  EXPECT_EQ(second->snapshot.remaining_tokens, 10);
}

TYPED_TEST(AdmissionContract, ConcurrencySlotsAreHeldUntilSettled) {
  const auto a = this->ask({.max_concurrent = 2});
  auto l1 = this->reserve(a), l2 = this->reserve(a);
  ASSERT_TRUE(l1);
  ASSERT_TRUE(l2);
  auto refused = this->reserve(a);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, ErrorCode::kRateLimited);
  EXPECT_EQ(refused.error().retry_after_ms, 1000);
  this->store_->settle(*l1, {});
  auto l3 = this->reserve(a);
  EXPECT_TRUE(l3);
}

TYPED_TEST(AdmissionContract, RpmRefusalReportsItsNumbers) {
  const auto a = this->ask({.rpm = 1, .tpm = 1000});
  auto ok = this->reserve(a);
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->snapshot.limit_requests, 1);
  EXPECT_EQ(ok->snapshot.remaining_requests, 0);
  RateSnapshot refusal;
  auto refused = this->reserve(a, &refusal);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, ErrorCode::kRateLimited);
  EXPECT_GT(refused.error().retry_after_ms, 0);
  EXPECT_EQ(refusal.limit_requests, 1);
  EXPECT_EQ(refusal.remaining_requests, 0);
  this->clock_.advance(60s); // the bucket refills
  EXPECT_TRUE(this->reserve(a));
}

TYPED_TEST(AdmissionContract, BudgetsReserveTheWorstCaseAndCommitWhatWasUsed) {
  this->store_->set_budgets({this->budget(OwnerKind::kKey, "k1", 0, 1.0)});
  const auto a = this->ask({}, 10, 0.4);
  std::vector<AdmissionLease> leases;
  for (int i = 0; i < 5; ++i) {
    if (auto l = this->reserve(a))
      leases.push_back(*l);
    else
      EXPECT_EQ(l.error().code, ErrorCode::kQuotaExceeded);
  }
  // 0.4 + 0.4 < 1 admits a third; then used + reserved = 1.2 refuses: one request of overshoot.
  EXPECT_EQ(leases.size(), 3u);
  for (const auto &l : leases)
    this->store_->settle(l, {5, 0.1});
  auto states = this->store_->budgets();
  ASSERT_EQ(states.size(), 1u);
  EXPECT_NEAR(states[0].used_usd, 0.3, 1e-9);
  EXPECT_EQ(states[0].used_tokens, 15);
  EXPECT_NEAR(states[0].reserved_usd, 0.0, 1e-9);
  EXPECT_EQ(states[0].reserved_tokens, 0);
}

TYPED_TEST(AdmissionContract, ASecondSettleOfOneLeaseChangesNothing) {
  this->store_->set_budgets({this->budget(OwnerKind::kKey, "k1", 1000, 0)});
  auto l = this->reserve(this->ask({}, 50));
  ASSERT_TRUE(l) << l.error().message;
  this->store_->settle(*l, {50, 0});
  this->store_->settle(*l, {50, 0});
  auto states = this->store_->budgets();
  ASSERT_EQ(states.size(), 1u);
  EXPECT_EQ(states[0].used_tokens, 50);
}

TYPED_TEST(AdmissionContract, SettleReturnsTheThresholdsCrossed) {
  auto b = this->budget(OwnerKind::kProject, "p1", 0, 10.0);
  b.alert_thresholds = {50, 80, 100};
  this->store_->set_budgets({b});
  auto l = this->reserve(this->ask({}, 10, 1.0));
  ASSERT_TRUE(l);
  auto alerts = this->store_->settle(*l, {10, 8.5});
  ASSERT_EQ(alerts.size(), 2u);
  EXPECT_EQ(alerts[0].threshold, 50);
  EXPECT_EQ(alerts[1].threshold, 80);
}

TYPED_TEST(AdmissionContract, TheBreakerOpensOnSettledSpendAndResets) {
  auto l = this->reserve(this->ask({}));
  ASSERT_TRUE(l);
  this->store_->settle(*l, {10, 2.0}); // $2 in a minute, over $1/min
  auto refused = this->reserve(this->ask({}));
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, ErrorCode::kCircuitOpen);
  auto st = this->store_->breaker_state("m");
  ASSERT_TRUE(st);
  EXPECT_TRUE(st->open);
  EXPECT_EQ(st->trips, 1u);
  EXPECT_DOUBLE_EQ(st->usd_per_minute, 1.0);
  // Another model is not affected.
  auto other = this->ask({});
  other.model = "other";
  EXPECT_TRUE(this->reserve(other));
  EXPECT_FALSE(this->store_->breaker_state("other"));
  EXPECT_FALSE(this->store_->reset_breaker("other"));
  EXPECT_TRUE(this->store_->reset_breaker("m"));
  EXPECT_TRUE(this->reserve(this->ask({})));
  // Tripped again, it closes by itself after the cool-down.
  auto l2 = this->reserve(this->ask({}));
  ASSERT_TRUE(l2);
  this->store_->settle(*l2, {10, 2.0});
  EXPECT_FALSE(this->reserve(this->ask({})));
  this->clock_.advance(301s);
  EXPECT_TRUE(this->reserve(this->ask({})));
  EXPECT_EQ(this->store_->breaker_models(), std::vector<std::string>{"m"});
}

TYPED_TEST(AdmissionContract, ConcurrentReservationsAdmitExactlyTheLimit) {
  const auto a = this->ask({.rpm = 50});
  std::atomic<int> admitted{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < 8; ++t) {
    ts.emplace_back([&] {
      for (int i = 0; i < 25; ++i) {
        if (auto l = this->store_->reserve(a, nullptr)) {
          ++admitted;
          this->store_->settle(*l, {1, 0});
        }
      }
    });
  }
  for (auto &t : ts)
    t.join();
  EXPECT_EQ(admitted.load(), 50);
}

} // namespace
} // namespace gantry::control
