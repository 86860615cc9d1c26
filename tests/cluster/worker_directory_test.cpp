// The gateway's membership updates: from successive registry snapshots to per-model additions and
// removals (what the gateway applies to each model's backend pool).
#include "cluster/worker_directory.h"

#include <gtest/gtest.h>

#include <map>

namespace gantry::cluster {
namespace {

WorkerInfo worker(const std::string &id, std::vector<std::string> models) {
  WorkerInfo w;
  w.node_id = id;
  w.url = "http://" + id + ":8090/v1";
  w.models = std::move(models);
  return w;
}

std::vector<std::string> urls(const std::vector<Member> &ms) {
  std::vector<std::string> out;
  for (const auto &m : ms)
    out.push_back(m.url);
  return out;
}

TEST(WorkerDirectory, WorkersAppearingAreAddedToEachModelTheyServe) {
  WorkerDirectory dir;
  auto c = dir.update({worker("w1", {"a", "b"}), worker("w2", {"a"})});
  ASSERT_EQ(c.size(), 2u);
  EXPECT_EQ(c[0].model, "a");
  EXPECT_EQ(urls(c[0].added), (std::vector<std::string>{"http://w1:8090/v1", "http://w2:8090/v1"}));
  EXPECT_EQ(c[1].model, "b");
  EXPECT_EQ(urls(c[1].added), (std::vector<std::string>{"http://w1:8090/v1"}));
  EXPECT_EQ(dir.live_workers("a"), 2);
  EXPECT_EQ(dir.workers(), 2);
  EXPECT_TRUE(dir.update({worker("w1", {"a", "b"}), worker("w2", {"a"})}).empty())
      << "the same snapshot again changes nothing";
}

TEST(WorkerDirectory, AWorkerLeavingIsRemovedAndTheModelStaysTracked) {
  WorkerDirectory dir;
  dir.update({worker("w1", {"a"}), worker("w2", {"a"})});
  auto c = dir.update({worker("w2", {"a"})});
  ASSERT_EQ(c.size(), 1u);
  EXPECT_TRUE(c[0].added.empty());
  EXPECT_EQ(urls(c[0].removed), (std::vector<std::string>{"http://w1:8090/v1"}));
  c = dir.update({});
  ASSERT_EQ(c.size(), 1u);
  EXPECT_EQ(dir.live_workers("a"), 0);
  EXPECT_TRUE(dir.tracks("a")) << "kept, so a worker bringing it back is one addition";
  c = dir.update({worker("w3", {"a"})});
  ASSERT_EQ(c.size(), 1u);
  EXPECT_EQ(urls(c[0].added), (std::vector<std::string>{"http://w3:8090/v1"}));
}

TEST(WorkerDirectory, AWorkerUnloadingOneModelLeavesOnlyThatPool) {
  WorkerDirectory dir;
  dir.update({worker("w1", {"a", "b"})});
  auto c = dir.update({worker("w1", {"a"})});
  ASSERT_EQ(c.size(), 1u);
  EXPECT_EQ(c[0].model, "b");
  EXPECT_EQ(c[0].removed.size(), 1u);
}

// Placement (issue 14): a worker that can load a model is a member marked not loaded; loading or
// unloading it later flips the mark (an update), never a removal and an addition.
TEST(WorkerDirectory, WorkersThatCanLoadAModelAreMembersMarkedNotLoaded) {
  WorkerDirectory dir;
  WorkerInfo w1 = worker("w1", {"a"});
  w1.available = {"b"};
  WorkerInfo w2 = worker("w2", {"b"});
  w2.available = {"a"};
  auto c = dir.update({w1, w2});
  ASSERT_EQ(c.size(), 2u);
  ASSERT_EQ(c[0].added.size(), 2u);
  EXPECT_TRUE(c[0].added[0].loaded) << "w1 has a loaded";
  EXPECT_FALSE(c[0].added[1].loaded) << "w2 could load a";
  EXPECT_EQ(dir.live_workers("a"), 2);
  EXPECT_EQ(dir.loaded_workers("a"), 1);
  EXPECT_EQ(dir.loaded_counts(), (std::map<std::string, int>{{"a", 1}, {"b", 1}}));
  // w1 unloads a to load b: both models keep both members, two flags flip.
  w1.models = {"b"};
  w1.available = {"a"};
  c = dir.update({w1, w2});
  ASSERT_EQ(c.size(), 2u);
  for (const auto &change : c) {
    EXPECT_TRUE(change.added.empty());
    EXPECT_TRUE(change.removed.empty());
    ASSERT_EQ(change.updated.size(), 1u);
    EXPECT_EQ(change.updated[0].node_id, "w1");
    EXPECT_EQ(change.updated[0].loaded, change.model == "b");
  }
  EXPECT_EQ(dir.loaded_workers("a"), 0);
  EXPECT_EQ(dir.loaded_workers("b"), 2);
  EXPECT_TRUE(dir.update({w1, w2}).empty());
}

TEST(WorkerDirectory, ANewUrlForTheSameNodeIsARemovalAndAnAddition) {
  WorkerDirectory dir;
  dir.update({worker("w1", {"a"})});
  WorkerInfo moved = worker("w1", {"a"});
  moved.url = "http://10.0.0.9:8090/v1";
  auto c = dir.update({moved});
  ASSERT_EQ(c.size(), 1u);
  EXPECT_EQ(urls(c[0].added), (std::vector<std::string>{"http://10.0.0.9:8090/v1"}));
  EXPECT_EQ(urls(c[0].removed), (std::vector<std::string>{"http://w1:8090/v1"}));
}

TEST(WorkerDirectory, ModelsTheGatewayServesItselfAreNotRouted) {
  WorkerDirectory dir;
  auto c = dir.update({worker("w1", {"a", "mine"})}, {"mine"});
  ASSERT_EQ(c.size(), 1u);
  EXPECT_EQ(c[0].model, "a");
  EXPECT_FALSE(dir.tracks("mine"));
}

TEST(WorkerDirectory, TrackedModelsAreBounded) {
  WorkerDirectory dir(2);
  auto c = dir.update({worker("w1", {"a", "b", "c"})});
  EXPECT_EQ(c.size(), 2u);
  EXPECT_FALSE(dir.tracks("c"));
  EXPECT_EQ(dir.models_refused(), 1u);
  EXPECT_EQ(dir.counts().size(), 2u);
}

} // namespace
} // namespace gantry::cluster
