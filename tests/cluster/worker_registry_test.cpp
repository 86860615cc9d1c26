// The worker registry's TTL and bounds, on the in-process adapter (the Redis adapter runs the same
// checks against a real redis-server in tests/store/redis/redis_worker_registry_test.cpp).
#include "cluster/memory_worker_registry.h"

#include <gtest/gtest.h>

#include "support/fake_clock.h"

namespace gantry::cluster {
namespace {

using namespace std::chrono_literals;

WorkerInfo worker(const std::string &id, std::vector<std::string> models = {"m"}) {
  WorkerInfo w;
  w.node_id = id;
  w.url = "http://127.0.0.1:9000/v1";
  w.models = std::move(models);
  return w;
}

TEST(WorkerRegistry, AWorkerIsLiveUntilItsTtlRunsOutAndEachBeatExtendsIt) {
  FakeClock clock;
  MemoryWorkerRegistry reg(clock);
  ASSERT_TRUE(reg.announce(worker("w1"), 3s));
  clock.advance(2s);
  ASSERT_TRUE(reg.announce(worker("w1"), 3s)); // a heartbeat
  clock.advance(2s);
  EXPECT_EQ(reg.live()->size(), 1u) << "4 s after the first beat, 2 s after the second";
  clock.advance(1001ms);
  EXPECT_TRUE(reg.live()->empty()) << "no beat for longer than the TTL: gone";
}

TEST(WorkerRegistry, WithdrawRemovesAtOnce) {
  FakeClock clock;
  MemoryWorkerRegistry reg(clock);
  ASSERT_TRUE(reg.announce(worker("w1"), 3s));
  ASSERT_TRUE(reg.announce(worker("w2"), 3s));
  ASSERT_TRUE(reg.withdraw("w1"));
  auto live = *reg.live();
  ASSERT_EQ(live.size(), 1u);
  EXPECT_EQ(live[0].node_id, "w2");
}

TEST(WorkerRegistry, BoundsOnWorkersAndModelsAndFields) {
  FakeClock clock;
  WorkerLimits limits;
  limits.max_workers = 2;
  limits.max_models_per_worker = 3;
  MemoryWorkerRegistry reg(clock, limits);
  ASSERT_TRUE(reg.announce(worker("w1"), 3s));
  ASSERT_TRUE(reg.announce(worker("w2"), 3s));
  auto full = reg.announce(worker("w3"), 3s);
  ASSERT_FALSE(full);
  EXPECT_EQ(full.error().code, ErrorCode::kQueueFull);
  EXPECT_TRUE(reg.announce(worker("w2"), 3s)) << "a live worker's heartbeat is never refused";
  clock.advance(3s);
  EXPECT_TRUE(reg.announce(worker("w3"), 3s)) << "the expired ones no longer count";

  auto many = reg.announce(worker("w4", {"a", "b", "c", "d"}), 3s);
  ASSERT_FALSE(many);
  EXPECT_EQ(many.error().param, "models");
  auto no_models = reg.announce(worker("w4", {}), 3s);
  ASSERT_FALSE(no_models);
  EXPECT_EQ(no_models.error().param, "models");
  WorkerInfo bad_url = worker("w4");
  bad_url.url = "ftp://x";
  EXPECT_EQ(reg.announce(bad_url, 3s).error().param, "url");
  EXPECT_EQ(reg.announce(worker(""), 3s).error().param, "node_id");
}

} // namespace
} // namespace gantry::cluster

namespace gantry::cluster {
namespace {

// Placement (issue 14): the models a worker can load travel with the ones it has loaded.
TEST(WorkerRegistry, AvailableModelsAreAnnouncedAndChecked) {
  FakeClock clock;
  MemoryWorkerRegistry reg(clock);
  WorkerInfo w = worker("w1", {});
  w.available = {"a", "b"};
  ASSERT_TRUE(reg.announce(w, 3s)) << "a worker with nothing loaded but models to load is valid";
  auto live = reg.live();
  ASSERT_TRUE(live);
  ASSERT_EQ(live->size(), 1u);
  EXPECT_TRUE((*live)[0].models.empty());
  EXPECT_EQ((*live)[0].available, (std::vector<std::string>{"a", "b"}));
  w.models = {"a"};
  auto both = reg.announce(w, 3s);
  ASSERT_FALSE(both) << "a model is loaded or available, not both";
  EXPECT_EQ(both.error().param, "available");
  WorkerInfo none = worker("w2", {});
  EXPECT_FALSE(reg.announce(none, 3s)) << "no model at all";
  WorkerLimits small;
  small.max_models_per_worker = 2;
  MemoryWorkerRegistry bounded(clock, small);
  WorkerInfo many = worker("w3", {"a"});
  many.available = {"b", "c"};
  EXPECT_FALSE(bounded.announce(many, 3s)) << "the bound counts loaded and available together";
}

} // namespace
} // namespace gantry::cluster
