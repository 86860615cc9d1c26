// The composition root of `gantry serve`: loads the models (one LocalBackend each, in the
// ModelRegistry), builds the control plane, the caches, the InferenceService and the route
// classes, and starts the HTTP listeners. Nothing else chooses adapters or wires services; the
// request path itself lives in the classes it builds:
//
//   InferenceRoutes  /v1/chat/completions, /v1/completions → InferenceService → ModelBackend
//   EmbeddingsRoute  /v1/embeddings → EmbeddingService → ModelBackend
//   HealthRoutes     /healthz, /startupz, /readyz, /v1/models
//   JobsService      /v1/jobs, /v1/files, /v1/batches (its executor calls InferenceService)
//   CallRecorder     metrics and the request log of every call (from its CallOutcome)
//
// Threading: constructed and shut down on the main thread; route handlers run on I/O threads;
// backend events on each model's engine thread; templating and tokenizing on the prepare pool.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "api/chat_template.h"
#include "cluster/worker_heartbeat.h"
#include "cluster/worker_registry.h"
#include "control/backup_scheduler.h"
#include "control/control_plane.h"
#include "control/key_events.h"
#include "core/clock.h"
#include "core/result.h"
#include "core/thread_guard.h"
#include "http/router.h"
#include "http/server.h"
#include "observe/error_tracker.h"
#include "observe/sentry.h"
#include "server/admin_api.h"
#include "server/api_call.h"
#include "server/auth_outcome.h"
#include "server/autoscale_executors.h"
#include "server/autoscale_monitor.h"
#include "server/call_recorder.h"
#include "server/config.h"
#include "server/embedding_service.h"
#include "server/embeddings_route.h"
#include "server/health_routes.h"
#include "server/inference_routes.h"
#include "server/inference_service.h"
#include "server/jobs_api.h"
#include "server/local_models.h"
#include "server/metrics_text.h"
#include "server/model_registry.h"
#include "server/operator_views.h"
#include "server/outbound.h"
#include "server/prepare_pool.h"
#include "server/response_cache.h"
#include "server/stores.h"
#include "server/typed_api_routes.h"
#include "server/worker_pools.h"
#include "telemetry/metrics.h"
#include "telemetry/request_log.h"

namespace gantry::server {

class Gateway {
public:
  using LoadProgress = std::function<void(const std::string &model, uint64_t, uint64_t)>;

  // Loads every model (errors name the model and file) and starts the engines; the HTTP server
  // is not started yet.
  static Result<std::unique_ptr<Gateway>> create(ServerConfig config, const Clock &clock,
                                                 const LoadProgress &progress = nullptr);
  ~Gateway();

  Status start();
  uint16_t port() const;
  uint16_t admin_port() const; // 0 when there is no separate admin port
  // Begins the drain (SIGTERM, a spot preemption notice through POST /admin/v1/drain): from now
  // on new requests get 503 with Retry-After, /readyz is not ready (so load balancers move
  // traffic; /healthz stays up), and no job is leased. In-flight work goes on. Idempotent, any
  // thread. True for the call that began it.
  bool begin_drain();
  // Called once, on an I/O thread, when POST /admin/v1/drain began the drain: `gantry serve` turns
  // it into its SIGTERM path (shutdown(), then exit 0). Set before start().
  void on_drain_requested(std::function<void()> fn) { drain_requested_ = std::move(fn); }
  // The whole drain: begin_drain(), let in-flight requests and jobs finish within drain_s, hand
  // the leases of unfinished jobs back at once (another node runs them now), cancel what is left
  // (streams end with an error event), close connections. True when nothing had to be cut off.
  bool shutdown();
  int jobs_handed_back() const { return jobs_handed_back_; } // by shutdown()

  const std::vector<LocalModel> &local_models() const { return local_models_; }
  const ModelRegistry &models() const { return registry_; }
  // Whether the API demands a key right now (the open-API start-up warning reads it).
  bool auth_required() const { return control_->auth_required(); }
  const ServerConfig &config() const { return config_; }
  // A worker's base URL as announced to gateways ("" unless role = worker and started).
  const std::string &advertised_url() const { return advertised_url_; }

private:
  Gateway(ServerConfig config, const Clock &clock) : config_(std::move(config)), clock_(clock) {}
  Status load_models(const LoadProgress &progress);
  Status build_control(Stores &stores);
  Status build_observability();
  Status build_services(Stores &stores);
  Status build_roles(Stores &stores); // the worker registry's side of each role (issue 13)
  cluster::WorkerInfo worker_snapshot() const;
  std::string metrics_text();
  void build_autoscale(); // the policies of [autoscale.<model>], over the registry and jobs
  void build_servers();
  http::Handler build_routes();
  http::Handler build_ops_routes();          // the admin port: health, metrics, admin API
  void add_operator_routes(http::Router &r); // metrics and /admin/*: the admin listener if any
  http::Handler guarded(http::Router &&r);
  // Audit M6: an upload without a valid key gets its 401 before its body is read.
  std::optional<http::Response> refuse_before_body(const http::Request &req);
  ReplicaState replica_state() const {
    return {config_.replica_price_per_hour, shutting_down_.load()};
  }

  ServerConfig config_;
  const Clock &clock_;
  std::unique_ptr<Outbound> outbound_; // first: the control plane and jobs post through it
  std::vector<LocalModel> local_models_;
  // Placement (issue 14): set when models_max bounds the loaded models. Before registry_, whose
  // entries point into it.
  std::unique_ptr<backend::ModelHost> model_host_;
  ModelRegistry registry_;
  std::unique_ptr<control::ControlPlane> control_;
  // After control_: destroyed (its subscriber thread joined) before the control plane it calls.
  std::shared_ptr<control::KeyEvents> key_events_;
  std::unique_ptr<control::BackupScheduler> backups_;
  telemetry::Registry metrics_;
  // The forwarder outlives the tracker that feeds it (declared first, destroyed last).
  std::unique_ptr<observe::SentryForwarder> sentry_;
  std::unique_ptr<observe::ErrorTracker> errors_;
  // Exceptions escaping background threads go to errors_; declared after it, so it ends first.
  std::unique_ptr<ScopedFailureReporter> thread_failures_;
  std::unique_ptr<telemetry::RequestLog> request_log_;
  std::string instance_id_;
  std::unique_ptr<AdminAuth> admin_auth_;
  std::unique_ptr<CallRecorder> recorder_;
  std::unique_ptr<ApiCalls> calls_;
  std::unique_ptr<ResponseCache> response_cache_;
  std::unique_ptr<EmbeddingService> embeddings_;
  std::unique_ptr<PreparePool> prepare_pool_; // drained before the services its tasks call
  std::unique_ptr<InferenceService> inference_;
  std::unique_ptr<InferenceRoutes> inference_routes_;
  std::unique_ptr<TypedApiRoutes> typed_routes_; // /v1/responses, /v1/messages
  std::unique_ptr<EmbeddingsRoute> embeddings_route_;
  std::unique_ptr<HealthRoutes> health_routes_;
  std::unique_ptr<JobsService> jobs_; // stopped before the models it runs on
  // Reads the registry and the job queue: stopped first, declared after both.
  std::unique_ptr<AutoscaleMonitor> autoscale_;
  std::unique_ptr<http::HttpServer> http_;
  std::unique_ptr<http::HttpServer> admin_http_;
  // /dashboard and /status: declared after what its sampler reads, so destroyed before it.
  std::unique_ptr<OperatorViews> views_;
  // Roles (issue 13): the registry, a gateway's pools of workers or a worker's heartbeat. Stopped
  // first at shutdown (a worker withdraws before it refuses work).
  std::string worker_token_; // never logged
  std::string advertised_url_;
  std::shared_ptr<cluster::WorkerRegistry> worker_registry_;
  std::unique_ptr<WorkerPools> worker_pools_;
  // Issue 14: the executors and cold-start gates of autoscaled worker-hosted models (gateway).
  // Declared after the pools whose membership callback reaches it; stopped after autoscale_.
  std::unique_ptr<AutoscaleExecutors> executors_;
  std::unique_ptr<cluster::WorkerHeartbeat> heartbeat_;
  std::atomic<bool> shutting_down_{false}; // the drain began
  std::function<void()> drain_requested_;
  int jobs_handed_back_ = 0;
};

} // namespace gantry::server
