// Placement (issue 14 item 6): one process hosts several models within a budget — at most
// `max_loaded` of them loaded at once (and/or `max_bytes` of their weights + KV) — and loads the
// others on demand, like llama.cpp's router mode. Each hosted model is a permanent ModelBackend
// (HostedBackend) in the server's registry; its engine comes and goes underneath.
//
//   - acquire() pins a model for one call: it is loaded if need be, and stays loaded until every
//     pin is released (a PreparedCall and its running call hold one). A model with requests in
//     flight is never unloaded.
//   - To make room, the least recently used *idle* loaded models are unloaded first; while every
//     loaded model is busy, the caller waits for one to become idle (up to `load_wait`, then
//     kUnavailable with a Retry-After: a 503 the client may retry).
//   - Concurrent requests for the same unloaded model wait for one load; a failed load is
//     reported to every caller that waited for it (they do not each retry it).
//   - Unloading destroys the engine (its thread joined, the GGUF mapping released): the memory
//     goes back to the system.
//
// Loads and unloads are logged (one JSON line each) and counted per model.
//
// Threading: every method is thread-safe. A load or unload runs on the thread that needed it,
// outside the host's mutex (other models keep serving meanwhile). Pins may be released on any
// thread (an engine thread's on_done).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "backend/model_backend.h"
#include "core/clock.h"
#include "core/result.h"

namespace gantry::backend {

struct HostOptions {
  int max_loaded = 0;     // models loaded at once; 0 = no count bound
  uint64_t max_bytes = 0; // sum of the loaded models' `bytes`; 0 = no byte bound
  // How long a call waits for room (every loaded model busy) or for another caller's load.
  std::chrono::milliseconds load_wait{60'000};
};

using ModelLoader = std::function<Result<std::unique_ptr<ModelBackend>>()>;

struct HostedModelSpec {
  BackendInfo info;   // what the facade reports, loaded or not (fixed)
  uint64_t bytes = 0; // what it takes loaded (weights + KV), for max_bytes
  ModelLoader load;
};

// One model's state for /metrics, /v1/models and the worker registry.
struct HostedModelState {
  std::string name;
  bool loaded = false;
  uint64_t bytes = 0;
  uint64_t loads = 0, unloads = 0, load_failures = 0;
};

class ModelHost;

// A pin on a loaded model: the backend stays loaded (and `backend` valid) while it lives.
class ModelPin {
public:
  // `use`: a call's pin (its release makes the model the most recently used); false for an
  // observer's (probe, stats), which must not change the LRU order.
  ModelPin(ModelHost &host, int index, ModelBackend *backend, bool use)
      : host_(host), index_(index), backend_(backend), use_(use) {}
  ~ModelPin();
  ModelPin(const ModelPin &) = delete;
  ModelPin &operator=(const ModelPin &) = delete;
  ModelBackend &backend() const { return *backend_; }

private:
  ModelHost &host_;
  const int index_;
  ModelBackend *const backend_;
  const bool use_;
};

class ModelHost {
public:
  using Log = std::function<void(const std::string &json_line)>;
  static constexpr int kMaxModels = 1024;

  ModelHost(HostOptions options, const Clock &clock, Log log);
  ~ModelHost(); // unloads everything (no pin may be alive)

  // Registers a model; returns its index, or kQueueFull beyond kMaxModels. Before any acquire().
  Result<int> add(HostedModelSpec spec);
  // Start-up: loads models in the order added while they fit without unloading anything. The
  // first failed load is returned (a broken file stops start-up rather than the first request).
  Status preload();

  // Pins model `index`, loading it first if needed (see the file comment). Errors:
  // kUnavailable (draining; no room within load_wait; another caller's load failed, with its
  // message), or the loader's own error.
  Result<std::shared_ptr<ModelPin>> acquire(int index);
  // A pin only if the model is loaded now (probes and stats must not load anything); it leaves
  // the LRU order as it is.
  std::shared_ptr<ModelPin> pin_if_loaded(int index);
  bool is_loaded(int index) const;

  // Graceful shutdown of one model: no new pins or loads; the loaded engine refuses new calls.
  void stop_accepting(int index);
  bool wait_idle(int index, std::chrono::milliseconds timeout);
  void cancel_all(int index);
  // The loaded engine's stats plus the counters of the engines unloaded before it, so /metrics
  // counters never go backwards across a reload.
  BackendStats stats(int index);

  std::vector<HostedModelState> states() const;
  int loaded_count() const;
  uint64_t loaded_bytes() const;

private:
  friend class ModelPin;
  enum class State { kUnloaded, kLoading, kLoaded, kUnloading };
  struct Slot {
    HostedModelSpec spec;
    std::unique_ptr<ModelBackend> backend; // set while kLoaded (and while kUnloading, moved out)
    State state = State::kUnloaded;
    int pins = 0;
    uint64_t last_used = 0; // the host's use tick at the last pin or release
    bool accepting = true;
    uint64_t loads = 0, unloads = 0, load_failures = 0;
    uint64_t failure_gen = 0; // bumped per failed load: waiters of that load report it
    std::string last_error;
    BackendStats retired; // counters of the engines unloaded so far
  };

  void release(int index, bool use);
  // Under mu_: the idle loaded models to unload so that `index` fits (LRU first); false when it
  // cannot fit now (busy models in the way). Sets `never` when it can never fit.
  bool plan_room(int index, std::vector<int> &victims, bool &never) const;
  void unload(int index, std::unique_ptr<ModelBackend> backend, const char *reason);
  int loaded_count_locked() const;

  const HostOptions options_;
  const Clock &clock_;
  const Log log_;
  mutable std::mutex mu_;
  std::condition_variable changed_;
  std::vector<std::unique_ptr<Slot>> slots_;
  uint64_t tick_ = 0;
};

} // namespace gantry::backend
