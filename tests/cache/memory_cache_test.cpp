#include "cache/memory_cache.h"
#include "support/fake_clock.h"

#include <gtest/gtest.h>

#include <thread>
#include <vector>

namespace gantry::cache {
namespace {

using std::chrono::seconds;

std::optional<std::string> get(MemoryCache &c, std::string_view key) {
  auto r = c.get(key);
  EXPECT_TRUE(r.ok());
  return r.ok() ? *r : std::nullopt;
}

TEST(MemoryCacheTest, StoresReplacesAndErases) {
  FakeClock clock;
  MemoryCache c(1 << 20, clock);
  EXPECT_EQ(get(c, "a"), std::nullopt);
  ASSERT_TRUE(c.put("a", "one", seconds(60)).ok());
  EXPECT_EQ(get(c, "a"), "one");
  ASSERT_TRUE(c.put("a", "two!", seconds(60)).ok());
  EXPECT_EQ(get(c, "a"), "two!");
  auto st = c.stats();
  EXPECT_EQ(st.entries, 1u);
  EXPECT_EQ(st.bytes, MemoryCache::entry_bytes("a", "two!"));
  EXPECT_EQ(st.hits, 2u);
  EXPECT_EQ(st.misses, 1u);
  EXPECT_TRUE(*c.erase("a"));
  EXPECT_FALSE(*c.erase("a"));
  EXPECT_EQ(get(c, "a"), std::nullopt);
  EXPECT_EQ(c.stats().bytes, 0u);
  EXPECT_EQ(c.stats().entries, 0u);
}

// Inserting far more than the budget keeps the accounted bytes under it at every step, and the
// survivors are exactly the most recently used entries.
TEST(MemoryCacheTest, LruEvictionKeepsBytesUnderTheBound) {
  FakeClock clock;
  const std::string value(1000, 'x');
  const uint64_t per = MemoryCache::entry_bytes("key-000", value);
  const uint64_t bound = per * 10 + per / 2; // room for exactly 10 entries
  MemoryCache c(bound, clock);
  for (int i = 0; i < 100; ++i) {
    char key[16];
    std::snprintf(key, sizeof key, "key-%03d", i);
    ASSERT_TRUE(c.put(key, value, seconds(60)).ok());
    ASSERT_LE(c.stats().bytes, bound) << "after " << key;
    // Keep key-000 hot: it must survive while colder keys are evicted.
    if (i > 0) {
      EXPECT_TRUE(get(c, "key-000").has_value()) << "after " << key;
    }
  }
  const auto st = c.stats();
  EXPECT_EQ(st.entries, 10u);
  EXPECT_EQ(st.evictions, 90u);
  EXPECT_EQ(st.bytes, 10 * per);
  EXPECT_TRUE(get(c, "key-000").has_value());
  for (int i = 91; i < 100; ++i) {
    EXPECT_TRUE(get(c, "key-0" + std::to_string(i)).has_value()) << i;
  }
  EXPECT_FALSE(get(c, "key-090").has_value());
  EXPECT_FALSE(get(c, "key-001").has_value());
}

TEST(MemoryCacheTest, EntryLargerThanTheBudgetIsRefusedWithoutEvicting) {
  FakeClock clock;
  MemoryCache c(1000, clock);
  ASSERT_TRUE(c.put("small", "v", seconds(60)).ok());
  ASSERT_TRUE(c.put("big", std::string(2000, 'x'), seconds(60)).ok());
  EXPECT_FALSE(get(c, "big").has_value());
  EXPECT_TRUE(get(c, "small").has_value());
  EXPECT_EQ(c.stats().rejected, 1u);
  EXPECT_EQ(c.stats().evictions, 0u);
}

TEST(MemoryCacheTest, EntriesExpireAfterTheirTtl) {
  FakeClock clock;
  MemoryCache c(1 << 20, clock);
  ASSERT_TRUE(c.put("short", "s", seconds(10)).ok());
  ASSERT_TRUE(c.put("long", "l", seconds(100)).ok());
  clock.advance(seconds(9));
  EXPECT_EQ(get(c, "short"), "s");
  clock.advance(seconds(1)); // exactly at the deadline: gone
  EXPECT_EQ(get(c, "short"), std::nullopt);
  EXPECT_EQ(get(c, "long"), "l");
  clock.advance(seconds(90));
  EXPECT_EQ(get(c, "long"), std::nullopt);
  const auto st = c.stats();
  EXPECT_EQ(st.expirations, 2u);
  EXPECT_EQ(st.entries, 0u);
  EXPECT_EQ(st.bytes, 0u);
}

TEST(MemoryCacheTest, ZeroTtlStoresNothing) {
  FakeClock clock;
  MemoryCache c(1 << 20, clock);
  ASSERT_TRUE(c.put("k", "v", seconds(0)).ok());
  EXPECT_EQ(get(c, "k"), std::nullopt);
  ASSERT_TRUE(c.put("k", "v", seconds(5)).ok());
  ASSERT_TRUE(c.put("k", "v2", seconds(0)).ok()); // replacing with ttl 0 drops the old value
  EXPECT_EQ(get(c, "k"), std::nullopt);
}

// Expired entries are reclaimed before any live entry is evicted, even when the expired ones
// are the most recently used.
TEST(MemoryCacheTest, ExpiredEntriesGoBeforeLiveOnes) {
  FakeClock clock;
  const std::string value(100, 'v');
  const uint64_t per = MemoryCache::entry_bytes("k0", value);
  MemoryCache c(per * 3, clock);
  ASSERT_TRUE(c.put("k0", value, seconds(1000)).ok());
  ASSERT_TRUE(c.put("k1", value, seconds(5)).ok());
  ASSERT_TRUE(c.put("k2", value, seconds(5)).ok());
  clock.advance(seconds(6));
  ASSERT_TRUE(c.put("k3", value, seconds(1000)).ok());
  ASSERT_TRUE(c.put("k4", value, seconds(1000)).ok());
  EXPECT_TRUE(get(c, "k0").has_value()); // the least recently used, but alive
  EXPECT_EQ(c.stats().evictions, 0u);
  EXPECT_EQ(c.stats().expirations, 2u);
}

TEST(MemoryCacheTest, ConcurrentUseKeepsTheAccountingExact) {
  FakeClock clock; // not advanced: only the cache is shared between threads
  const uint64_t bound = 64 * 1024;
  MemoryCache c(bound, clock);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&c, t] {
      for (int i = 0; i < 2000; ++i) {
        const std::string key = "t" + std::to_string(t) + "-" + std::to_string(i % 300);
        (void)c.put(key, std::string(static_cast<size_t>(i % 500), 'x'), seconds(60));
        (void)c.get("t" + std::to_string((t + 1) % 4) + "-" + std::to_string(i % 300));
      }
    });
  }
  for (auto &th : threads)
    th.join();
  const auto st = c.stats();
  EXPECT_LE(st.bytes, bound);
  // Recount: erase every possible key and check the accounting returns to zero.
  for (int t = 0; t < 4; ++t) {
    for (int i = 0; i < 300; ++i)
      (void)c.erase("t" + std::to_string(t) + "-" + std::to_string(i));
  }
  EXPECT_EQ(c.stats().bytes, 0u);
  EXPECT_EQ(c.stats().entries, 0u);
}

} // namespace
} // namespace gantry::cache
