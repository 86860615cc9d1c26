#include "server/call_recorder.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <limits>
#include <random>
#include <string>

namespace gantry::server {
namespace {

std::string printf_cost(double usd) {
  char buf[400];
  std::snprintf(buf, sizeof buf, "%.8f", usd);
  return buf;
}

// x-gantry-cost-usd has always been printf's "%.8f": the faster formatting must print the same
// text for every value, rounding halfway cases and tiny, huge and special values included.
TEST(FormatCost, PrintsWhatPrintfPrints) {
  for (double v : {0.0, -0.0, 1.0, 0.1, 0.000000005, 0.000000015, 0.000000025, 0.123456785, 1e-9,
                   1e-300, 5e-324, 12345.678901234, 1e20, 1e55, 1e60, 1e300,
                   std::numeric_limits<double>::max(), -3.5e-7}) {
    EXPECT_EQ(format_cost(v), printf_cost(v)) << v;
  }
  std::mt19937_64 rng(12);
  std::uniform_real_distribution<double> exponent(-12, 6);
  for (int i = 0; i < 100'000; ++i) {
    const double v = std::pow(10.0, exponent(rng)) * (1 + (rng() % 1000) / 1000.0);
    ASSERT_EQ(format_cost(v), printf_cost(v)) << v;
  }
  EXPECT_EQ(format_cost(std::numeric_limits<double>::infinity()), printf_cost(INFINITY));
  EXPECT_EQ(format_cost(std::nan("")), printf_cost(std::nan("")));
}

} // namespace
} // namespace gantry::server
