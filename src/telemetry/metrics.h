// The metrics registry: counters, gauges and histograms with labels, rendered in the Prometheus
// text exposition format. prometheus-cpp is not packaged in Debian 12, so this is the small part
// of it Gantry needs: lock-free updates on the hot path (atomics), a mutex only when a new label
// combination is created, and bounded cardinality — each family holds at most `max_series`
// label combinations; later ones are folded into one series whose label values are "other",
// so a client sending random model names cannot grow /metrics without bound.
//
// Code takes a reference to the series it updates once and keeps it: series are never destroyed
// while their registry lives. The composition root owns the registry (no global instance, so
// two servers in one test process do not share counters).
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace gantry::telemetry {

using Labels = std::vector<std::pair<std::string, std::string>>;

class Counter {
public:
  void inc(double v = 1.0);
  double value() const { return v_.load(std::memory_order_relaxed); }

private:
  std::atomic<double> v_{0};
};

class Gauge {
public:
  void set(double v) { v_.store(v, std::memory_order_relaxed); }
  void add(double v);
  double value() const { return v_.load(std::memory_order_relaxed); }

private:
  std::atomic<double> v_{0};
};

class Histogram {
public:
  explicit Histogram(std::vector<double> bounds);
  void observe(double v);
  struct Snapshot {
    std::vector<double> bounds;
    std::vector<uint64_t> cumulative; // per bound, then +Inf
    double sum = 0;
    uint64_t count = 0;
  };
  Snapshot snapshot() const;

private:
  std::vector<double> bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> buckets_; // bounds_.size() + 1
  std::atomic<double> sum_{0};
  std::atomic<uint64_t> count_{0};
};

enum class MetricType { kCounter, kGauge, kHistogram };

class Registry {
public:
  explicit Registry(size_t max_series = 200) : max_series_(max_series) {}

  // Same name + labels → the same series. Names get the "gantry:" prefix when rendered.
  Counter &counter(const std::string &name, const std::string &help, const Labels &labels = {});
  Gauge &gauge(const std::string &name, const std::string &help, const Labels &labels = {});
  Histogram &histogram(const std::string &name, const std::string &help, const Labels &labels,
                       const std::vector<double> &bounds);

  std::string render() const;
  size_t series_count(const std::string &name) const;

  // Bucket sets in seconds, after vLLM's.
  static const std::vector<double> &latency_buckets();       // 1 ms .. 80 s
  static const std::vector<double> &token_latency_buckets(); // 1 ms .. 2.5 s

private:
  struct Series {
    Labels labels;
    std::unique_ptr<Counter> counter;
    std::unique_ptr<Gauge> gauge;
    std::unique_ptr<Histogram> histogram;
  };
  struct Family {
    std::string help;
    MetricType type;
    std::vector<double> bounds;
    std::map<std::string, Series> series; // by rendered label string
  };
  Series &series(const std::string &name, const std::string &help, MetricType type,
                 const Labels &labels, const std::vector<double> &bounds);

  const size_t max_series_;
  mutable std::mutex mu_;
  std::map<std::string, Family> families_;
};

// Escapes a label value for the exposition format.
std::string escape_label(const std::string &v);

} // namespace gantry::telemetry
