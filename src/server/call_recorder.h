// CallRecorder: what every finished API call leaves behind, read from its typed CallOutcome —
// the request metrics (per model/endpoint/status/project series), server errors for the error
// tracker (and Sentry), and one JSON line in the request log.
//
// Threading: record() is thread-safe (called on I/O and engine threads); the metric series are
// cached per thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>

#include "observe/error_tracker.h"
#include "server/call_outcome.h"
#include "telemetry/metrics.h"
#include "telemetry/request_log.h"

namespace gantry::server {

// A call's cost in dollars as printf's "%.8f" writes it: the x-gantry-cost-usd header and the
// request log's cost_usd.
std::string format_cost(double usd);

class CallRecorder {
public:
  // `request_log` may be null (logging off); `worker` names this process in the log lines.
  CallRecorder(telemetry::Registry &metrics, bool metrics_on, observe::ErrorTracker &errors,
               telemetry::RequestLog *request_log, std::string worker);

  void record(const CallOutcome &outcome);

private:
  struct Series {
    telemetry::Counter *requests = nullptr, *success = nullptr;
    telemetry::Histogram *e2e = nullptr, *ttft = nullptr, *queue = nullptr, *prefill = nullptr,
                         *decode = nullptr, *overhead = nullptr;
  };
  Series &series(const CallOutcome &r);
  void write_log(const CallOutcome &r);

  telemetry::Registry &metrics_;
  const bool metrics_on_;
  observe::ErrorTracker &errors_;
  telemetry::RequestLog *request_log_;
  const std::string worker_;
  static inline std::atomic<uint64_t> next_instance_{1};
  const uint64_t instance_ = next_instance_.fetch_add(1);
};

} // namespace gantry::server
