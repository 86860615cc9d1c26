#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "store/redis/redis_key_events.h"
#include "support/eventually.h"
#include "support/fake_clock.h"
#include "support/redis_process.h"

namespace gantry::store {
namespace {

using namespace std::chrono_literals;

using testing::eventually;

TEST(RedisKeyEvents, APublishReachesEveryOtherNodeAndAReconnectCountsAsAChange) {
  auto redis = testing::RedisProcess::start_new();
  ASSERT_TRUE(redis);
  FakeClock clock;
  auto client = [&] {
    auto c = RedisClient::connect(*parse_redis_url(redis->url()), clock);
    EXPECT_TRUE(c);
    return std::shared_ptr<RedisClient>(std::move(c).value());
  };
  RedisKeyEvents a(client()), b(client());
  std::atomic<int> seen{0};
  b.subscribe([&] { ++seen; });
  // The subscription is set up asynchronously: publish until the first message lands.
  ASSERT_TRUE(eventually(
      [&] {
        a.publish();
        return seen.load() > 0;
      },
      2s));
  const int before = seen.load();
  a.publish();
  EXPECT_TRUE(eventually([&] { return seen.load() > before; }, 1s)) << "within a second";

  // Redis restarts: the subscriber reconnects and reports a change (messages were lost).
  // Counted before the kill: the subscriber retries every 50-2000 ms and may be back before
  // start() returns (it was under ThreadSanitizer, where the count read after start() already
  // held the reconnect and the test waited for a second one).
  const int at_kill = seen.load();
  redis->kill();
  ASSERT_TRUE(redis->start());
  EXPECT_TRUE(eventually([&] { return seen.load() > at_kill; }, 5s));
}

TEST(RedisKeyEvents, DestructionIsPromptWithRedisGone) {
  auto redis = testing::RedisProcess::start_new();
  ASSERT_TRUE(redis);
  FakeClock clock;
  auto c = RedisClient::connect(*parse_redis_url(redis->url()), clock);
  ASSERT_TRUE(c);
  const auto t0 = std::chrono::steady_clock::now();
  {
    RedisKeyEvents e(std::shared_ptr<RedisClient>(std::move(c).value()));
    e.subscribe([] {});
    std::this_thread::sleep_for(100ms);
    redis->kill();
    std::this_thread::sleep_for(100ms);
  }
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);
}

} // namespace
} // namespace gantry::store
