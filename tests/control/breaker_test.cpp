#include "control/breaker.h"
#include "support/fake_clock.h"

#include <gtest/gtest.h>

namespace gantry::control {
namespace {

using namespace std::chrono_literals;

TEST(SpendBreaker, TripsWhenTheWindowSpendExceedsTheRateAndRecoversAfterCooldown) {
  FakeClock clock;
  SpendBreaker b("m", {1.0, 60s, 300s}, clock); // $1/min over 60 s
  EXPECT_TRUE(b.check().ok());
  b.record(0.6);
  clock.advance(10s);
  b.record(0.39);
  EXPECT_TRUE(b.check().ok()); // $0.99 in the window
  b.record(0.02);
  auto st = b.check();
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code, ErrorCode::kCircuitOpen);
  EXPECT_EQ(b.state().trips, 1u);
  clock.advance(299s);
  EXPECT_FALSE(b.check().ok());
  clock.advance(1s);
  EXPECT_TRUE(b.check().ok());
  EXPECT_EQ(b.state().window_usd, 0.0);
}

TEST(SpendBreaker, OldSpendLeavesTheWindow) {
  FakeClock clock;
  SpendBreaker b("m", {1.0, 60s, 300s}, clock);
  b.record(0.9);
  clock.advance(61s);
  b.record(0.9);
  EXPECT_TRUE(b.check().ok());
  EXPECT_NEAR(b.state().window_usd, 0.9, 1e-9);
}

TEST(SpendBreaker, AdminResetClosesIt) {
  FakeClock clock;
  SpendBreaker b("m", {1.0, 60s, 300s}, clock);
  b.record(5);
  EXPECT_FALSE(b.check().ok());
  b.reset();
  EXPECT_TRUE(b.check().ok());
}

TEST(SpendBreaker, OffWhenNoThreshold) {
  FakeClock clock;
  SpendBreaker b("m", {0, 60s, 300s}, clock);
  b.record(1e9);
  EXPECT_TRUE(b.check().ok());
}

} // namespace
} // namespace gantry::control
