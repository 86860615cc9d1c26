// Runs each autoscaled model's policy (autoscale/policy.h) once a second over the signals this
// process has, logs a JSON line when a decision moves, and exports gantry:desired_replicas and
// gantry:replicas{state} for /metrics (issue 14 item 1). On a gateway, `act` hands each decision
// to the model's executor (server/replica_executor.h), which starts and stops its workers.
//
// Threading: start()/stop() on the main thread; one evaluator thread owns the policies and
// calls the readers; render_metrics() and last() from any thread (they take mu_ briefly).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <ostream>
#include <string>
#include <thread>

#include "autoscale/policy.h"
#include "core/clock.h"

namespace gantry::server {

// One model's engine-side reading at an instant.
struct ModelReading {
  autoscale::Signals signals;    // queued_jobs and oldest_wait_s are filled from JobBacklog
  uint64_t generated_tokens = 0; // cumulative; the monitor turns it into tokens/s per replica
};

// The async jobs waiting to run, with the oldest one's wait.
struct JobBacklog {
  int64_t queued = 0;
  double oldest_wait_s = 0;
};

struct AutoscaleDeps {
  const Clock *clock = nullptr;
  // nullopt when the model is not served here (the policy then holds its last decision).
  std::function<std::optional<ModelReading>(const std::string &model)> read_model;
  // Read once per evaluation. The job queue's depth is not per model (JobQueue::depth), so every
  // autoscaled model sees the whole backlog: a queued job never leaves the model it needs at
  // zero, at the price of waking the others too.
  std::function<JobBacklog()> read_jobs;
  std::function<void(const std::string &json_line)> log;
  // Carries each decision out (issue 14's executors on a gateway); called on the evaluator
  // after every evaluation of a model, changed or not (a failed start is retried from here).
  std::function<void(const std::string &model, const autoscale::Decision &)> act;
  // Called once per evaluation before the models are read (one registry read for them all).
  std::function<void()> before_tick;
};

class AutoscaleMonitor {
public:
  AutoscaleMonitor(const std::map<std::string, autoscale::PolicyConfig> &policies,
                   AutoscaleDeps deps,
                   std::chrono::milliseconds interval = std::chrono::milliseconds(1000));
  ~AutoscaleMonitor(); // stops the evaluator

  void start();
  void stop();

  // One evaluation of every model (the evaluator's body; tests call it on a FakeClock).
  void tick();
  // Evaluates now instead of at the next interval (a request held for a model at zero).
  void poke();

  // gantry:desired_replicas, gantry:replicas{state} and gantry:autoscale_changes_total.
  void render_metrics(std::ostream &out) const;

  std::optional<autoscale::Decision> last(const std::string &model) const;

private:
  struct Model {
    std::unique_ptr<autoscale::Policy> policy;
    // What the evaluator last saw and decided (guarded by mu_ for the readers).
    bool evaluated = false;
    autoscale::Signals signals;
    autoscale::Decision decision;
    std::optional<autoscale::Decision> logged; // the last decision written to the log
    int64_t ups = 0, downs = 0;
    // The previous token counter reading, for tokens/s (evaluator only).
    std::optional<std::pair<uint64_t, std::chrono::steady_clock::time_point>> tokens_at;
  };

  void run();

  AutoscaleDeps deps_;
  const std::chrono::milliseconds interval_;
  std::map<std::string, Model> models_; // the set is fixed at construction

  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  bool poked_ = false;
  std::thread thread_;
};

} // namespace gantry::server
