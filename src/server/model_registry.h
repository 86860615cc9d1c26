// The served models: name → ModelBackend. The gateway, /v1/models, /readyz, the metrics and the
// embeddings route all go through it, so a remote engine is one more entry, not a special case.
//
// Threading: filled at start-up (add) on the main thread, read-only afterwards; the readiness
// state of each entry is guarded by the registry's probe mutex.
#pragma once

#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "backend/model_backend.h"
#include "core/clock.h"

namespace gantry::server {

struct ServedModel {
  std::unique_ptr<backend::ModelBackend> backend;
  const std::string &name() const { return backend->info().name; }
  // /readyz: the last probe (guarded by ModelRegistry::probe_mu()).
  std::chrono::steady_clock::time_point probe_at{};
  bool probe_ok = false;
  double probe_ms = 0;
  std::string probe_error;
};

class ModelRegistry {
public:
  void add(std::unique_ptr<backend::ModelBackend> backend);
  // nullptr when no model has that name.
  backend::ModelBackend *find(std::string_view name) const;
  const std::vector<std::unique_ptr<ServedModel>> &models() const { return models_; }
  std::mutex &probe_mu() { return probe_mu_; }

  // Graceful shutdown, over every backend: refuse new calls; wait (the deadline is shared by
  // all models); cut off what is left.
  void stop_accepting();
  bool wait_idle(std::chrono::milliseconds grace, const Clock &clock);
  void cancel_all();
  void clear() { models_.clear(); } // stops the engines (joins their threads)

private:
  std::vector<std::unique_ptr<ServedModel>> models_;
  std::mutex probe_mu_;
};

} // namespace gantry::server
