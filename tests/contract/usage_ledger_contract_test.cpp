// The UsageLedger contract: every adapter passes the same suite (tests/contract/store_factories.h
// lists them). What LedgerWriter, the admission store's usage loader and the usage report rely
// on: rows are keyed by the server's call id, so a retried flush (or a job's usage written twice)
// counts once, while a repeated client x-request-id does not merge two calls (audit H4); totals
// filter by owner and by time ([from, to)), reports group and order.
#include <gtest/gtest.h>

#include "contract/store_factories.h"

namespace gantry::control {
namespace {

UsageRecord make_row(std::string request_id, std::string key, std::string project,
                     std::string model, int64_t at_ms, int64_t in = 10, int64_t out = 5,
                     double cost = 0.25) {
  UsageRecord r;
  r.request_id = std::move(request_id);
  r.key_id = std::move(key);
  r.project = std::move(project);
  r.model = std::move(model);
  r.endpoint = "/v1/chat/completions";
  r.input_tokens = in;
  r.output_tokens = out;
  r.cost_usd = cost;
  r.finish_reason = "stop";
  r.created_at_ms = at_ms;
  return r;
}

template <typename Factory> class UsageLedgerContract : public ::testing::Test {
protected:
  UsageLedgerContract() : ledger_(factory_.usage_ledger()) {}

  Factory factory_;
  std::shared_ptr<UsageLedger> ledger_;
};

TYPED_TEST_SUITE(UsageLedgerContract, contract::StoreAdapters, contract::AdapterName);

TYPED_TEST(UsageLedgerContract, EachServerCallIdCountsOnce) {
  auto &ledger = *this->ledger_;
  const std::vector<UsageRecord> batch = {
      make_row("r1", "k1", "p", "m", 1000, 10, 5, 0.5),
      make_row("r2", "k1", "p", "m", 2000, 20, 6, 0.25),
  };
  ASSERT_TRUE(ledger.append_usage(batch).ok());
  ASSERT_TRUE(ledger.append_usage(batch).ok()) << "a retried flush is not an error";
  EXPECT_EQ(*ledger.count_usage(), 2);
  // One old row and one new, from another connection (another node's writer).
  auto other = this->factory_.usage_ledger();
  ASSERT_TRUE(other->append_usage({batch[0], make_row("r3", "k1", "p", "m", 3000, 7, 7, 0)}).ok());
  EXPECT_EQ(*ledger.count_usage(), 3);
  auto k1 = ledger.usage_of(OwnerKind::kKey, "k1", 0);
  ASSERT_TRUE(k1.ok());
  EXPECT_EQ(k1->requests, 3);
  EXPECT_EQ(k1->input_tokens, 37) << "the repeated row was not added to the totals";
  EXPECT_EQ(k1->output_tokens, 18);
  EXPECT_NEAR(k1->cost_usd, 0.75, 1e-12);
  auto report = ledger.usage_report(GroupBy::kModel, 0, 10'000);
  ASSERT_EQ(report->size(), 1u);
  EXPECT_EQ((*report)[0].totals.requests, 3);
  EXPECT_TRUE(ledger.append_usage({}).ok()) << "an empty batch is a no-op";
}

TYPED_TEST(UsageLedgerContract, ARepeatedClientRequestIdIsTwoCalls) {
  UsageRecord a = make_row("call-1", "k1", "p", "m", 1000);
  UsageRecord b = make_row("call-2", "k1", "p", "m", 1001);
  a.client_request_id = b.client_request_id = "client-chosen";
  ASSERT_TRUE(this->ledger_->append_usage({a, b}).ok());
  EXPECT_EQ(*this->ledger_->count_usage(), 2) << "a client cannot be billed once for two calls";
}

TYPED_TEST(UsageLedgerContract, UsageOfAndReportFilterByOwnerAndTime) {
  auto &ledger = *this->ledger_;
  ASSERT_TRUE(ledger
                  .append_usage({
                      make_row("a", "k1", "p1", "llama", 1000, 10, 1, 0.1),
                      make_row("b", "k1", "p1", "qwen", 2000, 20, 2, 0.2),
                      make_row("c", "k2", "p1", "llama", 3000, 30, 3, 0.3),
                      make_row("d", "k3", "p2", "llama", 4000, 40, 4, 0.4),
                  })
                  .ok());
  auto k1 = ledger.usage_of(OwnerKind::kKey, "k1", 0);
  ASSERT_TRUE(k1.ok());
  EXPECT_EQ(k1->requests, 2);
  EXPECT_EQ(k1->input_tokens, 30);
  EXPECT_EQ(k1->output_tokens, 3);
  EXPECT_NEAR(k1->cost_usd, 0.3, 1e-12);
  EXPECT_EQ(ledger.usage_of(OwnerKind::kKey, "k1", 2000)->requests, 1) << "from is inclusive";
  auto p1 = ledger.usage_of(OwnerKind::kProject, "p1", 1500);
  EXPECT_EQ(p1->requests, 2);
  EXPECT_EQ(p1->input_tokens, 50);
  auto nobody = ledger.usage_of(OwnerKind::kProject, "nobody", 0);
  EXPECT_EQ(nobody->requests, 0);
  EXPECT_EQ(nobody->input_tokens, 0);
  EXPECT_EQ(nobody->cost_usd, 0);

  auto by_model = ledger.usage_report(GroupBy::kModel, 1000, 4000); // excludes d (to is exclusive)
  ASSERT_EQ(by_model->size(), 2u);
  EXPECT_EQ((*by_model)[0].group, "llama");
  EXPECT_EQ((*by_model)[0].totals.requests, 2);
  EXPECT_EQ((*by_model)[0].totals.input_tokens, 40);
  EXPECT_EQ((*by_model)[1].group, "qwen");
  EXPECT_EQ((*by_model)[1].totals.requests, 1);

  auto by_project = ledger.usage_report(GroupBy::kProject, 0, 10'000);
  ASSERT_EQ(by_project->size(), 2u);
  EXPECT_EQ((*by_project)[0].group, "p1");
  EXPECT_EQ((*by_project)[0].totals.requests, 3);
  EXPECT_EQ((*by_project)[1].group, "p2");

  auto by_key = ledger.usage_report(GroupBy::kKey, 2000, 3001);
  ASSERT_EQ(by_key->size(), 2u);
  EXPECT_EQ((*by_key)[0].group, "k1");
  EXPECT_EQ((*by_key)[0].totals.requests, 1);
  EXPECT_EQ((*by_key)[1].group, "k2");
  EXPECT_TRUE(ledger.usage_report(GroupBy::kKey, 5000, 6000)->empty());
}

TYPED_TEST(UsageLedgerContract, RetentionPrunesOldRowsOnly) {
  ASSERT_TRUE(this->ledger_->append_usage({make_row("old1", "k", "p", "m", 1'000, 1, 1, 0.1),
                                           make_row("old2", "k", "p", "m", 2'000, 1, 1, 0.1),
                                           make_row("new", "k", "p", "m", 9'000, 5, 5, 0.5)}));
  auto pruned = this->ledger_->prune_usage(5'000);
  ASSERT_TRUE(pruned) << pruned.error().message;
  EXPECT_EQ(*pruned, 2);
  EXPECT_EQ(*this->ledger_->count_usage(), 1);
  auto left = this->ledger_->usage_of(OwnerKind::kKey, "k", 0);
  ASSERT_TRUE(left);
  EXPECT_EQ(left->input_tokens, 5) << "the newer row is kept";
  EXPECT_EQ(*this->ledger_->prune_usage(5'000), 0) << "nothing more to prune";
}

TYPED_TEST(UsageLedgerContract, CheckIsARoundTrip) { EXPECT_TRUE(this->ledger_->check().ok()); }

} // namespace
} // namespace gantry::control
