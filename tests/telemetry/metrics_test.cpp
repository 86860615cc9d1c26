#include "telemetry/metrics.h"

#include <gtest/gtest.h>

#include <thread>

namespace gantry::telemetry {
namespace {

TEST(Metrics, CountersGaugesAndLabelsRender) {
  Registry r;
  r.counter("requests_total", "Requests.", {{"model_name", "a"}}).inc();
  r.counter("requests_total", "Requests.", {{"model_name", "a"}}).inc(2);
  r.counter("requests_total", "Requests.", {{"model_name", "b\"x"}}).inc();
  r.gauge("running", "Running.").set(3);
  const std::string t = r.render();
  EXPECT_NE(t.find("# TYPE gantry:requests_total counter"), std::string::npos);
  EXPECT_NE(t.find("gantry:requests_total{model_name=\"a\"} 3\n"), std::string::npos);
  EXPECT_NE(t.find("gantry:requests_total{model_name=\"b\\\"x\"} 1\n"), std::string::npos);
  EXPECT_NE(t.find("gantry:running 3\n"), std::string::npos);
}

TEST(Metrics, HistogramBucketsAreCumulative) {
  Registry r;
  auto &h = r.histogram("ttft_seconds", "TTFT.", {{"model_name", "m"}}, {0.1, 1.0});
  for (double v : {0.05, 0.1, 0.5, 2.0})
    h.observe(v);
  const std::string t = r.render();
  EXPECT_NE(t.find("gantry:ttft_seconds_bucket{model_name=\"m\",le=\"0.1\"} 2\n"),
            std::string::npos)
      << t;
  EXPECT_NE(t.find("gantry:ttft_seconds_bucket{model_name=\"m\",le=\"1\"} 3\n"), std::string::npos);
  EXPECT_NE(t.find("gantry:ttft_seconds_bucket{model_name=\"m\",le=\"+Inf\"} 4\n"),
            std::string::npos);
  EXPECT_NE(t.find("gantry:ttft_seconds_count{model_name=\"m\"} 4\n"), std::string::npos);
  EXPECT_NE(t.find("gantry:ttft_seconds_sum{model_name=\"m\"} 2.65\n"), std::string::npos);
}

TEST(Metrics, CardinalityIsBounded) {
  Registry r(10);
  for (int i = 0; i < 1000; ++i) {
    r.counter("by_model", "x", {{"model_name", "m" + std::to_string(i)}}).inc();
  }
  EXPECT_EQ(r.series_count("by_model"), 11u); // 10 real + one "other"
  EXPECT_NE(r.render().find("gantry:by_model{model_name=\"other\"} 990\n"), std::string::npos);
}

TEST(Metrics, ConcurrentUpdatesAreNotLost) {
  Registry r;
  auto &c = r.counter("c", "c");
  auto &h = r.histogram("h", "h", {}, {1.0});
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; ++t) {
    ts.emplace_back([&] {
      for (int i = 0; i < 10000; ++i) {
        c.inc();
        h.observe(0.5);
      }
    });
  }
  for (auto &t : ts)
    t.join();
  EXPECT_EQ(c.value(), 40000);
  EXPECT_EQ(h.snapshot().count, 40000u);
  EXPECT_DOUBLE_EQ(h.snapshot().sum, 20000);
}

} // namespace
} // namespace gantry::telemetry
