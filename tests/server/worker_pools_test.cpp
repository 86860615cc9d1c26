// A gateway's model-aware routing state (roles, issue 13) over the in-process worker registry:
// each poll turns the live workers into per-model RemoteBackend pools in the ModelRegistry —
// a model appears with its first worker, members follow workers joining and leaving, the model
// stays registered (unlisted) when its last worker left, and a model the gateway serves itself is
// never routed to workers. No request is sent: membership only (the integration test sends
// traffic through real processes).
#include "server/worker_pools.h"

#include <gtest/gtest.h>

#include <sstream>

#include "backend/remote/remote_backend.h"
#include "cluster/memory_worker_registry.h"
#include "server/remote_models.h"
#include "support/fake_clock.h"

namespace gantry::server {
namespace {

using namespace std::chrono_literals;

cluster::WorkerInfo worker(const std::string &id, int port, std::vector<std::string> models) {
  cluster::WorkerInfo w;
  w.node_id = id;
  w.url = "http://127.0.0.1:" + std::to_string(port) + "/v1";
  w.models = std::move(models);
  return w;
}

const backend::remote::RemoteBackend *pool_of(const ModelRegistry &models, std::string_view m) {
  const auto *b = models.find(m);
  return b ? as_remote(*b) : nullptr;
}

TEST(WorkerPools, ModelsAppearWithTheirFirstWorkerAndMembersFollowTheRegistry) {
  FakeClock clock;
  ModelRegistry models;
  cluster::MemoryWorkerRegistry registry(clock);
  WorkerPoolsOptions o;
  o.token = "internal-token-0123456789";
  WorkerPools pools(models, registry, o, clock, nullptr);

  ASSERT_TRUE(pools.poll_once());
  EXPECT_TRUE(models.models().empty()) << "no worker yet, no model";

  ASSERT_TRUE(registry.announce(worker("w1", 9001, {"llama", "qwen"}), 3s));
  ASSERT_TRUE(registry.announce(worker("w2", 9002, {"llama"}), 3s));
  ASSERT_TRUE(pools.poll_once());
  ASSERT_EQ(models.models().size(), 2u);
  ASSERT_TRUE(pool_of(models, "llama"));
  EXPECT_EQ(pool_of(models, "llama")->endpoint_count(), 2);
  EXPECT_EQ(pool_of(models, "qwen")->endpoint_count(), 1);
  EXPECT_EQ(pools.live_workers("llama"), 2);

  // A third worker joins: one more member, no new model entry.
  ASSERT_TRUE(registry.announce(worker("w3", 9003, {"llama"}), 3s));
  ASSERT_TRUE(pools.poll_once());
  EXPECT_EQ(models.models().size(), 2u);
  EXPECT_EQ(pool_of(models, "llama")->endpoint_count(), 3);

  // w1 withdraws, w2 stops beating (its TTL runs out); w3 keeps beating.
  ASSERT_TRUE(registry.withdraw("w1"));
  clock.advance(2s);
  ASSERT_TRUE(registry.announce(worker("w3", 9003, {"llama"}), 3s));
  clock.advance(1500ms);
  ASSERT_TRUE(pools.poll_once());
  EXPECT_EQ(pool_of(models, "llama")->endpoint_count(), 1);
  EXPECT_EQ(pools.live_workers("qwen"), 0);
  const ServedModel *qwen = nullptr;
  for (const auto &m : models.models())
    if (m->name() == "qwen")
      qwen = m.get();
  ASSERT_TRUE(qwen);
  ASSERT_TRUE(qwen->live_workers);
  EXPECT_EQ(qwen->live_workers(), 0) << "kept, unlisted, until a worker brings it back";
  EXPECT_FALSE(pool_of(models, "qwen")->ready());

  auto check = pools.check();
  ASSERT_TRUE(check);
  EXPECT_EQ(check->at("live_workers"), 1);
  EXPECT_EQ(check->at("models"), 1);
  EXPECT_EQ(check->at("degraded"), 0);
}

TEST(WorkerPools, AModelTheGatewayServesItselfIsNotRoutedToWorkers) {
  FakeClock clock;
  ModelRegistry models;
  backend::remote::RemoteModelConfig rc;
  rc.name = "mine";
  rc.endpoints.push_back({});
  rc.endpoints.back().url = "http://127.0.0.1:9100/v1";
  rc.endpoints.back().model = "upstream";
  rc.probe_path.clear();
  auto own = backend::remote::RemoteBackend::create(std::move(rc), clock);
  ASSERT_TRUE(own);
  models.add(std::move(*own));
  cluster::MemoryWorkerRegistry registry(clock);
  WorkerPools pools(models, registry, {}, clock, nullptr);
  ASSERT_TRUE(registry.announce(worker("w1", 9001, {"mine"}), 3s));
  ASSERT_TRUE(pools.poll_once());
  EXPECT_EQ(pool_of(models, "mine")->endpoint_count(), 1) << "still only its configured backend";
  EXPECT_EQ(pools.live_workers("mine"), 0);
}

TEST(WorkerPools, MetricsCountLiveWorkersPerModelWithEscapedLabels) {
  FakeClock clock;
  ModelRegistry models;
  cluster::MemoryWorkerRegistry registry(clock);
  WorkerPools pools(models, registry, {}, clock, nullptr);
  ASSERT_TRUE(registry.announce(worker("w1", 9001, {"a\"b\\c"}), 3s));
  ASSERT_TRUE(pools.poll_once());
  std::ostringstream o;
  pools.render_metrics(o);
  EXPECT_NE(o.str().find("gantry:workers{model_name=\"a\\\"b\\\\c\"} 1\n"), std::string::npos)
      << o.str();
  EXPECT_NE(o.str().find("gantry:worker_pool_changes_total{change=\"added\"} 1\n"),
            std::string::npos)
      << o.str();
}

} // namespace
} // namespace gantry::server
