// The hand-written response head's Date header is formatted from the time it is given.
#include "http/wire.h"

#include <gtest/gtest.h>

namespace gantry::http::detail {
namespace {

TEST(Wire, HttpDateFormatsTheGivenTimeAsImfFixdate) {
  EXPECT_EQ(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
  EXPECT_EQ(http_date(1'700'000'000), "Tue, 14 Nov 2023 22:13:20 GMT");
  EXPECT_EQ(http_date(1'700'000'001), "Tue, 14 Nov 2023 22:13:21 GMT") << "a new second";
}

} // namespace
} // namespace gantry::http::detail
