#include "dashboard/status_history.h"

#include <gtest/gtest.h>

namespace gantry::dashboard {
namespace {

ReadinessSample down(const std::string &model, int64_t t) {
  return {model, t, ModelState::kDown, 0};
}

TEST(StatusHistory, DownSamplesCloseTogetherAreOneIncident) {
  // a: down at 10..30 s (one incident), again at 100 s; b: down at 50 s. Gap: 15 s.
  const std::vector<ReadinessSample> v{down("a", 10000), down("a", 20000), down("b", 50000),
                                       down("a", 30000), down("a", 100000)};
  const auto inc = incidents_from(v, 15000);
  ASSERT_EQ(inc.size(), 3u);
  EXPECT_EQ(inc[0].model, "a"); // newest first
  EXPECT_EQ(inc[0].start_ms, 100000);
  EXPECT_EQ(inc[1].model, "b");
  EXPECT_EQ(inc[2].model, "a");
  EXPECT_EQ(inc[2].start_ms, 10000);
  EXPECT_EQ(inc[2].end_ms, 30000);
}

TEST(StatusHistory, UptimeIsNoDataWithoutSamples) {
  EXPECT_EQ(uptime_ratio({"m", 0, 0}), -1);
  EXPECT_DOUBLE_EQ(uptime_ratio({"m", 3, 4}), 0.75);
}

TEST(MemoryReadinessLog, CountsDegradedAsServingAndStaysBounded) {
  MemoryReadinessLog log(4);
  ASSERT_TRUE(log.append({{"m", 1, ModelState::kUp, 1},
                          {"m", 2, ModelState::kDegraded, 1},
                          {"m", 3, ModelState::kDown, 1},
                          {"m", 4, ModelState::kUp, 1},
                          {"m", 5, ModelState::kDown, 1}}));
  auto c = log.counts(0);
  ASSERT_TRUE(c);
  ASSERT_EQ(c->size(), 1u);
  EXPECT_EQ((*c)[0].total, 4) << "the oldest sample went for the bound";
  EXPECT_EQ((*c)[0].up, 2);
  auto d = log.down_since(0, 1);
  ASSERT_TRUE(d);
  ASSERT_EQ(d->size(), 1u);
  EXPECT_EQ((*d)[0].t_ms, 5) << "the limit keeps the newest";
  ASSERT_TRUE(log.purge(4));
  EXPECT_EQ((*log.counts(0))[0].total, 2);
}

} // namespace
} // namespace gantry::dashboard
