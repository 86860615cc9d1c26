// Model-aware routing on a gateway (roles, issue 13): watches the worker registry and keeps, for
// each model some live worker has loaded, one RemoteBackend whose pool members are exactly those
// workers (least outstanding requests over power-of-two choices, prefix affinity when
// configured, retries and passive ejection — the pool of the backends issue). A model seen for
// the first time becomes a ModelRegistry entry, so chat, completions, streaming, embeddings, jobs
// and batches reach it the way they reach any model; after that only its members change.
//
// The registry is polled every heartbeat period: a worker that announces itself is routed to
// within one period, one that dies drops out when its TTL runs out (a connect error ejects it
// from its pools sooner). While the registry cannot be read, the last membership stays.
//
// Gateways authenticate to workers with the internal token, sent as each member's API key (the
// RemoteBackend scrubs it from any upstream text; it is never logged).
//
// Threading: one watcher thread applies the updates; the accessors are safe from any thread.
#pragma once

#include <atomic>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <ostream>
#include <set>
#include <string>
#include <thread>

#include "cluster/worker_directory.h"
#include "cluster/worker_registry.h"
#include "core/clock.h"
#include "server/model_registry.h"

namespace gantry::backend::remote {
class RemoteBackend;
}

namespace gantry::server {

struct WorkerPoolsOptions {
  std::chrono::milliseconds poll{1000}; // the workers' heartbeat period
  std::string token;                    // the internal token sent to workers
  std::string routing = "least";        // "least" | "prefix" (prefix affinity)
  int max_models = 256;                 // worker-hosted models tracked
  int max_workers = 256;                // members per model's pool
  std::string tls_ca_file;              // extra trusted CAs for https:// workers
  // Called on the watcher thread after a model's membership changed, with its live workers now
  // (the cold-start gate releases held requests on it; issue 14).
  std::function<void(const std::string &model, int live)> on_members;
  // Called after each registry read with every worker-hosted model's price: the element-wise
  // highest its live workers announce (a reservation must not under-estimate any of them).
  std::function<void(const std::string &model, const cluster::ModelPrice &price)> on_price;
};

class WorkerPools {
public:
  using Log = std::function<void(const std::string &line)>;

  WorkerPools(ModelRegistry &models, cluster::WorkerRegistry &registry, WorkerPoolsOptions options,
              const Clock &clock, Log log);
  ~WorkerPools(); // stop()

  // Reads the registry once and applies what changed (start-up and tests); the error when the
  // registry could not be read (the membership is then left as it was).
  Status poll_once();
  // Issue 14: a model routed to workers from start-up, with no live worker yet (an autoscaled
  // model at zero). Its pool is created empty; `wrap` puts a decorator (the cold-start gate)
  // around it, which becomes the registry entry. Before start().
  using Wrap =
      std::function<std::unique_ptr<backend::ModelBackend>(std::unique_ptr<backend::ModelBackend>)>;
  Status expect_model(const std::string &model, const Wrap &wrap);
  void start(); // polls on the watcher thread every options.poll
  void stop();

  int live_workers(std::string_view model) const { return directory_.live_workers(model); }
  // /readyz: the registry dependency (degraded, never failed, while it cannot be read: every
  // gateway shares it) with the live workers and worker-hosted models.
  Result<std::map<std::string, int64_t>> check() const;
  // gantry:workers{model_name} and the registry's own counters.
  void render_metrics(std::ostream &o) const;

private:
  void loop();
  void apply(const cluster::MembershipChange &change);
  void apply_members(const cluster::MembershipChange &change);

  ModelRegistry &models_;
  cluster::WorkerRegistry &registry_;
  const WorkerPoolsOptions options_;
  const Clock &clock_;
  const Log log_;
  cluster::WorkerDirectory directory_;
  // Models served by this gateway itself (configured remote models): never routed to workers.
  std::set<std::string, std::less<>> own_;
  std::map<std::string, backend::remote::RemoteBackend *, std::less<>> pools_; // watcher thread
  std::atomic<bool> registry_ok_{true};
  std::atomic<uint64_t> poll_failures_{0}, members_added_{0}, members_removed_{0};
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::thread thread_;
};

} // namespace gantry::server
