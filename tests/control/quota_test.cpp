#include "control/quota.h"

#include <gtest/gtest.h>

#include "control/test_store.h"
#include "support/fake_clock.h"

namespace gantry::control {
namespace {

using namespace std::chrono_literals;
using testing::TempStore;

// 2023-11-14 22:13:20 UTC, the FakeClock's start.
constexpr int64_t kStart = 1'700'000'000;

TEST(Period, StartsAtUtcMidnightAndTheFirstOfTheMonth) {
  EXPECT_EQ(period_start(Period::kDay, kStart), 1'699'920'000);   // 2023-11-14 00:00
  EXPECT_EQ(period_start(Period::kMonth, kStart), 1'698'796'800); // 2023-11-01 00:00
  EXPECT_EQ(period_start(Period::kMonth, 1'698'796'800), 1'698'796'800);
}

Budget spend_budget(OwnerKind kind, std::string owner, double usd, Period p = Period::kMonth) {
  Budget b;
  b.owner_kind = kind;
  b.owner_id = std::move(owner);
  b.period = p;
  b.spend_limit_usd = usd;
  return b;
}

TEST(Quota, ConcurrentReservationsOvershootByAtMostOneReservation) {
  TempStore store;
  FakeClock clock;
  QuotaTracker q(*store, clock);
  q.set_budgets({spend_budget(OwnerKind::kProject, "p", 1.0)});
  // Each request reserves $0.1: exactly 10 fit before used + reserved reaches $1.
  int admitted = 0;
  std::vector<QuotaLease> leases;
  for (int i = 0; i < 100; ++i) {
    auto l = q.reserve("k", "p", 100, 0.1);
    if (l) {
      ++admitted;
      leases.push_back(std::move(l).value());
    } else {
      EXPECT_EQ(l.error().code, ErrorCode::kQuotaExceeded);
    }
  }
  EXPECT_GE(admitted, 10);
  EXPECT_LE(admitted, 11);
}

TEST(Quota, CancelledRequestsGiveTheirReservationBack) {
  TempStore store;
  FakeClock clock;
  QuotaTracker q(*store, clock);
  Budget b;
  b.owner_kind = OwnerKind::kKey;
  b.owner_id = "k";
  b.period = Period::kDay;
  b.token_quota = 1000;
  q.set_budgets({b});
  auto a = q.reserve("k", "p", 1000, 0);
  ASSERT_TRUE(a);
  EXPECT_FALSE(q.reserve("k", "p", 1, 0)); // all reserved
  q.commit(*a, 10, 0);                     // cancelled after 10 tokens
  auto c = q.reserve("k", "p", 500, 0);
  EXPECT_TRUE(c);
  auto snap = q.snapshot();
  ASSERT_EQ(snap.size(), 1u);
  EXPECT_EQ(snap[0].used_tokens, 10);
  EXPECT_EQ(snap[0].reserved_tokens, 500);
}

TEST(Quota, ThresholdsFireOnceEachInOrder) {
  TempStore store;
  FakeClock clock;
  QuotaTracker q(*store, clock);
  q.set_budgets({spend_budget(OwnerKind::kProject, "p", 10.0)});
  std::vector<int> fired;
  for (double usd : {4.0, 0.5, 0.5, 2.9, 0.2, 3.0}) {
    auto l = q.reserve("k", "p", 1, usd);
    ASSERT_TRUE(l) << usd;
    for (const auto &a : q.commit(*l, 1, usd))
      fired.push_back(a.threshold);
  }
  // 4 → 4.5 → 5.0 (50%) → 7.9 → 8.1 (80%) → 11.1 (100%) → then refused.
  EXPECT_EQ(fired, (std::vector<int>{50, 80, 100}));
  EXPECT_FALSE(q.reserve("k", "p", 1, 0.0));
}

TEST(Quota, PeriodsResetForKeysAndProjects) {
  TempStore store;
  FakeClock clock;
  QuotaTracker q(*store, clock);
  Budget day;
  day.owner_kind = OwnerKind::kKey;
  day.owner_id = "k";
  day.period = Period::kDay;
  day.token_quota = 100;
  q.set_budgets({day, spend_budget(OwnerKind::kProject, "p", 1.0, Period::kMonth)});
  auto l = q.reserve("k", "p", 100, 1.0);
  ASSERT_TRUE(l);
  q.commit(*l, 100, 1.0);
  EXPECT_FALSE(q.reserve("k", "p", 1, 0));
  // Next UTC day: the key's daily quota is back, the project's monthly budget is not.
  clock.advance(std::chrono::seconds(period_start(Period::kDay, kStart) + 86400 - kStart));
  auto r = q.reserve("k", "p", 1, 0);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("project 'p'"), std::string::npos);
  // Next month (2023-12-01): both are back.
  clock.advance(std::chrono::seconds(1'701'388'800 - clock.unix_seconds()));
  EXPECT_TRUE(q.reserve("k", "p", 1, 0));
}

TEST(Quota, UsageSoFarIsLoadedFromTheLedgerAfterARestart) {
  TempStore store;
  FakeClock clock;
  UsageRecord r;
  r.request_id = "req1";
  r.key_id = "k";
  r.project = "p";
  r.model = "m";
  r.input_tokens = 60;
  r.output_tokens = 40;
  r.cost_usd = 0.9;
  r.created_at_ms = kStart * 1000;
  ASSERT_TRUE(store->append_usage({r}));
  QuotaTracker q(*store, clock);
  q.set_budgets({spend_budget(OwnerKind::kProject, "p", 1.0)});
  auto l = q.reserve("k", "p", 1, 0.05);
  ASSERT_TRUE(l);
  q.commit(*l, 1, 0.1);
  EXPECT_FALSE(q.reserve("k", "p", 1, 0.0)); // 0.9 + 0.1 = the budget
}

} // namespace
} // namespace gantry::control
