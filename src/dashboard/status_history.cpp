#include "dashboard/status_history.h"

#include <algorithm>
#include <map>

namespace gantry::dashboard {

std::string_view to_string(ModelState s) {
  switch (s) {
  case ModelState::kUp: return "up";
  case ModelState::kDegraded: return "degraded";
  case ModelState::kDown: break;
  }
  return "down";
}

Status MemoryReadinessLog::append(const std::vector<ReadinessSample> &samples) {
  std::lock_guard<std::mutex> lk(mu_);
  for (const auto &s : samples)
    samples_.push_back(s);
  while (samples_.size() > max_)
    samples_.pop_front();
  return {};
}

Result<std::vector<UptimeCount>> MemoryReadinessLog::counts(int64_t from_ms) {
  std::lock_guard<std::mutex> lk(mu_);
  std::map<std::string, UptimeCount> by_model;
  for (const auto &s : samples_) {
    if (s.t_ms < from_ms)
      continue;
    auto &c = by_model[s.model];
    c.model = s.model;
    ++c.total;
    if (s.state != ModelState::kDown)
      ++c.up;
  }
  std::vector<UptimeCount> out;
  for (auto &[m, c] : by_model)
    out.push_back(std::move(c));
  return out;
}

Result<std::vector<ReadinessSample>> MemoryReadinessLog::down_since(int64_t from_ms, size_t limit) {
  std::lock_guard<std::mutex> lk(mu_);
  std::vector<ReadinessSample> out;
  for (const auto &s : samples_)
    if (s.t_ms >= from_ms && s.state == ModelState::kDown)
      out.push_back(s);
  if (out.size() > limit)
    out.erase(out.begin(), out.end() - static_cast<std::ptrdiff_t>(limit));
  return out;
}

Status MemoryReadinessLog::purge(int64_t before_ms) {
  std::lock_guard<std::mutex> lk(mu_);
  while (!samples_.empty() && samples_.front().t_ms < before_ms)
    samples_.pop_front();
  return {};
}

std::vector<Incident> incidents_from(const std::vector<ReadinessSample> &down, int64_t gap_ms) {
  std::map<std::string, std::vector<const ReadinessSample *>> by_model;
  for (const auto &s : down)
    by_model[s.model].push_back(&s);
  std::vector<Incident> out;
  for (auto &[model, v] : by_model) {
    std::sort(v.begin(), v.end(), [](auto *a, auto *b) { return a->t_ms < b->t_ms; });
    for (const auto *s : v) {
      if (!out.empty() && out.back().model == model && s->t_ms - out.back().end_ms <= gap_ms) {
        out.back().end_ms = s->t_ms;
      } else {
        out.push_back({model, s->t_ms, s->t_ms, false});
      }
    }
  }
  std::sort(out.begin(), out.end(),
            [](const Incident &a, const Incident &b) { return a.start_ms > b.start_ms; });
  return out;
}

double uptime_ratio(const UptimeCount &c) {
  return c.total > 0 ? static_cast<double>(c.up) / static_cast<double>(c.total) : -1.0;
}

} // namespace gantry::dashboard
