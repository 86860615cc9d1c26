// FakeClock (tests/support/fake_clock.h) moves steady and wall time together, to the
// millisecond: the trap where advance(500ms) moved now() but not unix_millis() is gone.
#include "support/fake_clock.h"

#include <gtest/gtest.h>

namespace gantry {
namespace {

using namespace std::chrono_literals;

TEST(FakeClock, SteadyAndWallTimeMoveTogetherToTheMillisecond) {
  FakeClock c;
  const auto t0 = c.now();
  const int64_t ms0 = c.unix_millis();
  EXPECT_EQ(ms0, FakeClock::kStartUnixMillis);
  EXPECT_EQ(c.unix_seconds(), ms0 / 1000);
  c.advance(500ms);
  EXPECT_EQ(c.now() - t0, 500ms);
  EXPECT_EQ(c.unix_millis(), ms0 + 500);
  EXPECT_EQ(c.unix_seconds(), ms0 / 1000) << "a second is not crossed yet";
  c.advance(499'999us);
  EXPECT_EQ(c.unix_millis(), ms0 + 999) << "sub-millisecond steps add up";
  c.advance(1us);
  EXPECT_EQ(c.unix_millis(), ms0 + 1000);
  EXPECT_EQ(c.unix_seconds(), ms0 / 1000 + 1);
}

TEST(SystemClock, WallTimeInMillisAgreesWithSeconds) {
  SystemClock c;
  const int64_t s = c.unix_seconds();
  const int64_t ms = c.unix_millis();
  EXPECT_GE(ms / 1000, s);
  EXPECT_LE(ms / 1000, s + 1);
}

} // namespace
} // namespace gantry
