// Executors (issue 14 item 2, docs/AUTOSCALING.md): what carries an autoscaled model's desired
// replica count out on a gateway, and where its replica counts come from.
//
//   LocalExecutor    starts `gantry serve --role worker` processes for the model and stops the
//                    surplus with SIGTERM (the worker drains: finishes its work within drain_s,
//                    hands job leases back, exits). starting = started, not yet live in the
//                    worker registry; ready = live; draining = SIGTERM sent, not exited yet.
//   CommandExecutor  runs `scale_command ... <desired>` (GANTRY_MODEL, GANTRY_DESIRED_REPLICAS
//                    in its environment) whenever the count it last applied differs; a cloud CLI
//                    or a script. ready = the model's live workers in the registry; starting =
//                    what was asked for beyond that.
//   ExternalExecutor starts nothing: something outside follows gantry:desired_replicas (KEDA's
//                    Prometheus trigger, deploy/k8s/keda.yaml). The gateway still knows the
//                    model at zero, holds its requests while replicas start and exports the
//                    decisions. ready = the model's live workers; starting = what the last
//                    decision asked for beyond that (pods being scheduled, pulled, loaded).
//
// Failures — a worker that exits without being asked to, one never live within start_timeout,
// a hook that exits non-zero or outlives command_timeout — are logged as a JSON line, counted
// (gantry:autoscale_executor_failures_total), and the next attempt waits an exponential
// back-off (1 s doubling to 60 s, reset by a success): a broken setup never thrashes.
//
// Threading: owned by the autoscaler's evaluator thread (observe, reconcile, stop_all);
// failures() and render_metrics() from any thread.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <functional>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "autoscale/policy.h"
#include "core/clock.h"
#include "server/child_process.h"
#include "server/config.h"

namespace gantry::server {

struct ExecutorOptions {
  std::string model;
  AutoscaleExecutorSpec spec;
  int max_replicas = 8; // the policy's: a bound on the processes (plus those draining)
  // A stopped worker still running this long after its SIGTERM is killed (drain_s + a margin).
  std::chrono::milliseconds kill_after{45'000};
  std::chrono::milliseconds backoff_base{1'000};
  std::chrono::milliseconds backoff_max{60'000};
  // LocalExecutor: the worker's argv; `node_id` of a started worker is node_prefix + its pid
  // (a worker's default instance id is hostname:pid).
  std::vector<std::string> worker_argv;
  std::string node_prefix;
  std::function<void(const std::string &json_line)> log;
};

class ReplicaExecutor {
public:
  virtual ~ReplicaExecutor() = default;
  // Reaps what exited, checks deadlines, and answers the replica counts now. `live_nodes`: the
  // registry's live node ids; `live_workers`: those that have this model.
  virtual autoscale::ReplicaCounts observe(const std::set<std::string> &live_nodes,
                                           int live_workers) = 0;
  virtual void reconcile(int desired) = 0;
  // Gateway shutdown: SIGTERM to every process, then SIGKILL to those left at the deadline.
  virtual void stop_all(std::chrono::milliseconds grace) = 0;
  uint64_t failures() const { return failures_.load(); }

protected:
  ReplicaExecutor(ExecutorOptions o, ProcessPort &processes, const Clock &clock)
      : o_(std::move(o)), processes_(processes), clock_(clock) {}
  // Counts and logs a failure and sets the back-off.
  void fail(const std::string &what, const std::string &detail);
  void succeeded() { consecutive_ = 0; }
  bool backing_off() const { return clock_.now() < retry_at_; }
  void log(const std::string &event, const std::string &fields) const;

  const ExecutorOptions o_;
  ProcessPort &processes_;
  const Clock &clock_;

private:
  std::atomic<uint64_t> failures_{0};
  int consecutive_ = 0;
  std::chrono::steady_clock::time_point retry_at_{};
};

class LocalExecutor final : public ReplicaExecutor {
public:
  LocalExecutor(ExecutorOptions o, ProcessPort &processes, const Clock &clock)
      : ReplicaExecutor(std::move(o), processes, clock) {}
  autoscale::ReplicaCounts observe(const std::set<std::string> &live_nodes,
                                   int live_workers) override;
  void reconcile(int desired) override;
  void stop_all(std::chrono::milliseconds grace) override;
  int processes() const { return static_cast<int>(workers_.size()); } // running, any state

private:
  struct Worker {
    int pid = 0;
    std::string node_id;
    std::chrono::steady_clock::time_point started{}, stopped{};
    bool live = false, was_live = false, draining = false;
  };
  std::vector<Worker> workers_;
};

class CommandExecutor final : public ReplicaExecutor {
public:
  CommandExecutor(ExecutorOptions o, ProcessPort &processes, const Clock &clock)
      : ReplicaExecutor(std::move(o), processes, clock) {}
  autoscale::ReplicaCounts observe(const std::set<std::string> &live_nodes,
                                   int live_workers) override;
  void reconcile(int desired) override;
  void stop_all(std::chrono::milliseconds grace) override;

private:
  int pid_ = 0; // the hook running now, 0 = none
  int running_for_ = 0;
  bool killed_ = false;
  std::chrono::steady_clock::time_point started_{};
  std::optional<int> applied_; // the count the last successful run set
  int asked_ = 0;              // the count last run for
};

class ExternalExecutor final : public ReplicaExecutor {
public:
  ExternalExecutor(ExecutorOptions o, ProcessPort &processes, const Clock &clock)
      : ReplicaExecutor(std::move(o), processes, clock) {}
  autoscale::ReplicaCounts observe(const std::set<std::string> &live_nodes,
                                   int live_workers) override;
  void reconcile(int desired) override { asked_ = std::clamp(desired, 0, o_.max_replicas); }
  void stop_all(std::chrono::milliseconds) override {} // the replicas are not the gateway's

private:
  int asked_ = 0;
};

} // namespace gantry::server
