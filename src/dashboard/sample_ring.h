// The dashboard's memory: one point per scrape of /metrics (once a second), the last hour of them
// in a fixed-size ring, so one machine gets charts without an external database. Rates come from
// the difference between consecutive scrapes; latency quantiles from the histogram buckets over
// a short window (like PromQL's histogram_quantile over rate(...[10s])).
//
// Threading: add() runs on the sampler thread, the readers on I/O threads; one mutex guards the
// ring (a reader copies what it needs; the hot path of a request never touches it).
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "dashboard/prom_text.h"

namespace gantry::dashboard {

// One chart point. Rates are per second; latencies in seconds; a quantile with no observation
// in its window is NaN (rendered as null: a gap in the chart, not a zero).
struct Point {
  int64_t t_ms = 0;
  double req_2xx = 0, req_4xx = 0, req_5xx = 0; // inference calls answered, by status class
  double ttft_p50 = 0, ttft_p95 = 0, ttft_p99 = 0;
  double e2e_p50 = 0, e2e_p95 = 0, e2e_p99 = 0;
  double tokens_in = 0, tokens_out = 0; // prompt tokens processed, tokens generated
  double running = 0, waiting = 0;      // sequences, summed over models
  double kv_usage_max = 0;              // the fullest model's KV cache (0..1)
  double cache_hit_ratio = 0;           // response + embedding caches, over the window; NaN idle
  double prefix_hit_ratio = 0;          // prompt tokens reused from the prefix cache; NaN idle
  double jobs_queued = 0, oldest_job_age_s = 0;
  double in_flight = 0;      // HTTP requests being handled
  double errors = 0;         // server-side failures per second
  double ledger_pending = 0; // usage rows waiting for the next batch
};

struct ModelGauges {
  std::string name;
  double running = 0, waiting = 0, kv_usage = 0;
  bool breaker_open = false;
};

// What the latest scrape said, beyond the chart points.
struct Latest {
  int64_t t_ms = 0;
  std::vector<ModelGauges> models;
  std::map<std::string, double> jobs_by_outcome;    // jobs_total{outcome}: totals since start
  std::map<std::string, double> requests_by_status; // requests_total{status}: totals since start
};

class SampleRing {
public:
  // `capacity` points (3600 = one hour at one a second); quantiles over the last
  // `quantile_window` scrapes.
  explicit SampleRing(size_t capacity = 3600, size_t quantile_window = 10);

  void add(int64_t t_ms, const std::vector<PromSample> &scrape);

  // Points with t_ms > since_ms, oldest first, at most `max_points` (evenly thinned).
  std::vector<Point> points(int64_t since_ms = 0, size_t max_points = 3600) const;
  Latest latest() const;
  size_t size() const;

  // The q-quantile of a cumulative histogram (bounds ascending, +Inf last), interpolated
  // linearly inside the bucket as PromQL's histogram_quantile does. NaN when it is empty.
  static double quantile(double q, const std::vector<std::pair<double, double>> &cumulative);

private:
  // Cumulative values of one scrape, the inputs of rates and windowed quantiles.
  struct Totals {
    int64_t t_ms = 0;
    double req_2xx = 0, req_4xx = 0, req_5xx = 0;
    double tokens_in = 0, tokens_out = 0;
    double cache_hits = 0, cache_misses = 0;
    double prefix_hits = 0, prefix_queries = 0;
    double errors = 0;
    std::map<double, double> ttft, e2e; // le → cumulative count, summed over series
  };

  const size_t capacity_, window_;
  mutable std::mutex mu_;
  std::deque<Point> points_;   // bounded by capacity_
  std::deque<Totals> history_; // the last window_ scrapes
  Latest latest_;
};

} // namespace gantry::dashboard
