// The embedded idempotency store's own details and the stored-response encoding; the behaviour
// every adapter shares is in tests/contract/idempotency_contract_test.cpp.
#include "control/idempotency.h"
#include "support/fake_clock.h"

#include <gtest/gtest.h>

namespace gantry::control {
namespace {

using namespace std::chrono_literals;
using O = IdempotencyStore::Outcome;

StoredResponse sample() {
  StoredResponse r;
  r.status = 201;
  r.content_type = "application/json";
  r.headers = {{"a", "1"}, {"x-empty", ""}};
  r.body = std::string("{\"x\":\"\0\xff\"}", 11);
  r.sse = true;
  r.events = {"{\"choices\":[]}", "", "[DONE]"};
  return r;
}

TEST(StoredResponseEncoding, RoundTripsEveryField) {
  const StoredResponse r = sample();
  const std::string bytes = encode_stored_response(r);
  EXPECT_EQ(bytes.size(), encoded_size(r));
  auto back = decode_stored_response(bytes);
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_EQ(back->status, r.status);
  EXPECT_EQ(back->content_type, r.content_type);
  EXPECT_EQ(back->headers, r.headers);
  EXPECT_EQ(back->body, r.body);
  EXPECT_EQ(back->sse, r.sse);
  EXPECT_EQ(back->events, r.events);
}

TEST(StoredResponseEncoding, RefusesTruncatedCorruptedOrForeignBytes) {
  const std::string bytes = encode_stored_response(sample());
  for (size_t n = 0; n < bytes.size(); ++n)
    EXPECT_FALSE(decode_stored_response(std::string_view(bytes).substr(0, n))) << "prefix " << n;
  EXPECT_FALSE(decode_stored_response(bytes + "x")) << "trailing bytes";
  std::string other_version = bytes;
  other_version[3] = 2;
  EXPECT_FALSE(decode_stored_response(other_version));
  // A header count far beyond the bytes left is corruption, not an allocation.
  std::string huge_count = encode_stored_response(StoredResponse{});
  huge_count[4 + 4 + 4 + 4 + 3] = '\x7f';
  EXPECT_FALSE(decode_stored_response(huge_count));
}

TEST(MemoryIdempotencyStore, ChargesEachKeyItsBytesAndGivesThemBackOnAbandon) {
  FakeClock clock;
  MemoryIdempotencyStore s(clock);
  ASSERT_EQ(s.begin("k", "digest").outcome, O::kFirst);
  const uint64_t claimed = s.stats().bytes;
  EXPECT_EQ(claimed, 1 + 6 + MemoryIdempotencyStore::kEntryOverhead);
  const StoredResponse r = sample();
  s.complete("k", r);
  EXPECT_EQ(s.stats().bytes, claimed + encoded_size(r));
  EXPECT_EQ(s.stats().stored, 1u);
  s.abandon("k");
  EXPECT_EQ(s.stats().bytes, 0u);
  EXPECT_EQ(s.size(), 0u);
}

TEST(MemoryIdempotencyStore, ExpiredEntriesGiveTheirBytesBack) {
  FakeClock clock;
  MemoryIdempotencyStore s(clock, {.ttl = 60s});
  ASSERT_EQ(s.begin("a", "d").outcome, O::kFirst);
  s.complete("a", sample());
  clock.advance(61s);
  ASSERT_EQ(s.begin("b", "d").outcome, O::kFirst); // any call drops what expired
  EXPECT_EQ(s.size(), 1u);
  EXPECT_EQ(s.stats().bytes, 1 + 1 + MemoryIdempotencyStore::kEntryOverhead);
  EXPECT_EQ(s.stats().evictions, 0u) << "expiry is not eviction";
}

TEST(MemoryIdempotencyStore, ACompletionAfterEvictionKeepsNothing) {
  FakeClock clock;
  MemoryIdempotencyStore s(clock, {.max_entries = 1});
  ASSERT_EQ(s.begin("a", "d").outcome, O::kFirst);
  ASSERT_EQ(s.begin("b", "d").outcome, O::kFirst); // evicts "a" while it runs
  s.complete("a", sample());
  EXPECT_EQ(s.begin("a", "d").outcome, O::kFirst);
}

} // namespace
} // namespace gantry::control
