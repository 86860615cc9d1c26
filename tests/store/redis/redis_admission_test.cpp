// What only a shared AdmissionStore can show: two nodes (two stores on one Redis) sharing every
// limit exactly, a dead node's reservations expiring, and the policy while Redis is down. The
// behaviour both adapters share is the contract suite (tests/contract/admission_contract_test).
#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "store/redis/redis_admission_store.h"
#include "support/fake_clock.h"
#include "support/redis_process.h"

namespace gantry::store {
namespace {

using namespace std::chrono_literals;
using control::AdmissionAsk;
using control::Budget;
using control::Limits;
using control::OwnerKind;

class RedisAdmission : public ::testing::Test {
protected:
  void SetUp() override {
    redis_ = testing::RedisProcess::start_new();
    ASSERT_TRUE(redis_) << "redis-server did not start (scripts/bootstrap.sh installs it)";
  }

  // One "node": its own client and store on the shared Redis.
  std::unique_ptr<RedisAdmissionStore> node(RedisAdmissionOptions o = {},
                                            control::UsageLoader usage = nullptr) {
    auto opts = parse_redis_url(redis_->url());
    EXPECT_TRUE(opts);
    opts->connect_timeout = 300ms;
    opts->command_timeout = 300ms;
    auto client = RedisClient::connect(*opts, clock_);
    EXPECT_TRUE(client) << client.error().message;
    if (!usage)
      usage = [](OwnerKind, std::string_view, int64_t) -> Result<control::UsageTotals> {
        return control::UsageTotals{};
      };
    return std::make_unique<RedisAdmissionStore>(
        std::shared_ptr<RedisClient>(std::move(client).value()), clock_,
        std::vector<control::BreakerSpec>{{"m", {1.0, 60s, 300s}}}, std::move(usage), o);
  }

  static AdmissionAsk ask(Limits key, int64_t tokens = 10, double usd = 0) {
    AdmissionAsk a;
    a.key_id = "k1";
    a.project = "p1";
    a.model = "m";
    a.tokens = tokens;
    a.usd = usd;
    a.rules.push_back({"key:k1", key});
    return a;
  }
  static Budget budget(OwnerKind kind, std::string owner, int64_t tokens, double usd) {
    Budget b;
    b.owner_kind = kind;
    b.owner_id = std::move(owner);
    b.token_quota = tokens;
    b.spend_limit_usd = usd;
    return b;
  }

  FakeClock clock_;
  std::unique_ptr<testing::RedisProcess> redis_;
};

TEST_F(RedisAdmission, TwoNodesAdmitExactlyTheRpmLimitBetweenThem) {
  auto a = node(), b = node();
  const auto req = ask({.rpm = 50});
  std::atomic<int> admitted{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < 6; ++t) {
    ts.emplace_back([&, t] {
      auto &n = (t % 2 == 0) ? *a : *b;
      for (int i = 0; i < 25; ++i) {
        if (auto l = n.reserve(req, nullptr)) {
          ++admitted;
          n.settle(*l, {1, 0});
        } else {
          EXPECT_EQ(l.error().code, ErrorCode::kRateLimited);
        }
      }
    });
  }
  for (auto &t : ts)
    t.join();
  EXPECT_EQ(admitted.load(), 50) << "150 requests through two nodes, RPM 50";
}

TEST_F(RedisAdmission, ConcurrencyAndBudgetsHoldAcrossNodes) {
  auto a = node(), b = node();
  // Four slots between the two nodes.
  std::vector<control::AdmissionLease> held;
  for (int i = 0; i < 4; ++i) {
    auto l = (i % 2 ? *b : *a).reserve(ask({.max_concurrent = 4}), nullptr);
    ASSERT_TRUE(l) << l.error().message;
    held.push_back(*l);
  }
  EXPECT_FALSE(a->reserve(ask({.max_concurrent = 4}), nullptr));
  EXPECT_FALSE(b->reserve(ask({.max_concurrent = 4}), nullptr));
  a->settle(held[0], {});
  EXPECT_TRUE(b->reserve(ask({.max_concurrent = 4}), nullptr)) << "a slot freed by node a";

  // A $1 budget fits 10 requests reserved at $0.10 each, whichever node admits them.
  for (auto *n : {a.get(), b.get()})
    n->set_budgets({budget(OwnerKind::kProject, "p1", 0, 1.0)});
  int admitted = 0;
  for (int i = 0; i < 20; ++i)
    if ((i % 2 ? *b : *a).reserve(ask({}, 10, 0.1), nullptr))
      ++admitted;
  EXPECT_GE(admitted, 10);
  EXPECT_LE(admitted, 11) << "at most one reservation over";
}

TEST_F(RedisAdmission, ADeadNodesSlotsExpireAndALiveNodeKeepsItsOwn) {
  RedisAdmissionOptions o;
  o.lease_ttl = 1000ms;
  auto live = node(o);
  {
    auto dying = node(o);
    ASSERT_TRUE(dying->reserve(ask({.max_concurrent = 2}), nullptr));
    // The node dies without settling (its destructor stops the keeper, it settles nothing).
  }
  auto mine = live->reserve(ask({.max_concurrent = 2}), nullptr);
  ASSERT_TRUE(mine);
  EXPECT_FALSE(live->reserve(ask({.max_concurrent = 2}), nullptr)) << "both slots taken";
  clock_.advance(800ms);
  live->refresh(); // the keeper pushes the live lease's expiry forward
  clock_.advance(800ms);
  // The dead node's slot (1 s) has expired, the live one was refreshed: one slot is free.
  auto next = live->reserve(ask({.max_concurrent = 2}), nullptr);
  ASSERT_TRUE(next) << next.error().message;
  EXPECT_FALSE(live->reserve(ask({.max_concurrent = 2}), nullptr));
}

TEST_F(RedisAdmission, ADeadNodesQuotaReservationIsReleased) {
  RedisAdmissionOptions o;
  o.lease_ttl = 1000ms;
  auto live = node(o);
  live->set_budgets({budget(OwnerKind::kKey, "k1", 100, 0)});
  {
    auto dying = node(o);
    dying->set_budgets({budget(OwnerKind::kKey, "k1", 100, 0)});
    ASSERT_TRUE(dying->reserve(ask({}, 100), nullptr));
  }
  auto refused = live->reserve(ask({}, 10), nullptr);
  ASSERT_FALSE(refused) << "the dead node's 100 tokens are still reserved";
  EXPECT_EQ(refused.error().code, ErrorCode::kQuotaExceeded);
  clock_.advance(1500ms);
  auto ok = live->reserve(ask({}, 10), nullptr);
  ASSERT_TRUE(ok) << ok.error().message;
  auto states = live->budgets();
  ASSERT_EQ(states.size(), 1u);
  EXPECT_EQ(states[0].reserved_tokens, 10);
}

TEST_F(RedisAdmission, CountersAreSeededFromTheLedgerOnce) {
  std::atomic<int> loads{0};
  auto ledger = [&](OwnerKind, std::string_view, int64_t) -> Result<control::UsageTotals> {
    ++loads;
    control::UsageTotals t;
    t.input_tokens = 600;
    t.output_tokens = 300;
    return t;
  };
  auto a = node({}, ledger), b = node({}, ledger);
  for (auto *n : {a.get(), b.get()})
    n->set_budgets({budget(OwnerKind::kKey, "k1", 1000, 0)});
  auto first = a->reserve(ask({}, 50), nullptr); // 900 used + 50 reserved < 1000
  ASSERT_TRUE(first) << first.error().message;
  auto second = b->reserve(ask({}, 60), nullptr); // 950 + 60 >= 1000 would still admit
  ASSERT_TRUE(second);
  EXPECT_FALSE(b->reserve(ask({}, 1), nullptr)) << "900 + 110 reserved reaches the quota";
  EXPECT_EQ(loads.load(), 1) << "the second node found the counter seeded";
  a->settle(*first, {50, 0});
  b->settle(*second, {20, 0});
  auto states = b->budgets();
  ASSERT_EQ(states.size(), 1u);
  EXPECT_EQ(states[0].used_tokens, 970);
  EXPECT_EQ(states[0].reserved_tokens, 0);
}

TEST_F(RedisAdmission, TheBreakerTripsForEveryNode) {
  auto a = node(), b = node();
  auto l = a->reserve(ask({}), nullptr);
  ASSERT_TRUE(l);
  a->settle(*l, {10, 2.0}); // $2 in a minute through node a
  auto refused = b->reserve(ask({}), nullptr);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, ErrorCode::kCircuitOpen);
  auto st = b->breaker_state("m");
  ASSERT_TRUE(st);
  EXPECT_TRUE(st->open);
  EXPECT_EQ(st->trips, 1u);
  EXPECT_TRUE(a->reset_breaker("m"));
  EXPECT_TRUE(b->reserve(ask({}), nullptr));
}

TEST_F(RedisAdmission, PrecheckRefusesFromTheNodesMemoryOfAnRpmRefusal) {
  auto n = node();
  const auto req = ask({.rpm = 1});
  EXPECT_TRUE(n->precheck(req, nullptr).ok());
  ASSERT_TRUE(n->reserve(req, nullptr));
  EXPECT_TRUE(n->precheck(req, nullptr).ok()) << "nothing refused yet: no round trip, no memo";
  auto refused = n->reserve(req, nullptr);
  ASSERT_FALSE(refused);
  // Remembered: precheck refuses without asking Redis (it answers even with Redis gone).
  redis_->kill();
  control::RateSnapshot snap;
  auto pre = n->precheck(req, &snap);
  ASSERT_FALSE(pre.ok());
  EXPECT_EQ(pre.error().code, ErrorCode::kRateLimited);
  EXPECT_GT(pre.error().retry_after_ms, 0);
  EXPECT_LE(pre.error().retry_after_ms, refused.error().retry_after_ms);
  EXPECT_EQ(snap.limit_requests, 1);
  clock_.advance(std::chrono::milliseconds(refused.error().retry_after_ms + 1));
  EXPECT_TRUE(n->precheck(req, nullptr).ok()) << "the refusal ended";
}

TEST_F(RedisAdmission, WhileRedisIsDownRatesFailOpenAndBudgetsFailClosed) {
  auto n = node();
  auto closed_rates = node({.rate_fail_open = false});
  redis_->kill();
  // Rate rules only: admitted on this node's own limits (RPM 2 here), counted.
  EXPECT_TRUE(n->reserve(ask({.rpm = 2}), nullptr));
  EXPECT_TRUE(n->reserve(ask({.rpm = 2}), nullptr));
  auto local_limit = n->reserve(ask({.rpm = 2}), nullptr);
  ASSERT_FALSE(local_limit);
  EXPECT_EQ(local_limit.error().code, ErrorCode::kRateLimited);
  EXPECT_EQ(n->fallback_admissions(), 2u);
  // A budget applies: refused with 503 and a Retry-After.
  n->set_budgets({budget(OwnerKind::kProject, "p1", 0, 5.0)});
  auto budgeted = n->reserve(ask({}, 10, 0.1), nullptr);
  ASSERT_FALSE(budgeted);
  EXPECT_EQ(budgeted.error().code, ErrorCode::kUnavailable);
  EXPECT_GT(budgeted.error().retry_after_ms, 0);
  EXPECT_NE(budgeted.error().message.find("Redis"), std::string::npos);
  // Rate limits configured to fail closed: 503 too.
  auto strict = closed_rates->reserve(ask({.rpm = 2}), nullptr);
  ASSERT_FALSE(strict);
  EXPECT_EQ(strict.error().code, ErrorCode::kUnavailable);
  EXPECT_GE(n->unavailable_refusals() + closed_rates->unavailable_refusals(), 2u);
}

TEST_F(RedisAdmission, ASettlementDuringAnOutageReachesRedisAfterIt) {
  auto n = node();
  n->set_budgets({budget(OwnerKind::kKey, "k1", 1000, 0)});
  auto l = n->reserve(ask({}, 100), nullptr);
  ASSERT_TRUE(l);
  redis_->stop();
  n->settle(*l, {40, 0});
  EXPECT_EQ(n->pending_settles(), 1u);
  ASSERT_TRUE(redis_->start()); // an empty Redis: the counter is re-seeded from the ledger
  clock_.advance(3s);           // past the client's reconnect back-off
  auto seeded = n->reserve(ask({}, 1), nullptr);
  ASSERT_TRUE(seeded) << seeded.error().message;
  n->refresh(); // the keeper retries the settlement
  EXPECT_EQ(n->pending_settles(), 0u);
  auto states = n->budgets();
  ASSERT_EQ(states.size(), 1u);
  EXPECT_EQ(states[0].used_tokens, 40);
}

} // namespace
} // namespace gantry::store
