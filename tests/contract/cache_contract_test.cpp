// The cache::Cache contract: every adapter passes the same suite — the in-process one and the
// shared Redis one (against a real redis-server, a fresh key prefix per cache). The factory gets
// the byte budget; adapters that cannot report process-local stats (a shared cache) report
// max_bytes = 0, and the checks of the bound are skipped for them.
#include <gtest/gtest.h>

#include <memory>

#include "cache/cache.h"
#include "cache/memory_cache.h"
#include "store/redis/redis_cache.h"
#include "support/fake_clock.h"
#include "support/redis_fixture.h"

namespace gantry::cache {
namespace {

using namespace std::chrono_literals;

struct MemoryCacheFactory {
  std::unique_ptr<Cache> make(const Clock &clock, uint64_t max_bytes) {
    return std::make_unique<MemoryCache>(max_bytes, clock);
  }
};

struct RedisCacheFactory {
  std::unique_ptr<Cache> make(const Clock &clock, uint64_t max_bytes) {
    return std::make_unique<store::RedisCache>(testing::fresh_redis_client(clock), "resp",
                                               max_bytes, clock);
  }
};

template <typename Factory> class CacheContract : public ::testing::Test {
protected:
  void make(uint64_t max_bytes) { cache_ = Factory().make(clock_, max_bytes); }
  void SetUp() override { make(uint64_t{1} << 20); }
  std::optional<std::string> get(std::string_view key) {
    auto r = cache_->get(key);
    EXPECT_TRUE(r) << (r ? "" : r.error().message);
    return r ? *r : std::nullopt;
  }

  FakeClock clock_;
  std::unique_ptr<Cache> cache_;
};

using CacheAdapters = ::testing::Types<MemoryCacheFactory, RedisCacheFactory>;
TYPED_TEST_SUITE(CacheContract, CacheAdapters);

TYPED_TEST(CacheContract, PutGetReplaceErase) {
  EXPECT_EQ(this->get("a"), std::nullopt);
  ASSERT_TRUE(this->cache_->put("a", "1", 60s));
  EXPECT_EQ(this->get("a"), "1");
  ASSERT_TRUE(this->cache_->put("a", std::string("\0bytes\xff", 7), 60s));
  EXPECT_EQ(this->get("a"), std::string("\0bytes\xff", 7)) << "values are opaque bytes";
  auto erased = this->cache_->erase("a");
  ASSERT_TRUE(erased);
  EXPECT_TRUE(*erased);
  EXPECT_EQ(this->get("a"), std::nullopt);
  auto again = this->cache_->erase("a");
  ASSERT_TRUE(again);
  EXPECT_FALSE(*again);
}

TYPED_TEST(CacheContract, EntriesExpireAfterTheirTtl) {
  ASSERT_TRUE(this->cache_->put("short", "s", 10s));
  ASSERT_TRUE(this->cache_->put("long", "l", 100s));
  this->clock_.advance(9s);
  EXPECT_EQ(this->get("short"), "s");
  this->clock_.advance(2s);
  EXPECT_EQ(this->get("short"), std::nullopt);
  EXPECT_EQ(this->get("long"), "l");
}

TYPED_TEST(CacheContract, ANonPositiveTtlStoresNothing) {
  (void)this->cache_->put("zero", "z", 0s);
  EXPECT_EQ(this->get("zero"), std::nullopt);
}

TYPED_TEST(CacheContract, TheByteBoundHoldsAndRecentEntriesSurvive) {
  this->make(64 << 10);
  const std::string value(4000, 'v');
  for (int i = 0; i < 200; ++i) {
    (void)this->cache_->put("k" + std::to_string(i), value, 3600s);
    const auto st = this->cache_->stats();
    if (st.max_bytes > 0) {
      ASSERT_LE(st.bytes, st.max_bytes);
    }
  }
  EXPECT_EQ(this->get("k199"), value);
  EXPECT_EQ(this->get("k0"), std::nullopt);
}

TYPED_TEST(CacheContract, StatsCountHitsAndMisses) {
  ASSERT_TRUE(this->cache_->put("a", "1", 60s));
  (void)this->get("a");
  (void)this->get("b");
  const auto st = this->cache_->stats();
  EXPECT_EQ(st.hits, 1u);
  EXPECT_EQ(st.misses, 1u);
  EXPECT_EQ(st.puts, 1u);
}

} // namespace
} // namespace gantry::cache
