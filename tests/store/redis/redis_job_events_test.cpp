// RedisJobEvents on a real redis-server: two nodes' adapters share job events — a completion
// published on one answers a wait held on the other, a cancel published on one reaches the
// other's listener (the node running the job), each node delivers its own events once, and
// deadlines and the bound on waiters stay local.
#include "store/redis/redis_job_events.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <thread>
#include <vector>

#include "support/eventually.h"
#include "support/fake_clock.h"
#include "support/redis_process.h"

namespace gantry::store {
namespace {

using namespace std::chrono_literals;

using testing::eventually;

TEST(RedisJobEvents, ACompletionOrCancelOnOneNodeReachesTheOthersWaitersAndListener) {
  auto redis = testing::RedisProcess::start_new();
  ASSERT_TRUE(redis);
  FakeClock clock;
  auto client = [&] {
    auto c = RedisClient::connect(*parse_redis_url(redis->url()), clock);
    EXPECT_TRUE(c);
    return std::shared_ptr<RedisClient>(std::move(c).value());
  };
  RedisJobEvents gateway(client(), clock, 16), worker(client(), clock, 16);
  std::mutex mu;
  std::vector<std::string> gateway_heard, worker_heard;
  gateway.listen([&](const jobs::JobEvent &e) {
    std::lock_guard<std::mutex> lk(mu);
    gateway_heard.push_back((e.kind == jobs::JobEventKind::kCanceled ? "x:" : "c:") + e.job_id);
  });
  worker.listen([&](const jobs::JobEvent &e) {
    std::lock_guard<std::mutex> lk(mu);
    worker_heard.push_back((e.kind == jobs::JobEventKind::kCanceled ? "x:" : "c:") + e.job_id);
  });
  // Subscriptions start asynchronously: publish a probe until the other side hears it.
  ASSERT_TRUE(eventually(
      [&] {
        worker.publish({"probe", jobs::JobEventKind::kCompleted});
        gateway.publish({"probe", jobs::JobEventKind::kCompleted});
        return gateway.remote_events() > 0 && worker.remote_events() > 0;
      },
      3s));
  {
    std::lock_guard<std::mutex> lk(mu);
    gateway_heard.clear();
    worker_heard.clear();
  }

  // A POST held on the gateway is answered by the worker's completion.
  std::atomic<int> outcome{-1};
  auto h = gateway.wait("job_1", clock.unix_millis() + 60'000,
                        [&](jobs::WaitOutcome o) { outcome = static_cast<int>(o); });
  ASSERT_TRUE(h);
  worker.publish({"job_1", jobs::JobEventKind::kCompleted});
  ASSERT_TRUE(eventually([&] { return outcome.load() >= 0; }, 2s));
  EXPECT_EQ(outcome.load(), static_cast<int>(jobs::WaitOutcome::kCompleted));

  // A cancel through the gateway reaches the worker's listener (its runner stops the job).
  gateway.publish({"job_2", jobs::JobEventKind::kCanceled});
  ASSERT_TRUE(eventually(
      [&] {
        std::lock_guard<std::mutex> lk(mu);
        return !worker_heard.empty() && worker_heard.back() == "x:job_2";
      },
      2s));
  std::this_thread::sleep_for(100ms); // an echo of its own message would land by now
  std::lock_guard<std::mutex> lk(mu);
  for (auto *heard : {&gateway_heard, &worker_heard}) // probes still in flight at the clear
    std::erase(*heard, std::string("c:probe"));
  EXPECT_EQ(gateway_heard, (std::vector<std::string>{"c:job_1", "x:job_2"}))
      << "each node hears every event once: its own locally, the other's over Redis";
  EXPECT_EQ(worker_heard, (std::vector<std::string>{"c:job_1", "x:job_2"}));
}

TEST(RedisJobEvents, DeadlinesAndTheWaiterBoundStayLocalAndJunkOnTheChannelIsIgnored) {
  auto redis = testing::RedisProcess::start_new();
  ASSERT_TRUE(redis);
  FakeClock clock;
  auto c = RedisClient::connect(*parse_redis_url(redis->url()), clock);
  ASSERT_TRUE(c);
  std::shared_ptr<RedisClient> client = std::move(c).value();
  RedisJobEvents node(client, clock, 1);
  std::atomic<int> outcome{-1};
  ASSERT_TRUE(node.wait("job_9", clock.unix_millis() + 1000,
                        [&](jobs::WaitOutcome o) { outcome = static_cast<int>(o); }));
  EXPECT_FALSE(node.wait("job_10", clock.unix_millis() + 1000, [](jobs::WaitOutcome) {}))
      << "over the bound of one waiter";
  for (const char *junk : {"", "x", "node-a", "node-a q job_9", "node-a c ", "node-ac job_9"})
    (void)client->command({"PUBLISH", "gantry:jobs", junk});
  std::this_thread::sleep_for(200ms);
  EXPECT_EQ(outcome.load(), -1) << "no junk message completes a wait";
  clock.advance(std::chrono::milliseconds(1001));
  node.expire_due();
  EXPECT_EQ(outcome.load(), static_cast<int>(jobs::WaitOutcome::kTimedOut));
}

} // namespace
} // namespace gantry::store
