// The worker registry on a real redis-server: shared by two clients (a worker and a gateway), the
// TTL kept by Redis's own clock, the bound on workers, and entries that do not parse skipped.
#include <gtest/gtest.h>

#include <chrono>
#include <map>
#include <thread>

#include "core/clock.h"
#include "store/redis/redis_worker_registry.h"
#include "support/redis_process.h"

namespace gantry::store {
namespace {

using namespace std::chrono_literals;

cluster::WorkerInfo worker(const std::string &id, std::vector<std::string> models = {"m"}) {
  cluster::WorkerInfo w;
  w.node_id = id;
  w.url = "http://127.0.0.1:9000/v1";
  w.models = std::move(models);
  w.in_flight = 3;
  w.kv_usage = 0.25;
  return w;
}

class RedisWorkerRegistryTest : public ::testing::Test {
protected:
  void SetUp() override {
    redis_ = testing::RedisProcess::start_new();
    ASSERT_TRUE(redis_);
  }
  std::shared_ptr<RedisClient> client() {
    auto c = RedisClient::connect(*parse_redis_url(redis_->url()), clock_);
    EXPECT_TRUE(c);
    return std::shared_ptr<RedisClient>(std::move(c).value());
  }
  SystemClock clock_;
  std::unique_ptr<testing::RedisProcess> redis_;
};

TEST_F(RedisWorkerRegistryTest, AnAnnouncementIsSeenByAnotherNodeUntilItsTtlRunsOut) {
  RedisWorkerRegistry worker_side(client()), gateway_side(client());
  ASSERT_TRUE(worker_side.announce(worker("w1", {"a", "b"}), 60s));
  ASSERT_TRUE(worker_side.announce(worker("w2"), 300ms));
  auto live = gateway_side.live();
  ASSERT_TRUE(live) << live.error().message;
  ASSERT_EQ(live->size(), 2u);
  const auto &w1 = (*live)[0].node_id == "w1" ? (*live)[0] : (*live)[1];
  EXPECT_EQ(w1.models, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(w1.in_flight, 3);
  EXPECT_DOUBLE_EQ(w1.kv_usage, 0.25);
  // w2 stops beating: Redis expires it (polled with a deadline, never a fixed sleep).
  const auto deadline = clock_.now() + 10s;
  while (clock_.now() < deadline && gateway_side.live()->size() != 1)
    std::this_thread::sleep_for(20ms);
  live = gateway_side.live();
  ASSERT_EQ(live->size(), 1u) << "w2's TTL ran out";
  EXPECT_EQ((*live)[0].node_id, "w1");
  ASSERT_TRUE(worker_side.withdraw("w1"));
  EXPECT_TRUE(gateway_side.live()->empty()) << "a withdrawal is immediate";
}

// Placement (issue 14): what a worker can load round-trips through Redis beside what it has
// loaded; an entry written before the field existed reads as nothing to load.
TEST_F(RedisWorkerRegistryTest, AvailableModelsRoundTrip) {
  auto raw = client();
  RedisWorkerRegistry worker_side(client()), gateway_side(raw);
  ASSERT_TRUE(raw->command({"SADD", raw->prefix() + "workers", "old"}));
  ASSERT_TRUE(raw->command({"SET", raw->prefix() + "worker:old",
                            R"({"node_id":"old","url":"http://x/v1","models":["a"]})"}));
  auto w = worker("w1", {"a"});
  w.available = {"b", "c"};
  ASSERT_TRUE(worker_side.announce(w, 60s));
  auto idle = worker("w2", {});
  idle.available = {"a"};
  ASSERT_TRUE(worker_side.announce(idle, 60s));
  auto live = gateway_side.live();
  ASSERT_TRUE(live) << live.error().message;
  ASSERT_EQ(live->size(), 3u);
  std::map<std::string, cluster::WorkerInfo> by_id;
  for (const auto &x : *live)
    by_id[x.node_id] = x;
  const auto &w1 = by_id["w1"];
  const auto &w2 = by_id["w2"];
  EXPECT_EQ(by_id["old"].models, (std::vector<std::string>{"a"}));
  EXPECT_TRUE(by_id["old"].available.empty());
  EXPECT_EQ(w1.models, (std::vector<std::string>{"a"}));
  EXPECT_EQ(w1.available, (std::vector<std::string>{"b", "c"}));
  EXPECT_TRUE(w2.models.empty());
  EXPECT_EQ(w2.available, (std::vector<std::string>{"a"}));
}

TEST_F(RedisWorkerRegistryTest, TheNumberOfLiveWorkersIsBounded) {
  cluster::WorkerLimits limits;
  limits.max_workers = 2;
  RedisWorkerRegistry reg(client(), limits);
  ASSERT_TRUE(reg.announce(worker("w1"), 60s));
  ASSERT_TRUE(reg.announce(worker("w2"), 200ms));
  auto full = reg.announce(worker("w3"), 60s);
  ASSERT_FALSE(full);
  EXPECT_EQ(full.error().code, ErrorCode::kQueueFull);
  EXPECT_TRUE(reg.announce(worker("w1"), 60s)) << "a live worker's heartbeat always passes";
  // Once w2 expired its place is free (the announce script prunes before counting).
  const auto deadline = clock_.now() + 10s;
  Status st = full;
  while (clock_.now() < deadline && !(st = reg.announce(worker("w3"), 60s)))
    std::this_thread::sleep_for(20ms);
  EXPECT_TRUE(st) << "w3 joins once w2's TTL ran out";
}

TEST_F(RedisWorkerRegistryTest, AnEntryThatDoesNotParseIsSkippedNotRouted) {
  auto c = client();
  RedisWorkerRegistry reg(c);
  ASSERT_TRUE(reg.announce(worker("good"), 60s));
  ASSERT_TRUE(c->command({"SADD", c->prefix() + "workers", "evil", "nomodels"}));
  ASSERT_TRUE(c->command({"SET", c->prefix() + "worker:evil", "{not json"}));
  ASSERT_TRUE(c->command({"SET", c->prefix() + "worker:nomodels",
                          R"({"node_id":"nomodels","url":"http://x/v1","models":[]})"}));
  auto live = reg.live();
  ASSERT_TRUE(live);
  ASSERT_EQ(live->size(), 1u);
  EXPECT_EQ((*live)[0].node_id, "good");
  EXPECT_EQ(reg.malformed(), 2u);
}

} // namespace
} // namespace gantry::store
