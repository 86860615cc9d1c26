#include "telemetry/metrics.h"

#include <cmath>
#include <cstdio>
#include <sstream>

namespace gantry::telemetry {
namespace {

void atomic_add(std::atomic<double> &a, double v) {
  double cur = a.load(std::memory_order_relaxed);
  while (!a.compare_exchange_weak(cur, cur + v, std::memory_order_relaxed)) {
  }
}

std::string fmt(double v) {
  if (std::isinf(v))
    return v > 0 ? "+Inf" : "-Inf";
  if (v == std::floor(v) && std::fabs(v) < 1e15) {
    return std::to_string(static_cast<int64_t>(v));
  }
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.9g", v);
  return buf;
}

std::string render_labels(const Labels &labels, const std::string &extra = {}) {
  if (labels.empty() && extra.empty())
    return {};
  std::string out = "{";
  for (size_t i = 0; i < labels.size(); ++i) {
    if (i)
      out += ',';
    out += labels[i].first + "=\"" + escape_label(labels[i].second) + "\"";
  }
  if (!extra.empty()) {
    if (!labels.empty())
      out += ',';
    out += extra;
  }
  return out + "}";
}

} // namespace

std::string escape_label(const std::string &v) {
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    if (c == '\\' || c == '"') {
      out += '\\';
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

void Counter::inc(double v) { atomic_add(v_, v); }
void Gauge::add(double v) { atomic_add(v_, v); }

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)),
      buckets_(std::make_unique<std::atomic<uint64_t>[]>(bounds_.size() + 1)) {
  for (size_t i = 0; i <= bounds_.size(); ++i)
    buckets_[i].store(0);
}

void Histogram::observe(double v) {
  size_t i = 0;
  while (i < bounds_.size() && v > bounds_[i])
    ++i;
  buckets_[i].fetch_add(1, std::memory_order_relaxed);
  atomic_add(sum_, v);
  count_.fetch_add(1, std::memory_order_relaxed);
}

Histogram::Snapshot Histogram::snapshot() const {
  Snapshot s;
  s.bounds = bounds_;
  uint64_t run = 0;
  for (size_t i = 0; i <= bounds_.size(); ++i) {
    run += buckets_[i].load(std::memory_order_relaxed);
    s.cumulative.push_back(run);
  }
  s.sum = sum_.load(std::memory_order_relaxed);
  s.count = run;
  return s;
}

Registry::Series &Registry::series(const std::string &name, const std::string &help,
                                   MetricType type, const Labels &labels,
                                   const std::vector<double> &bounds) {
  std::lock_guard<std::mutex> lk(mu_);
  Family &f = families_[name];
  if (f.series.empty()) {
    f.help = help;
    f.type = type;
    f.bounds = bounds;
  }
  Labels use = labels;
  std::string key = render_labels(use);
  if (!f.series.count(key) && f.series.size() >= max_series_) {
    for (auto &[k, v] : use)
      v = "other";
    key = render_labels(use);
  }
  auto it = f.series.find(key);
  if (it == f.series.end()) {
    Series s;
    s.labels = use;
    if (type == MetricType::kCounter)
      s.counter = std::make_unique<Counter>();
    if (type == MetricType::kGauge)
      s.gauge = std::make_unique<Gauge>();
    if (type == MetricType::kHistogram)
      s.histogram = std::make_unique<Histogram>(f.bounds);
    it = f.series.emplace(key, std::move(s)).first;
  }
  return it->second;
}

Counter &Registry::counter(const std::string &name, const std::string &help, const Labels &labels) {
  return *series(name, help, MetricType::kCounter, labels, {}).counter;
}

Gauge &Registry::gauge(const std::string &name, const std::string &help, const Labels &labels) {
  return *series(name, help, MetricType::kGauge, labels, {}).gauge;
}

Histogram &Registry::histogram(const std::string &name, const std::string &help,
                               const Labels &labels, const std::vector<double> &bounds) {
  return *series(name, help, MetricType::kHistogram, labels, bounds).histogram;
}

size_t Registry::series_count(const std::string &name) const {
  std::lock_guard<std::mutex> lk(mu_);
  auto it = families_.find(name);
  return it == families_.end() ? 0 : it->second.series.size();
}

std::string Registry::render() const {
  std::ostringstream o;
  std::lock_guard<std::mutex> lk(mu_);
  for (const auto &[name, f] : families_) {
    const std::string full = "gantry:" + name;
    const char *type = f.type == MetricType::kCounter ? "counter"
                       : f.type == MetricType::kGauge ? "gauge"
                                                      : "histogram";
    o << "# HELP " << full << ' ' << f.help << "\n# TYPE " << full << ' ' << type << '\n';
    for (const auto &[key, s] : f.series) {
      if (s.counter)
        o << full << key << ' ' << fmt(s.counter->value()) << '\n';
      if (s.gauge)
        o << full << key << ' ' << fmt(s.gauge->value()) << '\n';
      if (s.histogram) {
        auto snap = s.histogram->snapshot();
        for (size_t i = 0; i <= snap.bounds.size(); ++i) {
          const std::string le =
              "le=\"" + (i < snap.bounds.size() ? fmt(snap.bounds[i]) : std::string("+Inf")) + "\"";
          o << full << "_bucket" << render_labels(s.labels, le) << ' ' << snap.cumulative[i]
            << '\n';
        }
        o << full << "_sum" << key << ' ' << fmt(snap.sum) << '\n';
        o << full << "_count" << key << ' ' << snap.count << '\n';
      }
    }
  }
  return o.str();
}

const std::vector<double> &Registry::latency_buckets() {
  static const std::vector<double> b = {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1,  0.25, 0.5,
                                        0.75,  1.0,   2.5,  5.0,  7.5,  10.0, 20.0, 40.0, 80.0};
  return b;
}

const std::vector<double> &Registry::token_latency_buckets() {
  static const std::vector<double> b = {0.001, 0.005, 0.01,  0.015, 0.02, 0.025, 0.03,
                                        0.04,  0.05,  0.075, 0.1,   0.15, 0.2,   0.3,
                                        0.4,   0.5,   0.75,  1.0,   2.5};
  return b;
}

} // namespace gantry::telemetry
