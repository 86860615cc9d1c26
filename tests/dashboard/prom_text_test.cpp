#include "dashboard/prom_text.h"

#include <gtest/gtest.h>

#include <cmath>

namespace gantry::dashboard {
namespace {

TEST(PromText, ReadsSamplesLabelsAndSpecialValues) {
  const auto s = parse_prom_text("# HELP gantry:x X.\n"
                                 "# TYPE gantry:x counter\n"
                                 "gantry:x 3\n"
                                 "gantry:y{model_name=\"m\",le=\"+Inf\"} 7 1700000000000\n"
                                 "gantry:z{v=\"a\\\"b\\\\c\"} +Inf\n"
                                 "\n"
                                 "gantry:nan NaN\n");
  ASSERT_EQ(s.size(), 4u);
  EXPECT_EQ(s[0].name, "gantry:x");
  EXPECT_EQ(s[0].value, 3);
  EXPECT_TRUE(s[0].labels.empty());
  EXPECT_EQ(s[1].label("model_name"), "m");
  EXPECT_EQ(s[1].label("le"), "+Inf");
  EXPECT_EQ(s[1].value, 7) << "the timestamp is not the value";
  EXPECT_EQ(s[2].label("v"), "a\"b\\c");
  EXPECT_TRUE(std::isinf(s[2].value));
  EXPECT_TRUE(std::isnan(s[3].value));
  EXPECT_EQ(s[0].label("absent"), "");
}

TEST(PromText, SkipsLinesThatDoNotParse) {
  const auto s = parse_prom_text("gantry:ok 1\ngantry:bad{x=\"unterminated} 2\ngantry:word abc\n");
  ASSERT_EQ(s.size(), 1u);
  EXPECT_EQ(s[0].name, "gantry:ok");
}

} // namespace
} // namespace gantry::dashboard
