#include "dashboard/sample_ring.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace gantry::dashboard {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

double parse_le(std::string_view le) {
  if (le == "+Inf")
    return std::numeric_limits<double>::infinity();
  return std::strtod(std::string(le).c_str(), nullptr);
}

// Counters only grow; a smaller value means the process restarted: count from zero.
double delta(double now, double before) { return now >= before ? now - before : now; }

std::vector<std::pair<double, double>> bucket_delta(const std::map<double, double> &now,
                                                    const std::map<double, double> &before) {
  std::vector<std::pair<double, double>> out;
  out.reserve(now.size());
  for (const auto &[le, v] : now) {
    auto it = before.find(le);
    out.emplace_back(le, delta(v, it == before.end() ? 0 : it->second));
  }
  return out;
}

double ratio(double hits, double total) { return total > 0 ? hits / total : kNaN; }

} // namespace

SampleRing::SampleRing(size_t capacity, size_t quantile_window)
    : capacity_(std::max<size_t>(capacity, 1)), window_(std::max<size_t>(quantile_window, 1)) {}

double SampleRing::quantile(double q, const std::vector<std::pair<double, double>> &cum) {
  if (cum.empty() || cum.back().second <= 0)
    return kNaN;
  const double total = cum.back().second;
  const double rank = q * total;
  double prev_bound = 0, prev_count = 0;
  for (const auto &[bound, count] : cum) {
    if (count >= rank) {
      if (std::isinf(bound))
        return prev_bound; // the highest finite bound, as histogram_quantile does
      const double in_bucket = count - prev_count;
      if (in_bucket <= 0)
        return bound;
      return prev_bound + (bound - prev_bound) * (rank - prev_count) / in_bucket;
    }
    prev_bound = bound;
    prev_count = count;
  }
  return prev_bound;
}

void SampleRing::add(int64_t t_ms, const std::vector<PromSample> &scrape) {
  Totals t;
  t.t_ms = t_ms;
  Latest latest;
  latest.t_ms = t_ms;
  Point p;
  p.t_ms = t_ms;
  std::map<std::string, ModelGauges> models;
  auto model = [&](const PromSample &s) -> ModelGauges & {
    std::string name(s.label("model_name"));
    auto &m = models[name];
    m.name = name;
    return m;
  };
  for (const auto &s : scrape) {
    const std::string_view n = s.name;
    if (n == "gantry:requests_total") {
      const std::string status(s.label("status"));
      latest.requests_by_status[status] += s.value;
      const char c = status.empty() ? '0' : status[0];
      (c == '5' ? t.req_5xx : c == '4' ? t.req_4xx : t.req_2xx) += s.value;
    } else if (n == "gantry:prompt_tokens_total") {
      t.tokens_in += s.value;
    } else if (n == "gantry:generation_tokens_total") {
      t.tokens_out += s.value;
    } else if (n == "gantry:cache_hits_total") {
      t.cache_hits += s.value;
    } else if (n == "gantry:cache_misses_total") {
      t.cache_misses += s.value;
    } else if (n == "gantry:prefix_cache_hits_total") {
      t.prefix_hits += s.value;
    } else if (n == "gantry:prefix_cache_queries_total") {
      t.prefix_queries += s.value;
    } else if (n == "gantry:errors_total") {
      t.errors += s.value;
    } else if (n == "gantry:time_to_first_token_seconds_bucket") {
      t.ttft[parse_le(s.label("le"))] += s.value;
    } else if (n == "gantry:e2e_request_latency_seconds_bucket") {
      t.e2e[parse_le(s.label("le"))] += s.value;
    } else if (n == "gantry:num_requests_running") {
      model(s).running = s.value;
      p.running += s.value;
    } else if (n == "gantry:num_requests_waiting") {
      model(s).waiting = s.value;
      p.waiting += s.value;
    } else if (n == "gantry:kv_cache_usage_perc") {
      model(s).kv_usage = s.value;
      p.kv_usage_max = std::max(p.kv_usage_max, s.value);
    } else if (n == "gantry:circuit_breaker_open") {
      model(s).breaker_open = s.value > 0;
    } else if (n == "gantry:jobs_queued") {
      p.jobs_queued = s.value;
    } else if (n == "gantry:oldest_queued_job_age_seconds") {
      p.oldest_job_age_s = s.value;
    } else if (n == "gantry:http_requests_in_flight") {
      p.in_flight = s.value;
    } else if (n == "gantry:ledger_rows_pending") {
      p.ledger_pending = s.value;
    } else if (n == "gantry:jobs_total") {
      latest.jobs_by_outcome[std::string(s.label("outcome"))] = s.value;
    }
  }
  for (auto &[name, m] : models)
    latest.models.push_back(std::move(m));

  std::lock_guard<std::mutex> lk(mu_);
  if (!history_.empty()) {
    const Totals &prev = history_.back();
    const double dt = std::max<double>(t_ms - prev.t_ms, 1) / 1000.0;
    p.req_2xx = delta(t.req_2xx, prev.req_2xx) / dt;
    p.req_4xx = delta(t.req_4xx, prev.req_4xx) / dt;
    p.req_5xx = delta(t.req_5xx, prev.req_5xx) / dt;
    p.tokens_in = delta(t.tokens_in, prev.tokens_in) / dt;
    p.tokens_out = delta(t.tokens_out, prev.tokens_out) / dt;
    p.errors = delta(t.errors, prev.errors) / dt;
    // The start of the quantile and ratio window: `window_` scrapes ago (or the oldest kept).
    const Totals &old =
        history_.size() >= window_ ? history_[history_.size() - window_] : history_.front();
    const auto ttft = bucket_delta(t.ttft, old.ttft);
    const auto e2e = bucket_delta(t.e2e, old.e2e);
    p.ttft_p50 = quantile(0.50, ttft);
    p.ttft_p95 = quantile(0.95, ttft);
    p.ttft_p99 = quantile(0.99, ttft);
    p.e2e_p50 = quantile(0.50, e2e);
    p.e2e_p95 = quantile(0.95, e2e);
    p.e2e_p99 = quantile(0.99, e2e);
    const double hits = delta(t.cache_hits, old.cache_hits);
    p.cache_hit_ratio = ratio(hits, hits + delta(t.cache_misses, old.cache_misses));
    p.prefix_hit_ratio =
        ratio(delta(t.prefix_hits, old.prefix_hits), delta(t.prefix_queries, old.prefix_queries));
  } else {
    p.ttft_p50 = p.ttft_p95 = p.ttft_p99 = kNaN;
    p.e2e_p50 = p.e2e_p95 = p.e2e_p99 = kNaN;
    p.cache_hit_ratio = p.prefix_hit_ratio = kNaN;
  }
  history_.push_back(std::move(t));
  while (history_.size() > window_)
    history_.pop_front();
  points_.push_back(p);
  while (points_.size() > capacity_)
    points_.pop_front();
  latest_ = std::move(latest);
}

std::vector<Point> SampleRing::points(int64_t since_ms, size_t max_points) const {
  std::lock_guard<std::mutex> lk(mu_);
  auto first = std::upper_bound(points_.begin(), points_.end(), since_ms,
                                [](int64_t t, const Point &p) { return t < p.t_ms; });
  const size_t n = static_cast<size_t>(points_.end() - first);
  max_points = std::max<size_t>(max_points, 1);
  const size_t step = std::max<size_t>((n + max_points - 1) / max_points, 1);
  std::vector<Point> out;
  if (n == 0)
    return out;
  out.reserve(std::min(n, max_points));
  // Thinning keeps the newest point, so the chart's right edge is always "now".
  for (size_t i = (n - 1) % step; i < n; i += step)
    out.push_back(*(first + static_cast<std::ptrdiff_t>(i)));
  return out;
}

Latest SampleRing::latest() const {
  std::lock_guard<std::mutex> lk(mu_);
  return latest_;
}

size_t SampleRing::size() const {
  std::lock_guard<std::mutex> lk(mu_);
  return points_.size();
}

} // namespace gantry::dashboard
