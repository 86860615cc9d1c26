// The worker's heartbeat over the in-process registry: announced at start (a refusal is a
// start-up error), kept alive while it beats, withdrawn at stop. The beats run on a real thread
// with a short period; the test polls with a deadline and asserts on counts, never on timings.
#include "cluster/worker_heartbeat.h"

#include <gtest/gtest.h>

#include <thread>

#include "cluster/memory_worker_registry.h"
#include "core/clock.h"

namespace gantry::cluster {
namespace {

using namespace std::chrono_literals;

template <typename F> bool eventually(F f) {
  SystemClock clock;
  const auto deadline = clock.now() + 10s;
  while (clock.now() < deadline) {
    if (f())
      return true;
    std::this_thread::sleep_for(5ms);
  }
  return false;
}

TEST(WorkerHeartbeat, AnnouncesBeatsWithFreshLoadAndWithdrawsOnStop) {
  SystemClock clock;
  MemoryWorkerRegistry reg(clock);
  std::atomic<int> load{0};
  HeartbeatOptions o;
  o.period = 10ms;
  o.ttl = 10s;
  WorkerHeartbeat hb(
      reg,
      [&] {
        WorkerInfo w;
        w.node_id = "w1";
        w.url = "http://127.0.0.1:1/v1";
        w.models = {"m"};
        w.in_flight = load.load();
        return w;
      },
      o, nullptr);
  ASSERT_TRUE(hb.start());
  ASSERT_EQ(reg.live()->size(), 1u) << "announced before start() returns";
  load = 7;
  EXPECT_TRUE(eventually([&] {
    auto live = *reg.live();
    return live.size() == 1 && live[0].in_flight == 7;
  })) << "each beat carries the load of that moment";
  EXPECT_GE(hb.beats(), 2u);
  hb.stop();
  EXPECT_TRUE(reg.live()->empty()) << "a clean stop withdraws at once, without waiting the TTL";
}

TEST(WorkerHeartbeat, ARefusedFirstAnnouncementIsAStartUpError) {
  SystemClock clock;
  WorkerLimits limits;
  limits.max_workers = 1;
  MemoryWorkerRegistry reg(clock, limits);
  WorkerInfo other;
  other.node_id = "other";
  other.url = "http://127.0.0.1:2/v1";
  other.models = {"m"};
  ASSERT_TRUE(reg.announce(other, 10s));
  WorkerHeartbeat hb(
      reg,
      [] {
        WorkerInfo w;
        w.node_id = "w1";
        w.url = "http://127.0.0.1:1/v1";
        w.models = {"m"};
        return w;
      },
      {}, nullptr);
  auto st = hb.start();
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code, ErrorCode::kQueueFull);
}

} // namespace
} // namespace gantry::cluster
