// ControlPlane over the embedded adapters and a real SqliteStore: admission goes through the
// AdmissionStore port, settlement happens exactly once, off the calling thread, and shutdown
// runs every settlement still queued.
#include "control/control_plane.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <thread>

#include "control/memory_admission_store.h"
#include "control/test_store.h"

namespace gantry::control {
namespace {

using testing::TempStore;

class ControlPlaneTest : public ::testing::Test {
protected:
  void start(ControlConfig cc, ControlPorts ports = {}) {
    std::vector<ModelControl> models(1);
    models[0].name = "m";
    models[0].price = {0, 1'000'000.0, 0}; // $1 per output token
    auto s = SqliteStore::open(tmp_.dir() + "/cp");
    ASSERT_TRUE(s) << s.error().message;
    std::shared_ptr<SqliteStore> db = std::move(s).value();
    store_ = db.get();
    // The embedded adapters, as open_stores() picks them; a test may bring its own admission.
    ports.keys = db;
    ports.ledger = db;
    ports.budgets = db;
    if (!ports.admission) {
      ports.admission = std::make_unique<MemoryAdmissionStore>(
          clock_, std::vector<BreakerSpec>{}, [db](OwnerKind k, std::string_view id, int64_t from) {
            return db->usage_of(k, id, from);
          });
    }
    ports.idempotency = std::make_unique<MemoryIdempotencyStore>(clock_);
    cp_ =
        std::make_unique<ControlPlane>(std::move(ports), "pepper-for-tests-0123456789abcdef",
                                       std::move(cc), std::move(models), clock_, nullptr, nullptr);
    ASSERT_TRUE(cp_->start());
  }
  AdmitRequest ask(std::string id) {
    AdmitRequest r;
    r.model = "m";
    r.endpoint = "/v1/completions";
    r.request_id = std::move(id);
    r.prompt_tokens = 2;
    r.max_output_tokens = 8;
    return r;
  }
  int64_t ledger_rows() {
    auto rows = store_->usage_report(GroupBy::kModel, 0, INT64_MAX);
    EXPECT_TRUE(rows);
    int64_t n = 0;
    for (const auto &g : *rows)
      n += g.totals.requests;
    return n;
  }

  TempStore tmp_;
  SystemClock clock_; // the key and alert threads run on real time; nothing here waits on it
  SqliteStore *store_ = nullptr;
  std::unique_ptr<ControlPlane> cp_;
};

// The memory adapter behind a port that says its settle() is not in-process work (as a Redis
// adapter's is not), noting the thread it settles on: the settlement thread's path.
struct ThreadNoting final : AdmissionStore {
  explicit ThreadNoting(const Clock &c)
      : inner(c, {}, [](OwnerKind, std::string_view, int64_t) -> Result<UsageTotals> {
          return UsageTotals{};
        }) {}
  Result<AdmissionLease> reserve(const AdmissionAsk &a, RateSnapshot *r) override {
    return inner.reserve(a, r);
  }
  std::vector<BudgetAlert> settle(const AdmissionLease &l, const Usage &u) override {
    settled_on = std::this_thread::get_id();
    return inner.settle(l, u);
  }
  void set_budgets(const std::vector<Budget> &b) override { inner.set_budgets(b); }
  std::vector<BudgetState> budgets() override { return inner.budgets(); }
  std::vector<std::string> breaker_models() const override { return inner.breaker_models(); }
  std::optional<BreakerState> breaker_state(const std::string &m) override {
    return inner.breaker_state(m);
  }
  bool reset_breaker(const std::string &m) override { return inner.reset_breaker(m); }
  MemoryAdmissionStore inner;
  std::atomic<std::thread::id> settled_on{};
};

TEST_F(ControlPlaneTest, SettlesEachAdmissionExactlyOnceAndFreesItsSlot) {
  ControlConfig cc;
  cc.global = {.max_concurrent = 1};
  start(cc);
  auto a = cp_->admit(ask("r1"));
  ASSERT_TRUE(a) << a.error().message;
  EXPECT_EQ(cp_->admit(ask("r2")).error().code, ErrorCode::kRateLimited);
  Outcome o;
  o.input_tokens = 2;
  o.output_tokens = 3;
  EXPECT_DOUBLE_EQ(cp_->finish(**a, o), 3.0); // priced on the caller: the cost header needs it
  EXPECT_DOUBLE_EQ(cp_->finish(**a, o), 0.0);
  a->reset(); // the caller may drop the admission at once
  // admit() waits for the settlements posted before it: the slot is free.
  auto b = cp_->admit(ask("r3"));
  ASSERT_TRUE(b) << b.error().message;
  cp_->finish(**b, o);
  ASSERT_TRUE(cp_->flush());
  const auto c = cp_->counters();
  EXPECT_EQ(c.settlement.posted + c.settlement.inline_runs, 0u)
      << "the memory adapter settles on the finishing thread: no hand-off";
  EXPECT_DOUBLE_EQ((c.cost_usd.at({"m", ""})), 6.0);
  EXPECT_EQ(c.rejected.at("rate_limit"), 1u);
  EXPECT_EQ(ledger_rows(), 3); // two settled, one refusal
}

TEST_F(ControlPlaneTest, AnInProcessAdapterSettlesOnTheFinishingThread) {
  start({});
  auto a = cp_->admit(ask("r1"));
  ASSERT_TRUE(a);
  Outcome o;
  o.output_tokens = 1;
  cp_->finish(**a, o);
  // Settled before finish() returned: the concurrency slot is free and the row is recorded.
  EXPECT_EQ(cp_->counters().settlement.posted, 0u);
  ASSERT_TRUE(cp_->flush());
  EXPECT_EQ(ledger_rows(), 1);
}

TEST_F(ControlPlaneTest, FinishRunsOffTheCallingThreadForAnAdapterThatIsNotInProcess) {
  auto noting = std::make_unique<ThreadNoting>(clock_);
  ThreadNoting *seen = noting.get();
  ControlPorts ports;
  ports.admission = std::move(noting);
  start({}, std::move(ports));
  auto a = cp_->admit(ask("r1"));
  ASSERT_TRUE(a);
  std::thread engine([&] { cp_->finish(**a, {}); });
  const auto engine_id = engine.get_id();
  engine.join();
  ASSERT_TRUE(cp_->flush());
  EXPECT_NE(seen->settled_on.load(), std::thread::id{});
  EXPECT_NE(seen->settled_on.load(), engine_id) << "settlement must not run on the engine thread";
}

TEST_F(ControlPlaneTest, StopRunsEverySettlementStillQueued) {
  ControlPorts ports;
  ports.admission = std::make_unique<ThreadNoting>(clock_);
  start({}, std::move(ports));
  constexpr int kThreads = 4, kEach = 100;
  std::vector<std::thread> ts;
  for (int t = 0; t < kThreads; ++t) {
    ts.emplace_back([&, t] {
      for (int i = 0; i < kEach; ++i) {
        auto a = cp_->admit(ask("r" + std::to_string(t) + "_" + std::to_string(i)));
        ASSERT_TRUE(a);
        Outcome o;
        o.output_tokens = 1;
        cp_->finish(**a, o);
      }
    });
  }
  for (auto &t : ts)
    t.join();
  cp_->stop(); // no flush() first: stop() itself must run what is queued, then flush the ledger
  EXPECT_EQ(ledger_rows(), kThreads * kEach);
  const auto c = cp_->counters();
  EXPECT_EQ(c.settlement.run + c.settlement.inline_runs, static_cast<uint64_t>(kThreads * kEach));
  EXPECT_DOUBLE_EQ(c.cost_usd.at({"m", ""}), kThreads * kEach * 1.0);
}

// A gateway's worker-hosted model (issue 13): priced by what its workers announce, charged what
// the serving worker reports; a model this node configured keeps its own prices.
TEST_F(ControlPlaneTest, WorkerHostedModelsArePricedByTheirWorkersAndConfiguredOnesWin) {
  start(ControlConfig{});
  AdmitRequest w = ask("w1");
  w.model = "worker-model";
  Outcome o;
  o.input_tokens = 2;
  o.output_tokens = 3;
  auto a = cp_->admit(w);
  ASSERT_TRUE(a);
  EXPECT_DOUBLE_EQ(cp_->finish(**a, o), 0.0) << "no price known yet, none reported";
  EXPECT_FALSE(cp_->price_of("worker-model"));

  cp_->learn_price("worker-model", {1'000'000.0, 2'000'000.0, 3600.0});
  ASSERT_TRUE(cp_->price_of("worker-model"));
  EXPECT_DOUBLE_EQ(cp_->price_of("worker-model")->output_per_mtok, 2'000'000.0);
  w.request_id = "w2";
  a = cp_->admit(w);
  ASSERT_TRUE(a);
  EXPECT_DOUBLE_EQ(cp_->finish(**a, o), 2.0 + 6.0) << "tokens at the announced prices";
  // The worker's report wins over the announced prices: it knows its engine time.
  o.reported_cost_usd = 9.5;
  w.request_id = "w3";
  a = cp_->admit(w);
  ASSERT_TRUE(a);
  EXPECT_DOUBLE_EQ(cp_->finish(**a, o), 9.5);

  // Configured here: a report or an announcement changes nothing.
  cp_->learn_price("m", {5.0, 5.0, 5.0});
  EXPECT_DOUBLE_EQ(cp_->price_of("m")->output_per_mtok, 1'000'000.0);
  a = cp_->admit(ask("m1"));
  ASSERT_TRUE(a);
  EXPECT_DOUBLE_EQ(cp_->finish(**a, o), 3.0);
  // Junk never becomes a price.
  cp_->learn_price("junk", {-1.0, 0, 0});
  cp_->learn_price("nan", {std::nan(""), 0, 0});
  EXPECT_FALSE(cp_->price_of("junk"));
  EXPECT_FALSE(cp_->price_of("nan"));
}

} // namespace
} // namespace gantry::control
