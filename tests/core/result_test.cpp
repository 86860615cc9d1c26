#include "core/result.h"

#include <gtest/gtest.h>

namespace gantry {
namespace {

Result<int> parse_positive(int v) {
  if (v <= 0)
    return Err(Error::invalid("must be positive", "v"));
  return v;
}

Result<int> doubled(int v) {
  GANTRY_ASSIGN_OR_RETURN(int x, parse_positive(v));
  return 2 * x;
}

TEST(ResultTest, CarriesValuesAndErrors) {
  EXPECT_EQ(*doubled(4), 8);
  auto r = doubled(-1);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(r.error().param, "v");
}

TEST(ResultTest, EveryCodeMapsToOneStatusAndType) {
  EXPECT_EQ(http_status(ErrorCode::kInvalidArgument), 400);
  EXPECT_EQ(http_status(ErrorCode::kNotFound), 404);
  EXPECT_EQ(http_status(ErrorCode::kPayloadTooLarge), 413);
  EXPECT_EQ(http_status(ErrorCode::kQueueFull), 429);
  EXPECT_EQ(http_status(ErrorCode::kUnavailable), 503);
  EXPECT_EQ(openai_error_type(ErrorCode::kRateLimited), "rate_limit_error");
  EXPECT_EQ(openai_error_type(ErrorCode::kUnauthorized), "authentication_error");
  EXPECT_EQ(error_code_name(ErrorCode::kContextLengthExceeded), "context_length_exceeded");
}

} // namespace
} // namespace gantry
