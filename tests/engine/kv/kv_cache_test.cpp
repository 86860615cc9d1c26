#include "engine/kv/kv_cache.h"

#include <gtest/gtest.h>

namespace gantry::engine {
namespace {

TEST(KvCacheTest, AllocatesUntilTheBudgetAndRecyclesReleasedBlocks) {
  const int n_layer = 2, kv_dim = 8;
  const size_t budget = KvCache::bytes_per_block(n_layer, kv_dim) * 3 + 100;
  const int n = KvCache::blocks_for_budget(n_layer, kv_dim, budget);
  EXPECT_EQ(n, 3);
  KvCache kv(n_layer, kv_dim, n);
  EXPECT_LE(kv.bytes(), budget);
  auto a = kv.allocate(), b = kv.allocate(), c = kv.allocate();
  ASSERT_TRUE(a && b && c);
  EXPECT_FALSE(kv.allocate().has_value()) << "the budget is fixed";
  kv.retain(*b);
  kv.release(*b);
  EXPECT_EQ(kv.n_free(), 0) << "a shared block stays allocated until its last release";
  kv.release(*b);
  EXPECT_EQ(kv.n_free(), 1);
  EXPECT_EQ(kv.allocate(), b);
}

TEST(KvCacheTest, RowsOfDifferentLayersBlocksAndSlotsDoNotOverlap) {
  KvCache kv(2, 4, 2);
  for (int l = 0; l < 2; ++l)
    for (int b = 0; b < 2; ++b)
      for (int s = 0; s < KvCache::kBlockSize; ++s) {
        kv.k(l, b, s)[3] = static_cast<uint16_t>(l * 1000 + b * 100 + s);
        kv.v(l, b, s)[0] = static_cast<uint16_t>(50000 + l * 1000 + b * 100 + s);
      }
  EXPECT_EQ(kv.k(1, 1, 15)[3], 1115);
  EXPECT_EQ(kv.v(0, 1, 2)[0], 50102);
  EXPECT_EQ(kv.k(0, 0, 0)[3], 0);
}

TEST(KvCacheTest, BlocksForTokensRoundsUp) {
  EXPECT_EQ(KvCache::blocks_for_tokens(1), 1);
  EXPECT_EQ(KvCache::blocks_for_tokens(16), 1);
  EXPECT_EQ(KvCache::blocks_for_tokens(17), 2);
}

} // namespace
} // namespace gantry::engine

namespace gantry::engine {
namespace {

TEST(KvCacheTest, CountsCachedBlocksThatOnlyTheCacheHolds) {
  KvCache kv(1, 4, 4);
  auto b = *kv.allocate(); // a sequence's reference
  kv.retain(b);            // the cache's reference
  kv.set_cached(b, true);
  EXPECT_EQ(kv.n_idle_cached(), 0) << "the sequence still reads it";
  kv.release(b); // the sequence finished
  EXPECT_EQ(kv.n_idle_cached(), 1);
  kv.retain(b); // a new sequence reuses it
  EXPECT_EQ(kv.n_idle_cached(), 0);
  kv.release(b);
  kv.set_cached(b, false); // evicted
  EXPECT_EQ(kv.n_idle_cached(), 0);
  kv.release(b);
  EXPECT_EQ(kv.n_free(), 4);
}

} // namespace
} // namespace gantry::engine
