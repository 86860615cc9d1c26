#include "engine/kv/prefix_cache.h"

#include <gtest/gtest.h>

#include <numeric>

namespace gantry::engine {
namespace {

std::vector<int32_t> seq(int n, int start = 0) {
  std::vector<int32_t> v(n);
  std::iota(v.begin(), v.end(), start);
  return v;
}

// Registers the full blocks of `tokens` as a sequence would, returning the blocks it used.
std::vector<int32_t> fill(KvCache &kv, PrefixCache &pc, const std::vector<int32_t> &tokens) {
  std::vector<int32_t> blocks;
  uint64_t h = 0;
  for (size_t b = 0; (b + 1) * KvCache::kBlockSize <= tokens.size(); ++b) {
    blocks.push_back(*kv.allocate());
    std::span<const int32_t> blk(tokens.data() + b * KvCache::kBlockSize, KvCache::kBlockSize);
    h = PrefixCache::chain_hash(h, blk);
    pc.insert(h, blk, blocks.back());
  }
  return blocks;
}

TEST(PrefixCacheTest, ReusesTheLongestCachedPrefixOnly) {
  KvCache kv(1, 4, 16);
  PrefixCache pc(kv);
  auto a = seq(48); // three full blocks
  auto blocks = fill(kv, pc, a);
  for (int32_t b : blocks)
    kv.release(b); // the sequence finished; the cache keeps them
  EXPECT_EQ(pc.evictable(), 3);

  auto b = seq(40); // same first two blocks, then a partial block
  auto got = pc.acquire(b, 100);
  EXPECT_EQ(got, std::vector<int32_t>(blocks.begin(), blocks.begin() + 2));
  EXPECT_EQ(kv.refcount(got[0]), 2) << "the caller holds a reference";
  EXPECT_EQ(pc.evictable(), 1);

  auto c = seq(48);
  c[20] = 999; // differs inside the second block
  auto got_c = pc.acquire(c, 100);
  EXPECT_EQ(got_c.size(), 1u);
  EXPECT_EQ(pc.acquire(seq(48), 1).size(), 1u) << "max_blocks caps the reuse";
  EXPECT_EQ(pc.hit_tokens(), (2 + 1 + 1) * 16u);
}

TEST(PrefixCacheTest, EvictsOnlyUnusedBlocksLeastRecentFirst) {
  KvCache kv(1, 4, 4);
  PrefixCache pc(kv);
  auto x = fill(kv, pc, seq(16, 0));
  auto y = fill(kv, pc, seq(16, 100));
  kv.release(x[0]);
  kv.release(y[0]);
  auto held = pc.acquire(seq(16, 0), 1); // x is in use again, and most recent
  ASSERT_EQ(held.size(), 1u);
  EXPECT_EQ(kv.n_free(), 2);
  EXPECT_TRUE(pc.evict_one());
  EXPECT_EQ(kv.n_free(), 3) << "y was evicted";
  EXPECT_FALSE(pc.evict_one()) << "x is still read by a sequence";
  EXPECT_TRUE(pc.acquire(seq(16, 100), 1).empty());
  kv.release(held[0]);
  EXPECT_TRUE(pc.evict_one());
  EXPECT_EQ(kv.n_free(), 4);
  EXPECT_EQ(pc.size(), 0);
}

} // namespace
} // namespace gantry::engine
