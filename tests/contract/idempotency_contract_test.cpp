// The IdempotencyStore contract: every adapter passes the same suite — the in-process one and the
// shared Redis one (against a real redis-server, a fresh key prefix per store). The factory gets
// the limits the test needs (ttl, byte bound, per-entry cap); the clock is the suite's FakeClock.
#include <gtest/gtest.h>

#include <memory>

#include "control/idempotency.h"
#include "store/redis/redis_idempotency_store.h"
#include "support/fake_clock.h"
#include "support/redis_fixture.h"

namespace gantry::control {
namespace {

using namespace std::chrono_literals;
using O = IdempotencyStore::Outcome;

struct MemoryIdempotencyFactory {
  std::unique_ptr<IdempotencyStore> make(const Clock &clock, IdempotencyLimits limits) {
    return std::make_unique<MemoryIdempotencyStore>(clock, limits);
  }
};

struct RedisIdempotencyFactory {
  std::unique_ptr<IdempotencyStore> make(const Clock &clock, IdempotencyLimits limits) {
    return std::make_unique<store::RedisIdempotencyStore>(testing::fresh_redis_client(clock), clock,
                                                          limits);
  }
};

template <typename Factory> class IdempotencyContract : public ::testing::Test {
protected:
  void make(IdempotencyLimits limits = {}) { store_ = Factory().make(clock_, limits); }
  void SetUp() override { make(); }

  static StoredResponse json_response(std::string body) {
    StoredResponse r;
    r.status = 200;
    r.content_type = "application/json";
    r.headers = {{"x-gantry-cache", "miss"}, {"x-ratelimit-limit-requests", "60"}};
    r.body = std::move(body);
    return r;
  }
  static StoredResponse stream(int events, size_t each) {
    StoredResponse r;
    r.sse = true;
    r.headers = {{"x-request-id", "req_1"}};
    for (int i = 0; i < events; ++i)
      r.events.push_back(std::string(each, static_cast<char>('a' + i % 26)));
    r.events.push_back("[DONE]");
    return r;
  }

  FakeClock clock_;
  std::unique_ptr<IdempotencyStore> store_;
};

using IdempotencyAdapters = ::testing::Types<MemoryIdempotencyFactory, RedisIdempotencyFactory>;
TYPED_TEST_SUITE(IdempotencyContract, IdempotencyAdapters);

TYPED_TEST(IdempotencyContract, FirstThenInFlightThenReplayAndMismatch) {
  auto &s = *this->store_;
  EXPECT_EQ(s.begin("k", "body1").outcome, O::kFirst);
  EXPECT_EQ(s.begin("k", "body1").outcome, O::kInFlight);
  EXPECT_EQ(s.begin("k", "body2").outcome, O::kMismatch);
  s.complete("k", this->json_response("{\"x\":1}"));
  auto b = s.begin("k", "body1");
  ASSERT_EQ(b.outcome, O::kReplay);
  ASSERT_TRUE(b.response);
  EXPECT_EQ(b.response->status, 200);
  EXPECT_EQ(b.response->content_type, "application/json");
  EXPECT_EQ(b.response->body, "{\"x\":1}");
  EXPECT_EQ(b.response->headers, this->json_response("").headers);
  EXPECT_FALSE(b.response->sse);
  EXPECT_EQ(s.begin("k", "body2").outcome, O::kMismatch);
  EXPECT_EQ(s.begin("other", "body1").outcome, O::kFirst) << "keys are independent";
}

TYPED_TEST(IdempotencyContract, AStreamIsReplayedEventForEvent) {
  auto &s = *this->store_;
  ASSERT_EQ(s.begin("k", "d").outcome, O::kFirst);
  const StoredResponse sent = this->stream(5, 10);
  s.complete("k", sent);
  auto b = s.begin("k", "d");
  ASSERT_EQ(b.outcome, O::kReplay);
  EXPECT_TRUE(b.response->sse);
  EXPECT_EQ(b.response->events, sent.events);
  EXPECT_EQ(b.response->headers, sent.headers);
}

TYPED_TEST(IdempotencyContract, AbandonedKeysRunAgainAndEntriesExpire) {
  this->make({.ttl = 60s});
  auto &s = *this->store_;
  EXPECT_EQ(s.begin("k", "b").outcome, O::kFirst);
  s.abandon("k");
  EXPECT_EQ(s.begin("k", "b").outcome, O::kFirst);
  s.complete("k", this->json_response("{}"));
  this->clock_.advance(59s);
  EXPECT_EQ(s.begin("k", "b").outcome, O::kReplay);
  this->clock_.advance(2s);
  EXPECT_EQ(s.begin("k", "b").outcome, O::kFirst);
  EXPECT_EQ(s.stats().entries, 1u);
}

TYPED_TEST(IdempotencyContract, AResponseOverTheEntryCapIsNotStoredAndItsRetryIsTold) {
  this->make({.max_entry_bytes = 4096});
  auto &s = *this->store_;
  ASSERT_EQ(s.begin("big", "d").outcome, O::kFirst);
  s.complete("big", this->stream(100, 100)); // ~10 KB
  EXPECT_EQ(s.begin("big", "d").outcome, O::kNotStored);
  EXPECT_EQ(s.begin("big", "other").outcome, O::kMismatch);
  EXPECT_LT(s.stats().bytes, 4096u);
  EXPECT_EQ(s.stats().too_large, 1u);
  // A recorder that stopped copying at its cap reports a truncated response: likewise.
  ASSERT_EQ(s.begin("cut", "d").outcome, O::kFirst);
  StoredResponse cut;
  cut.truncated = true;
  s.complete("cut", cut);
  EXPECT_EQ(s.begin("cut", "d").outcome, O::kNotStored);
  EXPECT_EQ(s.max_entry_bytes(), 4096u);
}

// Security audit H8: one expensive stream replayed (as a cache hit) under fresh keys must not
// grow the store past its bound, however many replays there are.
TYPED_TEST(IdempotencyContract, ManyLargeResponsesUnderFreshKeysStayWithinTheByteBound) {
  const size_t max_bytes = size_t{1} << 20;
  this->make({.max_bytes = max_bytes, .max_entry_bytes = 64 << 10});
  auto &s = *this->store_;
  for (int i = 0; i < 500; ++i) {
    const std::string key = "replay-" + std::to_string(i);
    ASSERT_EQ(s.begin(key, "same body").outcome, O::kFirst);
    s.complete(key, this->stream(60, 1000)); // ~61 KB, under the per-entry cap
    const auto st = s.stats();
    if (st.max_bytes > 0) {
      ASSERT_LE(st.bytes, max_bytes) << "after " << i + 1 << " responses";
    }
  }
  const StoredResponse huge = this->stream(4000, 1000); // ~4 MB, over the cap: never kept
  for (int i = 0; i < 500; ++i) {
    const std::string key = "huge-" + std::to_string(i);
    ASSERT_EQ(s.begin(key, "same body").outcome, O::kFirst);
    s.complete(key, huge);
  }
  const auto st = s.stats();
  if (st.max_bytes > 0) {
    EXPECT_LE(st.bytes, max_bytes);
  }
  EXPECT_GT(st.evictions, 0u);
  EXPECT_EQ(st.too_large, 500u);
  // The newest stored responses are still there to replay.
  EXPECT_EQ(s.begin("replay-499", "same body").outcome, O::kReplay);
}

TYPED_TEST(IdempotencyContract, EvictionTakesTheLeastRecentlyUsedFirst) {
  // Room for about three 20 KB responses.
  this->make({.max_bytes = 70'000, .max_entry_bytes = 30'000});
  auto &s = *this->store_;
  for (const char *k : {"a", "b", "c"}) {
    ASSERT_EQ(s.begin(k, "d").outcome, O::kFirst);
    s.complete(k, this->stream(20, 1000));
  }
  EXPECT_EQ(s.begin("a", "d").outcome, O::kReplay); // "a" is now the most recently used
  ASSERT_EQ(s.begin("d", "d").outcome, O::kFirst);
  s.complete("d", this->stream(20, 1000));
  EXPECT_EQ(s.begin("a", "d").outcome, O::kReplay);
  EXPECT_EQ(s.begin("b", "d").outcome, O::kFirst) << "b was the least recently used";
  EXPECT_GE(s.stats().evictions, 1u);
}

TYPED_TEST(IdempotencyContract, BoundedByEntryCount) {
  this->make({.ttl = 3600s, .max_entries = 3});
  auto &s = *this->store_;
  for (int i = 0; i < 10; ++i)
    (void)s.begin("k" + std::to_string(i), "b");
  EXPECT_LE(s.stats().entries, 3u);
  EXPECT_EQ(s.begin("k9", "b").outcome, O::kInFlight); // the newest survive
}

} // namespace
} // namespace gantry::control
