// The routes about the served models and the server's health: GET /healthz, /startupz, /readyz
// (a real one-token probe per model through its backend, cached for ready_cache, plus a store
// round trip) and GET /v1/models, /v1/models/{id} (a key limited to some models sees only those).
//
// Threading: handlers run on I/O threads; probe completions on the backends' threads; the
// probe state is guarded by the registry's probe mutex.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "control/control_plane.h"
#include "core/clock.h"
#include "http/router.h"
#include "server/api_call.h"
#include "server/model_registry.h"

namespace gantry::server {

class HealthRoutes {
public:
  HealthRoutes(ModelRegistry &models, control::ControlPlane &control, ApiCalls &calls,
               const Clock &clock, std::chrono::milliseconds ready_cache,
               const std::atomic<bool> &shutting_down)
      : models_(models), control_(control), calls_(calls), clock_(clock), ready_cache_(ready_cache),
        shutting_down_(shutting_down) {}

  void add_probe_routes(http::Router &r); // /healthz, /startupz, /readyz
  void add_model_routes(http::Router &r); // /v1/models, /v1/models/{id}
  // Answers one /readyz (also sampled by the status page).
  void ready(std::shared_ptr<http::ResponseWriter> w);

  // One more dependency /readyz checks on every call, after the models and the store: a round
  // trip that fails makes the node unready. The numbers it returns are shown beside its status
  // (the job queue: queued jobs and the oldest one's age). Added at start-up, before serving.
  using DependencyCheck = std::function<Result<std::map<std::string, int64_t>>()>;
  void add_check(std::string name, DependencyCheck check);

private:
  http::Response render_ready();

  ModelRegistry &models_;
  control::ControlPlane &control_;
  ApiCalls &calls_;
  const Clock &clock_;
  const std::chrono::milliseconds ready_cache_;
  const std::atomic<bool> &shutting_down_;
  std::vector<std::pair<std::string, DependencyCheck>> checks_;
};

} // namespace gantry::server
