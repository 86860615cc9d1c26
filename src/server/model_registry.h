// The served models: name → ModelBackend. The gateway, /v1/models, /readyz, the metrics and the
// embeddings route all go through it, so a remote engine is one more entry, not a special case.
//
// Entries are only ever added, never removed: the configured models at start-up, and on a gateway
// (roles, issue 13) each worker-hosted model the first time a live worker announces it. Readers
// never lock: the entries live in a fixed table (kMaxModels) published by an atomic count, so an
// entry a reader saw stays valid until clear() at shutdown.
//
// Threading: add() from any thread (a mutex orders writers); readers from any thread. The
// readiness state of each entry is guarded by the registry's probe mutex.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "backend/model_backend.h"
#include "core/clock.h"

namespace gantry::server {

struct ServedModel {
  std::unique_ptr<backend::ModelBackend> backend;
  const std::string &name() const { return backend->info().name; }
  // Set for a model served by worker nodes: how many live workers have it now. /v1/models lists
  // it only while there is one, /readyz shows the count.
  std::function<int()> live_workers;
  // Set for a model a ModelHost hosts (placement, issue 14): whether it is loaded now. Null:
  // always loaded. Set right after add(), before the entry is served.
  std::function<bool()> loaded;
  // /readyz: the last probe (guarded by ModelRegistry::probe_mu()).
  std::chrono::steady_clock::time_point probe_at{};
  bool probe_ok = false;
  double probe_ms = 0;
  std::string probe_error;
};

class ModelRegistry {
public:
  static constexpr std::size_t kMaxModels = 1024;

  ModelRegistry();
  // The new entry, or nullptr when the table is full or the name is taken.
  ServedModel *add(std::unique_ptr<backend::ModelBackend> backend,
                   std::function<int()> live_workers = nullptr);
  // nullptr when no model has that name.
  backend::ModelBackend *find(std::string_view name) const;
  std::span<const std::unique_ptr<ServedModel>> models() const {
    return {slots_.get(), count_.load(std::memory_order_acquire)};
  }
  std::mutex &probe_mu() { return probe_mu_; }

  // Graceful shutdown, over every backend: refuse new calls; wait (the deadline is shared by
  // all models); cut off what is left.
  void stop_accepting();
  bool wait_idle(std::chrono::milliseconds grace, const Clock &clock);
  void cancel_all();
  void clear(); // stops the engines (joins their threads); no reader may run any more

private:
  std::unique_ptr<std::unique_ptr<ServedModel>[]> slots_; // kMaxModels
  std::atomic<std::size_t> count_{0};
  std::mutex add_mu_;
  std::mutex probe_mu_;
};

} // namespace gantry::server
