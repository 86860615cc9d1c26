#include "control/idempotency.h"

#include <gtest/gtest.h>

namespace gantry::control {
namespace {

using namespace std::chrono_literals;
using O = IdempotencyStore::Outcome;

TEST(Idempotency, FirstThenInFlightThenReplayAndMismatch) {
  FakeClock clock;
  IdempotencyStore s(clock);
  EXPECT_EQ(s.begin("k", "body1").outcome, O::kFirst);
  EXPECT_EQ(s.begin("k", "body1").outcome, O::kInFlight);
  EXPECT_EQ(s.begin("k", "body2").outcome, O::kMismatch);
  StoredResponse r;
  r.status = 200;
  r.body = "{\"x\":1}";
  s.complete("k", r);
  auto b = s.begin("k", "body1");
  ASSERT_EQ(b.outcome, O::kReplay);
  EXPECT_EQ(b.response->body, "{\"x\":1}");
  EXPECT_EQ(s.begin("k", "body2").outcome, O::kMismatch);
}

TEST(Idempotency, AbandonedKeysRunAgainAndEntriesExpire) {
  FakeClock clock;
  IdempotencyStore s(clock, 60s, 10);
  EXPECT_EQ(s.begin("k", "b").outcome, O::kFirst);
  s.abandon("k");
  EXPECT_EQ(s.begin("k", "b").outcome, O::kFirst);
  s.complete("k", {});
  clock.advance(61s);
  EXPECT_EQ(s.begin("k", "b").outcome, O::kFirst);
}

TEST(Idempotency, BoundedByEntryCount) {
  FakeClock clock;
  IdempotencyStore s(clock, 3600s, 3);
  for (int i = 0; i < 10; ++i)
    s.begin("k" + std::to_string(i), "b");
  EXPECT_LE(s.size(), 3u);
  EXPECT_EQ(s.begin("k9", "b").outcome, O::kInFlight); // the newest survive
}

} // namespace
} // namespace gantry::control
