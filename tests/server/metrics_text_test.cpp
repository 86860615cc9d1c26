// Audit L1: label values in the hand-streamed metric families are escaped as the Prometheus
// text format requires.
#include "server/metrics_text.h"

#include <gtest/gtest.h>

namespace gantry::server {
namespace {

TEST(MetricsText, LabelValuesAreEscaped) {
  EXPECT_EQ(label("model_name", "stories260K"), R"(model_name="stories260K")");
  EXPECT_EQ(label("project", "a\"b\\c\nd"), R"(project="a\"b\\c\nd")");
  EXPECT_EQ(label("owner", "x\"} 1\ngantry:forged 1"), R"(owner="x\"} 1\ngantry:forged 1")");
  EXPECT_EQ(label("cache", ""), R"(cache="")");
}

} // namespace
} // namespace gantry::server
