// The worker's side of the registry: announces this node every `period` with a TTL (a snapshot
// of its models and load, taken fresh each time), and withdraws it on stop() so gateways stop
// routing to it before it refuses work. A failed announcement is retried at the next beat (the
// TTL is a few periods long, so one lost beat does not drop the worker) and counted.
//
// Threading: its own heartbeat thread calls the snapshot function and the registry; start() and
// stop() on the owner's thread.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include "cluster/worker_registry.h"

namespace gantry::cluster {

struct HeartbeatOptions {
  std::chrono::milliseconds period{1000};
  std::chrono::milliseconds ttl{3000};
};

class WorkerHeartbeat {
public:
  using Snapshot = std::function<WorkerInfo()>;
  using Log = std::function<void(const std::string &line)>;

  WorkerHeartbeat(WorkerRegistry &registry, Snapshot snapshot, HeartbeatOptions options, Log log);
  ~WorkerHeartbeat(); // stop()

  // Announces once synchronously (a start-up error when the registry refuses the node: a bad
  // field or a full registry), then beats on the thread.
  Status start();
  // Stops beating and withdraws the node. Idempotent.
  void stop();

  uint64_t beats() const { return beats_.load(); }
  uint64_t failures() const { return failures_.load(); }

private:
  void loop();

  WorkerRegistry &registry_;
  const Snapshot snapshot_;
  const HeartbeatOptions options_;
  const Log log_;
  std::string node_id_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::thread thread_;
  std::atomic<uint64_t> beats_{0}, failures_{0};
};

} // namespace gantry::cluster
