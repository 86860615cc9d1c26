// The BudgetStore contract: every adapter passes the same suite (tests/contract/store_factories.h
// lists them). What the control plane relies on: budgets upsert on (owner kind, owner id,
// period) and list in that order with their thresholds, deleting an absent one is kNotFound, and
// an alert threshold fires once per owner and period — across connections and restarts.
#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "contract/store_factories.h"

namespace gantry::control {
namespace {

template <typename Factory> class BudgetStoreContract : public ::testing::Test {
protected:
  BudgetStoreContract() : store_(factory_.budget_store()) {}

  Factory factory_;
  std::shared_ptr<BudgetStore> store_;
};

TYPED_TEST_SUITE(BudgetStoreContract, contract::StoreAdapters, contract::AdapterName);

TYPED_TEST(BudgetStoreContract, BudgetsPutListDelete) {
  auto &store = *this->store_;
  EXPECT_TRUE(store.list_budgets()->empty());
  Budget monthly;
  monthly.owner_kind = OwnerKind::kProject;
  monthly.owner_id = "p1";
  monthly.period = Period::kMonth;
  monthly.spend_limit_usd = 100.5;
  Budget daily;
  daily.owner_kind = OwnerKind::kKey;
  daily.owner_id = "k1";
  daily.period = Period::kDay;
  daily.token_quota = 1'000'000;
  daily.alert_thresholds = {90};
  ASSERT_TRUE(store.put_budget(monthly).ok());
  ASSERT_TRUE(store.put_budget(daily).ok());
  monthly.alert_thresholds = {25, 50, 75, 100};
  ASSERT_TRUE(store.put_budget(monthly).ok()); // replaces, same (kind, id, period)

  auto all = this->factory_.budget_store()->list_budgets();
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 2u);
  EXPECT_EQ((*all)[0].owner_kind, OwnerKind::kKey);
  EXPECT_EQ((*all)[0].owner_id, "k1");
  EXPECT_EQ((*all)[0].period, Period::kDay);
  EXPECT_EQ((*all)[0].token_quota, 1'000'000);
  EXPECT_EQ((*all)[0].alert_thresholds, std::vector<int>{90});
  EXPECT_EQ((*all)[1].owner_kind, OwnerKind::kProject);
  EXPECT_EQ((*all)[1].owner_id, "p1");
  EXPECT_EQ((*all)[1].period, Period::kMonth);
  EXPECT_DOUBLE_EQ((*all)[1].spend_limit_usd, 100.5);
  EXPECT_EQ((*all)[1].alert_thresholds, (std::vector<int>{25, 50, 75, 100}));

  Budget same_owner_daily = monthly;
  same_owner_daily.period = Period::kDay;
  ASSERT_TRUE(store.put_budget(same_owner_daily).ok());
  EXPECT_EQ(store.list_budgets()->size(), 3u) << "the period is part of the budget's identity";

  ASSERT_TRUE(store.delete_budget(OwnerKind::kKey, "k1", Period::kDay).ok());
  auto again = store.delete_budget(OwnerKind::kKey, "k1", Period::kDay);
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error().code, ErrorCode::kNotFound);
  EXPECT_EQ(store.list_budgets()->size(), 2u);
}

TYPED_TEST(BudgetStoreContract, AnAlertFiresOncePerOwnerPeriodAndThreshold) {
  auto &store = *this->store_;
  EXPECT_TRUE(*store.record_alert(OwnerKind::kProject, "p1", 1000, 80));
  EXPECT_FALSE(*store.record_alert(OwnerKind::kProject, "p1", 1000, 80));
  EXPECT_TRUE(*store.record_alert(OwnerKind::kProject, "p1", 1000, 100)) << "another threshold";
  EXPECT_TRUE(*store.record_alert(OwnerKind::kProject, "p1", 2000, 80)) << "a new period";
  EXPECT_TRUE(*store.record_alert(OwnerKind::kKey, "p1", 1000, 80)) << "another owner kind";
  EXPECT_TRUE(*store.record_alert(OwnerKind::kProject, "p2", 1000, 80)) << "another owner";
  // Another process, or this one restarted: the alerts already sent stay sent.
  auto other = this->factory_.budget_store();
  EXPECT_FALSE(*other->record_alert(OwnerKind::kProject, "p1", 1000, 80));
  EXPECT_FALSE(*other->record_alert(OwnerKind::kProject, "p1", 2000, 80));
  EXPECT_FALSE(*other->record_alert(OwnerKind::kKey, "p1", 1000, 80));
}

TYPED_TEST(BudgetStoreContract, OfTwoNodesRacingOneThresholdExactlyOneFires) {
  constexpr int kThresholds = 50;
  std::atomic<int> fired{0}, errors{0};
  auto race = [&](std::shared_ptr<BudgetStore> store) {
    for (int t = 1; t <= kThresholds; ++t) {
      auto first = store->record_alert(OwnerKind::kProject, "p", 1000, t);
      if (!first)
        errors++;
      else
        fired += *first ? 1 : 0;
    }
  };
  std::thread a(race, this->factory_.budget_store()), b(race, this->factory_.budget_store());
  a.join();
  b.join();
  EXPECT_EQ(errors.load(), 0);
  EXPECT_EQ(fired.load(), kThresholds) << "each threshold fired exactly once";
}

TYPED_TEST(BudgetStoreContract, CheckIsARoundTrip) { EXPECT_TRUE(this->store_->check().ok()); }

} // namespace
} // namespace gantry::control
