#include "http/request_id.h"

#include <gtest/gtest.h>

namespace gantry::http {
namespace {

TEST(RequestIdTest, SanitizeKeepsSafeCharacters) {
  EXPECT_EQ(sanitize_request_id("abc-DEF_1.2"), "abc-DEF_1.2");
  EXPECT_EQ(sanitize_request_id("a b\r\nc<script>"), "abcscript");
  EXPECT_EQ(sanitize_request_id("\r\n "), "");
}

TEST(RequestIdTest, SanitizeTruncates) {
  std::string longer(300, 'x');
  EXPECT_EQ(sanitize_request_id(longer).size(), kMaxRequestIdLength);
}

TEST(RequestIdTest, GeneratedIdsAreHexAndDistinct) {
  RequestIdGenerator gen(42);
  std::string a = gen.next();
  std::string b = gen.next();
  EXPECT_EQ(a.size(), 32u);
  EXPECT_NE(a, b);
  EXPECT_EQ(a.find_first_not_of("0123456789abcdef"), std::string::npos) << a;
}

} // namespace
} // namespace gantry::http
