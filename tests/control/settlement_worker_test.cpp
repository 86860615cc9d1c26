#include "control/settlement_worker.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <future>
#include <mutex>
#include <thread>
#include <vector>

namespace gantry::control {
namespace {

TEST(SettlementWorker, TheWorkerRunsTasksInOrder) {
  SettlementWorker w;
  std::vector<int> seen;
  for (int i = 0; i < 100; ++i)
    w.run([&seen, i] { seen.push_back(i); });
  // No barrier here: a barrier may run queued tasks on its own thread, beside the worker (see
  // ABarrierRunsWhatIsQueuedInsteadOfWaiting), so only the worker alone promises the order.
  while (w.stats().run < 100)
    std::this_thread::yield();
  w.barrier(); // nothing left to help with; orders `seen` after the worker's writes
  ASSERT_EQ(seen.size(), 100u);
  for (int i = 0; i < 100; ++i)
    EXPECT_EQ(seen[i], i);
  EXPECT_EQ(w.stats().inline_runs, 0u);
}

TEST(SettlementWorker, BarrierWaitsForEveryTaskPostedBeforeIt) {
  SettlementWorker w;
  std::mutex mu;
  std::vector<int> seen;
  for (int i = 0; i < 100; ++i)
    w.run([&, i] {
      std::lock_guard<std::mutex> lk(mu);
      seen.push_back(i);
    });
  w.barrier();
  std::lock_guard<std::mutex> lk(mu);
  ASSERT_EQ(seen.size(), 100u);
  std::sort(seen.begin(), seen.end());
  for (int i = 0; i < 100; ++i)
    EXPECT_EQ(seen[i], i);
  EXPECT_EQ(w.stats().run, 100u);
}

TEST(SettlementWorker, AFullQueueRunsTheTaskOnTheCallerAndCountsIt) {
  SettlementWorker w(1);
  std::promise<void> release;
  std::shared_future<void> gate = release.get_future().share();
  std::promise<void> started;
  ASSERT_TRUE(w.post([&] {
    started.set_value();
    gate.wait();
  }));
  started.get_future().wait(); // the worker holds the first task; the queue is empty
  ASSERT_TRUE(w.post([] {}));  // fills the queue
  const auto caller = std::this_thread::get_id();
  std::thread::id ran_on;
  w.run([&] { ran_on = std::this_thread::get_id(); });
  EXPECT_EQ(ran_on, caller) << "a refused task runs on the caller, never dropped";
  EXPECT_EQ(w.stats().inline_runs, 1u);
  release.set_value();
  w.barrier();
  EXPECT_EQ(w.stats().run, 2u);
}

TEST(SettlementWorker, ABarrierRunsWhatIsQueuedInsteadOfWaiting) {
  SettlementWorker w;
  std::promise<void> release, started;
  std::shared_future<void> gate = release.get_future().share();
  ASSERT_TRUE(w.post([&] {
    started.set_value();
    gate.wait();
  }));
  started.get_future().wait(); // the worker is busy with the first task
  std::atomic<int> ran{0};
  for (int i = 0; i < 10; ++i)
    ASSERT_TRUE(w.post([&] { ++ran; }));
  std::atomic<bool> returned{false};
  std::thread waiter([&] {
    w.barrier();
    returned = true;
  });
  // The waiter runs the ten queued tasks itself, then still waits for the first one.
  while (ran.load() < 10)
    std::this_thread::yield();
  EXPECT_FALSE(returned.load()) << "the barrier must wait for the task still running";
  release.set_value();
  waiter.join();
  EXPECT_TRUE(returned.load());
  EXPECT_EQ(w.stats().run, 11u);
  EXPECT_EQ(w.stats().helped, 10u);
}

TEST(SettlementWorker, StopRunsEverythingQueuedFirst) {
  std::atomic<int> ran{0};
  std::promise<void> release;
  std::shared_future<void> gate = release.get_future().share();
  auto w = std::make_unique<SettlementWorker>(1000);
  ASSERT_TRUE(w->post([&] {
    gate.wait();
    ++ran;
  }));
  for (int i = 0; i < 500; ++i)
    ASSERT_TRUE(w->post([&] { ++ran; }));
  std::thread stopper([&] { w->stop(); });
  release.set_value();
  stopper.join();
  EXPECT_EQ(ran.load(), 501);
  EXPECT_FALSE(w->post([] {})) << "a stopped worker accepts nothing";
  w->barrier(); // returns at once after stop
  w.reset();
}

} // namespace
} // namespace gantry::control
