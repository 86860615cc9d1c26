#include "engine/kernels/thread_pool.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <mutex>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

namespace gantry::engine::kernels {
namespace {

TEST(ThreadPoolTest, RunCallsEveryThreadOnce) {
  for (int n : {1, 2, 3, 5}) {
    ThreadPool pool(n);
    ASSERT_EQ(pool.size(), n);
    std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
    for (int rep = 0; rep < 100; ++rep)
      pool.run([&](int t) { hits[static_cast<size_t>(t)]++; });
    for (int t = 0; t < n; ++t)
      EXPECT_EQ(hits[static_cast<size_t>(t)].load(), 100) << t;
  }
}

TEST(ThreadPoolTest, DefaultSizeIsAtLeastOne) {
  ThreadPool pool;
  EXPECT_GE(pool.size(), 1);
}

TEST(ThreadPoolTest, ParallelForCoversRangeExactlyOnce) {
  ThreadPool pool(3);
  for (int64_t n : {0, 1, 7, 64, 1000, 4097}) {
    for (int64_t grain : {1, 3, 64, 5000}) {
      std::vector<std::atomic<int>> seen(static_cast<size_t>(n));
      pool.parallel_for(n, grain, [&](int64_t b, int64_t e, int thread) {
        EXPECT_LT(b, e);
        EXPECT_LE(e - b, grain);
        EXPECT_GE(thread, 0);
        EXPECT_LT(thread, 3);
        for (int64_t i = b; i < e; ++i)
          seen[static_cast<size_t>(i)]++;
      });
      for (int64_t i = 0; i < n; ++i) {
        ASSERT_EQ(seen[static_cast<size_t>(i)].load(), 1) << "n=" << n << " grain=" << grain;
      }
    }
  }
}

// Guided chunks: [0, n) exactly once, every chunk starting on a multiple of `align` and at least
// `align` long (but the one that ends at n), none longer than a quarter of what was left for 2
// threads (1/(2 x threads), rounded up to the alignment), so the last ones are small.
TEST(ThreadPoolTest, GuidedChunksCoverRangeOnceAlignedAndShrinking) {
  for (int threads : {1, 2, 3}) {
    ThreadPool pool(threads);
    for (int64_t n : {0, 1, 31, 32, 33, 2560, 11264, 32001}) {
      for (int64_t align : {1, 16, 32}) {
        std::vector<std::atomic<int>> seen(static_cast<size_t>(n));
        std::mutex mu;
        std::vector<std::pair<int64_t, int64_t>> chunks;
        pool.parallel_for_guided(n, align, [&](int64_t b, int64_t e, int thread) {
          EXPECT_LT(b, e);
          EXPECT_GE(thread, 0);
          EXPECT_LT(thread, threads);
          for (int64_t i = b; i < e; ++i)
            seen[static_cast<size_t>(i)]++;
          std::lock_guard<std::mutex> lk(mu);
          chunks.emplace_back(b, e);
        });
        for (int64_t i = 0; i < n; ++i)
          ASSERT_EQ(seen[static_cast<size_t>(i)].load(), 1) << "n=" << n << " align=" << align;
        const int64_t parts = 2 * threads;
        for (const auto &[b, e] : chunks) {
          EXPECT_EQ(b % align, 0) << "n=" << n << " align=" << align;
          if (e != n) {
            EXPECT_GE(e - b, align);
          }
          if (threads > 1 && n > align) {
            const int64_t cap = std::max(align, ((n - b) / parts + align - 1) / align * align);
            EXPECT_LE(e - b, cap) << "n=" << n << " b=" << b;
          }
        }
        if (threads > 1 && n >= 2560 && align == 32) {
          // The chunk that ends the range is small: at most two alignments.
          for (const auto &[b, e] : chunks) {
            if (e == n) {
              EXPECT_LE(e - b, 2 * align) << "n=" << n;
            }
          }
        }
      }
    }
  }
}

TEST(ThreadPoolTest, ResultsOfWorkersAreVisibleToCaller) {
  ThreadPool pool(4);
  std::vector<int64_t> out(10000, 0);
  for (int rep = 0; rep < 50; ++rep) {
    pool.parallel_for(static_cast<int64_t>(out.size()), 16, [&](int64_t b, int64_t e, int) {
      for (int64_t i = b; i < e; ++i)
        out[static_cast<size_t>(i)] = i * rep;
    });
    for (size_t i = 0; i < out.size(); i += 997)
      ASSERT_EQ(out[i], static_cast<int64_t>(i) * rep);
  }
}

// Timing is informational only (the machine may be shared), so this asserts nothing about it.
TEST(ThreadPoolTest, DISABLED_DispatchLatency) {
  ThreadPool pool(2);
  std::atomic<int64_t> sink{0};
  const int reps = 20000;
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < reps; ++i)
    pool.run([&](int t) { sink.fetch_add(t); });
  const auto us =
      std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start).count();
  std::printf("dispatch: %.2f us per run() with 2 threads\n", us / reps);
}

} // namespace
} // namespace gantry::engine::kernels
