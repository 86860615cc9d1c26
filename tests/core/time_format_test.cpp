#include "core/time_format.h"

#include <gtest/gtest.h>

#include <ctime>

namespace gantry {
namespace {

// The calendar arithmetic against the C library's gmtime_r + timegm, which it replaced: every
// day from 1901 to 2200 (leap years, the 2000 and 2100 century rules) at three times of day,
// and before the epoch.
int64_t libc_month_start(int64_t unix_seconds) {
  const auto t = static_cast<std::time_t>(unix_seconds);
  std::tm tm{};
  gmtime_r(&t, &tm);
  tm.tm_mday = 1;
  tm.tm_hour = tm.tm_min = tm.tm_sec = 0;
  return static_cast<int64_t>(timegm(&tm));
}

TEST(TimeFormat, MonthStartAgreesWithTheCLibraryOverThreeCenturies) {
  const int64_t first = -2'177'452'800; // 1901-01-01
  const int64_t last = 7'258'118'400;   // 2200-01-01
  int checked = 0;
  for (int64_t day = first; day < last; day += 86'400) {
    for (const int64_t s : {day, day + 43'210, day + 86'399}) {
      ASSERT_EQ(utc_month_start(s), libc_month_start(s)) << s;
      ++checked;
    }
  }
  EXPECT_GT(checked, 300'000);
}

TEST(TimeFormat, MonthStartOfKnownDates) {
  EXPECT_EQ(utc_month_start(0), 0);                         // 1970-01-01
  EXPECT_EQ(utc_month_start(951'782'400), 949'363'200);     // 2000-02-29 -> 2000-02-01
  EXPECT_EQ(utc_month_start(1'798'761'599), 1'796'083'200); // 2026-12-31 23:59:59 -> 12-01
  EXPECT_EQ(utc_month_start(1'798'761'600), 1'798'761'600); // 2027-01-01 is its own start
  EXPECT_EQ(utc_month_start(-1), -2'678'400);               // 1969-12-31 -> 1969-12-01
}

} // namespace
} // namespace gantry
