// The operator's view (issue 15): /dashboard (admin), /status and /status.json (public).
//
// One background thread, the sampler, feeds both: once a second it renders the /metrics text and
// adds a point to the dashboard's one-hour SampleRing (so an open dashboard costs the request
// path nothing: it reads the ring, never the registry); every `readiness_interval` it runs the
// same readiness check as /readyz, keeps one sample per model in the ReadinessLog (the store, so
// uptime survives a restart), refreshes the spend tables from the ledger and recomputes the
// status summary. HTTP handlers only copy what the sampler prepared.
//
// Threading: start()/stop() on the main thread; the sampler owns the ring's writes and the store
// calls; handlers run on I/O threads and take `mu_` briefly.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "control/control_plane.h"
#include "core/clock.h"
#include "dashboard/sample_ring.h"
#include "dashboard/status_history.h"
#include "http/router.h"
#include "observe/error_tracker.h"
#include "server/admin_api.h"
#include "telemetry/metrics.h"

namespace gantry::server {

struct OperatorViewsOptions {
  std::chrono::milliseconds sample_interval{1000};
  // 0 = no status probes (each probe is a one-token generation, visible in the token counters).
  std::chrono::milliseconds readiness_interval{10000};
  double degraded_probe_ms = 2000; // a probe slower than this marks its model degraded
  size_t ring_points = 3600;       // one hour at one sample a second
};

struct OperatorViewsDeps {
  const Clock *clock = nullptr;
  control::ControlPlane *control = nullptr;
  const observe::ErrorTracker *errors = nullptr;
  AdminAuth *admin_auth = nullptr; // the admin token, with the per-peer failure throttle
  // Optional: gets gantry:model_ready and gantry:model_probe_seconds per model after each status
  // probe, so Prometheus can alert on readiness without probing /readyz itself.
  telemetry::Registry *metrics = nullptr;
  std::function<std::string()> metrics_text; // what /metrics serves
  // Runs the /readyz check and answers `writer` (from any thread, possibly later).
  std::function<void(std::shared_ptr<http::ResponseWriter>)> readiness;
  std::unique_ptr<dashboard::ReadinessLog> readiness_log;
};

// The defaults, with readiness_interval from $GANTRY_STATUS_PROBE_S (seconds; 0 turns the
// status probes off). Throws std::invalid_argument on a value that is not a number (start-up).
OperatorViewsOptions operator_views_options_from_env();

class OperatorViews {
public:
  OperatorViews(OperatorViewsDeps deps, OperatorViewsOptions options = {});
  ~OperatorViews(); // stops the sampler

  void start();
  void stop();

  // /dashboard, its assets and GET /admin/v1/dashboard: where the operator routes are served.
  void add_dashboard_routes(http::Router &r);
  // /status, /status.json and /status.css: on every listener (public, nothing sensitive).
  void add_status_routes(http::Router &r);

  // The JSON bodies (tests and the handlers).
  // Points after `since_ms` (unix ms; 0 = the last hour, thinned to 900 points).
  std::string dashboard_json(int64_t since_ms = 0) const;
  std::string status_json() const;
  std::string status_html() const;

private:
  struct ModelHealth {
    std::string name;
    dashboard::ModelState state = dashboard::ModelState::kDown;
    double probe_ms = 0;
    int64_t probed_at_ms = 0;
  };
  // What else the last /readyz checked (the store, the job queue; later Redis, PostgreSQL) and
  // each member of a remote model's pool, shown on the dashboard beside the models.
  struct DependencyHealth {
    std::string name;
    bool ok = false;
    double latency_ms = 0;
    std::string error;
  };
  struct BackendHealth {
    std::string model, backend;
    bool ready = false, ejected = false;
    int64_t in_flight = 0;
  };
  struct Spender {
    std::string id;
    double today_usd = 0, month_usd = 0;
  };
  struct StatusSummary {
    int64_t computed_at_ms = 0;
    std::vector<dashboard::UptimeCount> day, month;
    std::vector<dashboard::Incident> incidents;
  };

  void run();
  void sample();
  void probe();            // asks for a readiness check; the answer lands in ready_body_
  void record_readiness(); // turns the last answer into samples, on the sampler thread
  void refresh_spend();
  void refresh_status();

  OperatorViewsDeps deps_;
  const OperatorViewsOptions options_;
  dashboard::SampleRing ring_;

  mutable std::mutex mu_; // guards everything below
  std::condition_variable cv_;
  bool stop_ = false;
  std::string ready_body_; // the last /readyz answer not yet recorded
  std::vector<ModelHealth> health_;
  std::vector<DependencyHealth> dependencies_;
  std::vector<BackendHealth> backends_;
  std::vector<Spender> projects_, keys_;
  double spend_today_ = 0, spend_month_ = 0;
  StatusSummary status_;
  std::thread thread_;
};

} // namespace gantry::server
