// A gateway's autoscaled worker-hosted models (issue 14 items 2 and 3): for each `[[models]]`
// entry whose `[autoscale.<model>]` table names an executor, the model is routed to the worker
// pool from start-up (known with zero workers, behind its ColdStartGate) and its executor
// starts and stops the replicas the policy asks for. The gateway owns one of these; the
// AutoscaleMonitor calls observe()/act() on its evaluator thread.
//
// Threading: build on the main thread before start(); refresh(), replicas() and act() on the
// evaluator thread; set_ready() on the WorkerPools watcher thread; render_metrics() anywhere.
#pragma once

#include <map>
#include <memory>
#include <ostream>
#include <set>
#include <string>

#include "autoscale/policy.h"
#include "cluster/worker_registry.h"
#include "core/clock.h"
#include "server/child_process.h"
#include "server/cold_start_gate.h"
#include "server/config.h"
#include "server/replica_executor.h"
#include "server/worker_pools.h"

namespace gantry::server {

class AutoscaleExecutors {
public:
  AutoscaleExecutors(const ServerConfig &config, const Clock &clock,
                     std::function<void(const std::string &)> log)
      : config_(config), clock_(clock), log_(std::move(log)) {}
  ~AutoscaleExecutors() { stop_all(std::chrono::milliseconds(2000)); }

  // True when some model has an executor (only gateways have them: config validation).
  static bool any(const ServerConfig &config);
  bool manages(const std::string &model) const { return executors_.count(model) > 0; }

  // Registers each managed model with the pools (an empty pool behind a ColdStartGate) and
  // builds its executor. `on_hold` wakes the autoscaler.
  Status build(WorkerPools &pools, std::function<void()> on_hold);
  void start(); // the gates' tickers

  // Evaluator thread: one registry read per evaluation.
  void refresh(cluster::WorkerRegistry &registry);
  // Signals and replica counts of a managed model (nullopt for others): demand at the gateway is
  // the calls outstanding at its pool plus the calls held.
  std::optional<autoscale::Signals> read(const std::string &model, int live_workers);
  void act(const std::string &model, int desired);
  // The pools' membership callback.
  void set_ready(const std::string &model, int live);

  void stop_all(std::chrono::milliseconds grace);
  // gantry:autoscale_executor_failures_total and the cold-start gates' families.
  void render_metrics(std::ostream &o) const;

private:
  std::vector<std::string> worker_argv(const ModelSpec &spec, const std::string &config_path) const;
  Result<std::string> write_worker_config(const std::string &model) const;

  const ServerConfig &config_;
  const Clock &clock_;
  const std::function<void(const std::string &)> log_;
  ChildProcesses processes_;
  std::map<std::string, std::unique_ptr<ReplicaExecutor>> executors_;
  std::map<std::string, ColdStartGate *> gates_; // owned by the model registry
  std::set<std::string> live_nodes_;             // evaluator thread
  bool stopped_ = false;
};

} // namespace gantry::server
