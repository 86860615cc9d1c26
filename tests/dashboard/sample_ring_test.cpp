#include "dashboard/sample_ring.h"

#include <gtest/gtest.h>

#include <cmath>
#include <string>

namespace gantry::dashboard {
namespace {

// One scrape as /metrics would render it: `ok` 200s and `failed` 503s so far, and a TTFT
// histogram with `fast` observations under 10 ms and `slow` ones between 100 ms and 1 s.
std::vector<PromSample> scrape(double ok, double failed, double fast, double slow,
                               double tokens = 0, double waiting = 0) {
  std::string t;
  t += "gantry:requests_total{model_name=\"m\",endpoint=\"/v1/completions\",status=\"200\","
       "project=\"\"} " +
       std::to_string(ok) + "\n";
  t += "gantry:requests_total{model_name=\"m\",endpoint=\"/v1/completions\",status=\"503\","
       "project=\"\"} " +
       std::to_string(failed) + "\n";
  t += "gantry:time_to_first_token_seconds_bucket{model_name=\"m\",le=\"0.01\"} " +
       std::to_string(fast) + "\n";
  t += "gantry:time_to_first_token_seconds_bucket{model_name=\"m\",le=\"0.1\"} " +
       std::to_string(fast) + "\n";
  t += "gantry:time_to_first_token_seconds_bucket{model_name=\"m\",le=\"1\"} " +
       std::to_string(fast + slow) + "\n";
  t += "gantry:time_to_first_token_seconds_bucket{model_name=\"m\",le=\"+Inf\"} " +
       std::to_string(fast + slow) + "\n";
  t += "gantry:generation_tokens_total{model_name=\"m\"} " + std::to_string(tokens) + "\n";
  t += "gantry:num_requests_waiting{model_name=\"m\"} " + std::to_string(waiting) + "\n";
  t += "gantry:kv_cache_usage_perc{model_name=\"m\"} 0.25\n";
  t += "gantry:circuit_breaker_open{model_name=\"m\"} 1\n";
  t += "gantry:jobs_total{outcome=\"succeeded\"} 4\n";
  return parse_prom_text(t);
}

TEST(SampleRing, RatesComeFromConsecutiveScrapes) {
  SampleRing ring(100, 10);
  ring.add(1000, scrape(10, 0, 0, 0, 100));
  ring.add(2000, scrape(15, 2, 0, 0, 130, 3));
  ring.add(4000, scrape(25, 2, 0, 0, 190, 1));
  const auto p = ring.points();
  ASSERT_EQ(p.size(), 3u);
  EXPECT_EQ(p[0].req_2xx, 0) << "no rate before a second scrape";
  EXPECT_DOUBLE_EQ(p[1].req_2xx, 5);
  EXPECT_DOUBLE_EQ(p[1].req_5xx, 2);
  EXPECT_DOUBLE_EQ(p[1].tokens_out, 30);
  EXPECT_DOUBLE_EQ(p[2].req_2xx, 5) << "10 more over 2 s";
  EXPECT_DOUBLE_EQ(p[2].tokens_out, 30);
  EXPECT_EQ(p[1].waiting, 3);
  EXPECT_EQ(p[2].waiting, 1);
  EXPECT_EQ(p[2].kv_usage_max, 0.25);
  const auto latest = ring.latest();
  ASSERT_EQ(latest.models.size(), 1u);
  EXPECT_EQ(latest.models[0].name, "m");
  EXPECT_TRUE(latest.models[0].breaker_open);
  EXPECT_EQ(latest.requests_by_status.at("200"), 25);
  EXPECT_EQ(latest.jobs_by_outcome.at("succeeded"), 4);
}

TEST(SampleRing, ARestartCountsFromZeroInsteadOfANegativeRate) {
  SampleRing ring;
  ring.add(1000, scrape(50, 0, 0, 0));
  ring.add(2000, scrape(3, 0, 0, 0));
  EXPECT_DOUBLE_EQ(ring.points().back().req_2xx, 3);
}

TEST(SampleRing, QuantilesCoverTheWindowAndAreNullWhenIdle) {
  SampleRing ring(100, 2);
  ring.add(1000, scrape(0, 0, 0, 0));
  EXPECT_TRUE(std::isnan(ring.points().back().ttft_p50));
  ring.add(2000, scrape(0, 0, 90, 10)); // 90 fast, 10 slow
  auto p = ring.points().back();
  EXPECT_LE(p.ttft_p50, 0.01);
  EXPECT_GT(p.ttft_p99, 0.1);
  EXPECT_LE(p.ttft_p99, 1.0);
  // Nothing new for longer than the window: no latency to report, not the old one.
  ring.add(3000, scrape(0, 0, 90, 10));
  ring.add(4000, scrape(0, 0, 90, 10));
  EXPECT_TRUE(std::isnan(ring.points().back().ttft_p99));
}

TEST(SampleRing, QuantileInterpolatesLikeHistogramQuantile) {
  // 10 in (0, 1], 10 in (1, 2]: the median is the top of the first bucket, p75 halfway up the
  // second; a rank in +Inf reports the highest finite bound.
  const std::vector<std::pair<double, double>> cum{{1, 10}, {2, 20}, {INFINITY, 20}};
  EXPECT_DOUBLE_EQ(SampleRing::quantile(0.5, cum), 1);
  EXPECT_DOUBLE_EQ(SampleRing::quantile(0.75, cum), 1.5);
  const std::vector<std::pair<double, double>> tail{{1, 1}, {INFINITY, 2}};
  EXPECT_DOUBLE_EQ(SampleRing::quantile(0.99, tail), 1);
  EXPECT_TRUE(std::isnan(SampleRing::quantile(0.5, {{1, 0}, {INFINITY, 0}})));
}

TEST(SampleRing, HoldsAtMostItsCapacityAndThinsToTheNewest) {
  SampleRing ring(50, 10);
  for (int i = 1; i <= 200; ++i)
    ring.add(i * 1000, scrape(i, 0, 0, 0));
  EXPECT_EQ(ring.size(), 50u);
  auto all = ring.points();
  ASSERT_EQ(all.size(), 50u);
  EXPECT_EQ(all.front().t_ms, 151000);
  EXPECT_EQ(all.back().t_ms, 200000);
  auto thin = ring.points(0, 10);
  EXPECT_LE(thin.size(), 10u);
  EXPECT_EQ(thin.back().t_ms, 200000) << "the chart's right edge is now";
  auto recent = ring.points(195000);
  ASSERT_EQ(recent.size(), 5u);
  EXPECT_EQ(recent.front().t_ms, 196000);
}

} // namespace
} // namespace gantry::dashboard
