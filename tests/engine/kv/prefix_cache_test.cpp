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
std::vector<int32_t> fill(KvCache &kv, PrefixCache &pc, const std::vector<int32_t> &tokens,
                          std::string_view scope = "") {
  std::vector<int32_t> blocks;
  uint64_t h = pc.root(scope);
  for (size_t b = 0; (b + 1) * KvCache::kBlockSize <= tokens.size(); ++b) {
    blocks.push_back(*kv.allocate());
    std::span<const int32_t> blk(tokens.data() + b * KvCache::kBlockSize, KvCache::kBlockSize);
    const uint64_t parent = h;
    h = pc.chain_hash(parent, blk);
    pc.insert(parent, h, blk, blocks.back());
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
  auto got = pc.acquire(pc.root(""), b, 100);
  EXPECT_EQ(got, std::vector<int32_t>(blocks.begin(), blocks.begin() + 2));
  EXPECT_EQ(kv.refcount(got[0]), 2) << "the caller holds a reference";
  EXPECT_EQ(pc.evictable(), 1);

  auto c = seq(48);
  c[20] = 999; // differs inside the second block
  auto got_c = pc.acquire(pc.root(""), c, 100);
  EXPECT_EQ(got_c.size(), 1u);
  EXPECT_EQ(pc.acquire(pc.root(""), seq(48), 1).size(), 1u) << "max_blocks caps the reuse";
  EXPECT_EQ(pc.hit_tokens(), (2 + 1 + 1) * 16u);
}

TEST(PrefixCacheTest, EvictsOnlyUnusedBlocksLeastRecentFirst) {
  KvCache kv(1, 4, 4);
  PrefixCache pc(kv);
  auto x = fill(kv, pc, seq(16, 0));
  auto y = fill(kv, pc, seq(16, 100));
  kv.release(x[0]);
  kv.release(y[0]);
  auto held = pc.acquire(pc.root(""), seq(16, 0), 1); // x is in use again, and most recent
  ASSERT_EQ(held.size(), 1u);
  EXPECT_EQ(kv.n_free(), 2);
  EXPECT_TRUE(pc.evict_one());
  EXPECT_EQ(kv.n_free(), 3) << "y was evicted";
  EXPECT_FALSE(pc.evict_one()) << "x is still read by a sequence";
  EXPECT_TRUE(pc.acquire(pc.root(""), seq(16, 100), 1).empty());
  kv.release(held[0]);
  EXPECT_TRUE(pc.evict_one());
  EXPECT_EQ(kv.n_free(), 4);
  EXPECT_EQ(pc.size(), 0);
}

TEST(SipHashTest, MatchesTheReferenceVectors) {
  // The SipHash paper's test key 00 01 .. 0f; vectors for the empty message and 00 01 .. 0e.
  const SipKey key{0x0706050403020100ull, 0x0f0e0d0c0b0a0908ull};
  EXPECT_EQ(siphash24(key, {}), 0x726fdb47dd0e0e31ull);
  std::vector<uint8_t> msg(15);
  std::iota(msg.begin(), msg.end(), uint8_t{0});
  EXPECT_EQ(siphash24(key, msg), 0xa129ca6149be45e5ull);
}

// Audit L7: the chain hash was an unkeyed public mixer, so colliding prefixes could be computed
// offline. Now two caches (two processes) hash the same block differently.
TEST(PrefixCacheTest, ChainHashIsKeyedPerCache) {
  KvCache kv(1, 4, 4);
  PrefixCache a(kv), b(kv), c(kv, SipKey{1, 2}), d(kv, SipKey{1, 2});
  auto blk = seq(16);
  EXPECT_NE(a.chain_hash(0, blk), b.chain_hash(0, blk)) << "each cache draws its own key";
  EXPECT_EQ(c.chain_hash(0, blk), d.chain_hash(0, blk)) << "the key alone decides the hash";
  EXPECT_NE(c.chain_hash(0, blk), c.chain_hash(1, blk)) << "the parent is part of the hash";
}

// Audit L7: an entry found under the right hash with the right tokens but a different parent
// (what a chain-hash collision would produce) must not be reused: its K/V were computed after
// another prefix.
TEST(PrefixCacheTest, AnEntryWithAnotherParentIsNeverReused) {
  KvCache kv(1, 4, 8);
  PrefixCache pc(kv);
  auto victim = seq(32);
  const uint64_t r = pc.root("");
  std::span<const int32_t> v1(victim.data(), 16), v2(victim.data() + 16, 16);
  const uint64_t h1 = pc.chain_hash(r, v1);
  const int32_t b1 = *kv.allocate();
  pc.insert(r, h1, v1, b1);
  // The attacker's block 2: the victim's tokens and (by collision) the victim's chain hash, but
  // computed after the attacker's own first block.
  const int32_t poisoned = *kv.allocate();
  pc.insert(/*parent=*/h1 ^ 0x5a5a, pc.chain_hash(h1, v2), v2, poisoned);
  auto got = pc.acquire(r, victim, 100);
  EXPECT_EQ(got, std::vector<int32_t>{b1}) << "the second block's parent does not match";
}

// Audit M2: blocks cached for one project are invisible from another project's prompt, so
// cached_tokens cannot reveal another tenant's prompt; the same project still reuses them.
TEST(PrefixCacheTest, ScopesNeverShareBlocks) {
  KvCache kv(1, 4, 8);
  PrefixCache pc(kv);
  auto prompt = seq(48);
  for (int32_t b : fill(kv, pc, prompt, "acme"))
    kv.release(b);
  EXPECT_TRUE(pc.acquire(pc.root("globex"), prompt, 100).empty());
  EXPECT_TRUE(pc.acquire(pc.root(""), prompt, 100).empty());
  EXPECT_EQ(pc.acquire(pc.root("acme"), prompt, 100).size(), 3u);
}

} // namespace
} // namespace gantry::engine
