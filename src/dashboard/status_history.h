// /status: each model's state from its readiness probe, its uptime over 24 hours and 30 days,
// and its incidents (periods of down), computed from readiness samples that outlive a restart.
// ReadinessLog is the port those samples are kept behind (the SQLite adapter is in store/sqlite;
// MemoryReadinessLog serves tests and a server without a data directory).
//
// Threading: a ReadinessLog may be called from any thread; summarize() is a pure function.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.h"

namespace gantry::dashboard {

enum class ModelState { kDown = 0, kDegraded = 1, kUp = 2 };
std::string_view to_string(ModelState s);

// One probe of one model. Nothing sensitive: no error text (it may name files or hosts).
struct ReadinessSample {
  std::string model;
  int64_t t_ms = 0;
  ModelState state = ModelState::kDown;
  double latency_ms = 0;
};

struct UptimeCount {
  std::string model;
  int64_t up = 0;    // samples up or degraded (serving)
  int64_t total = 0; // all samples
};

class ReadinessLog {
public:
  virtual ~ReadinessLog() = default;
  virtual Status append(const std::vector<ReadinessSample> &samples) = 0;
  // Per model, samples with t_ms >= from_ms.
  virtual Result<std::vector<UptimeCount>> counts(int64_t from_ms) = 0;
  // Down samples with t_ms >= from_ms, oldest first, at most `limit` (the newest ones kept).
  virtual Result<std::vector<ReadinessSample>> down_since(int64_t from_ms, size_t limit) = 0;
  // Drops samples older than before_ms (the log keeps 30 days and a little more).
  virtual Status purge(int64_t before_ms) = 0;
};

// Bounded: at most `max_samples` (oldest dropped first).
class MemoryReadinessLog final : public ReadinessLog {
public:
  explicit MemoryReadinessLog(size_t max_samples = 500000) : max_(max_samples) {}
  Status append(const std::vector<ReadinessSample> &samples) override;
  Result<std::vector<UptimeCount>> counts(int64_t from_ms) override;
  Result<std::vector<ReadinessSample>> down_since(int64_t from_ms, size_t limit) override;
  Status purge(int64_t before_ms) override;

private:
  const size_t max_;
  std::mutex mu_;
  std::deque<ReadinessSample> samples_;
};

struct Incident {
  std::string model;
  int64_t start_ms = 0;
  int64_t end_ms = 0; // the last down sample seen
  bool ongoing = false;
};

// Down samples of a model closer together than `gap_ms` are one incident; an incident whose last
// sample is within `gap_ms` of now_ms and whose model is still down is ongoing. Newest first.
std::vector<Incident> incidents_from(const std::vector<ReadinessSample> &down, int64_t gap_ms);

// up / total, or -1 when there is no sample (rendered as "no data", never as 0 % or 100 %).
double uptime_ratio(const UptimeCount &c);

} // namespace gantry::dashboard
