// The composition root of `gantry serve`: loads the models, starts one ModelWorker per model and
// the HTTP server, and wires the OpenAI routes between them.
//
// Threading: constructed and shut down on the main thread; route handlers run on I/O threads;
// token sinks run on each model's engine thread.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "api/chat_template.h"
#include "api/openai.h"
#include "control/backup_scheduler.h"
#include "control/control_plane.h"
#include "core/clock.h"
#include "core/result.h"
#include "http/router.h"
#include "http/server.h"
#include "observe/error_tracker.h"
#include "observe/sentry.h"
#include "server/auth_outcome.h"
#include "server/config.h"
#include "server/embedding_service.h"
#include "server/jobs_api.h"
#include "server/model_worker.h"
#include "server/observed_writer.h"
#include "server/operator_views.h"
#include "server/outbound.h"
#include "server/response_cache.h"
#include "telemetry/metrics.h"
#include "telemetry/request_log.h"

namespace gantry::server {

struct ServedModel {
  ModelSpec spec;
  std::unique_ptr<ModelWorker> worker;
  api::ChatFormat chat_format = api::ChatFormat::kPlain;
  bool template_recognized = true;
  int64_t created = 0;
  std::string digest; // model_digest() of the file: part of every cache key
  // /readyz: last one-token probe (guarded by Gateway::ready_mu_).
  std::chrono::steady_clock::time_point probe_at{};
  bool probe_ok = false;
  double probe_ms = 0; // how long the last probe took
  std::string probe_error;
};

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
  // Graceful: refuse new requests (503), let in-flight ones finish up to the configured grace,
  // cancel what is left, close connections. Returns true when nothing had to be cut off.
  bool shutdown();

  const std::vector<std::unique_ptr<ServedModel>> &models() const { return models_; }
  http::ServerStats http_stats() const { return http_->stats(); }
  const ServerConfig &config() const { return config_; }
  control::ControlPlane &control() const { return *control_; }
  const telemetry::Registry &metrics() const { return metrics_; }
  const telemetry::RequestLog *request_log() const { return request_log_.get(); }
  const ResponseCache &response_cache() const { return *response_cache_; }
  const EmbeddingService &embeddings() const { return *embeddings_; }
  const JobsService &jobs() const { return *jobs_; }

private:
  Gateway(ServerConfig config, const Clock &clock) : config_(std::move(config)), clock_(clock) {}
  http::Handler build_routes();
  http::Handler build_ops_routes();          // the admin port: health, metrics, admin API
  void add_ops_routes(http::Router &r);      // health probes: on every listener
  void add_operator_routes(http::Router &r); // metrics and /admin/*: the admin listener if any
  http::Handler guarded(http::Router &&r);
  ServedModel *find_model(std::string_view name);
  void handle_inference(int endpoint, http::Request &&req, std::shared_ptr<http::ResponseWriter> w);
  void handle_ready(std::shared_ptr<http::ResponseWriter> w);
  // 401 (answered here) when the call needs a key and has no valid one.
  AuthOutcome authenticate(const http::Request &req,
                           const std::shared_ptr<http::ResponseWriter> &w);
  // A job's request (JobsService's executor): metrics and log like a call, then run_inference.
  void execute_job(api::Endpoint endpoint, http::Request &&req,
                   std::shared_ptr<http::ResponseWriter> w,
                   std::optional<control::Principal> principal);
  void run_inference(api::Endpoint endpoint, http::Request &&req,
                     std::shared_ptr<http::ResponseWriter> w,
                     std::optional<control::Principal> principal, std::shared_ptr<CallRecord> rec);
  // Metrics and the JSON log line of one finished inference call.
  void record_call(CallRecord &rec);
  struct CallSeries {
    telemetry::Counter *requests = nullptr, *success = nullptr;
    telemetry::Histogram *e2e = nullptr, *ttft = nullptr, *queue = nullptr, *prefill = nullptr,
                         *decode = nullptr, *overhead = nullptr;
  };
  CallSeries &call_series(const CallRecord &rec);
  void handle_embeddings(http::Request &&req, std::shared_ptr<http::ResponseWriter> w);

  ServerConfig config_;
  const Clock &clock_;
  std::unique_ptr<Outbound> outbound_; // first: the control plane and jobs post through it
  std::vector<std::unique_ptr<ServedModel>> models_;
  std::unique_ptr<control::ControlPlane> control_;
  std::unique_ptr<control::BackupScheduler> backups_;
  telemetry::Registry metrics_;
  // The forwarder outlives the tracker that feeds it (declared first, destroyed last).
  std::unique_ptr<observe::SentryForwarder> sentry_;
  std::unique_ptr<observe::ErrorTracker> errors_;
  std::unique_ptr<telemetry::RequestLog> request_log_;
  std::string instance_id_;
  static inline std::atomic<uint64_t> next_instance_{1};
  const uint64_t instance_ = next_instance_.fetch_add(1);
  std::string admin_token_;
  std::unique_ptr<http::HttpServer> http_;
  std::unique_ptr<http::HttpServer> admin_http_;
  std::unique_ptr<ResponseCache> response_cache_;
  std::unique_ptr<EmbeddingService> embeddings_;
  std::unique_ptr<JobsService> jobs_; // stopped before the models it runs on

  // /dashboard and /status: declared after what its sampler reads, so destroyed before it.
  std::unique_ptr<OperatorViews> views_;
  std::atomic<bool> shutting_down_{false};
  std::mutex ready_mu_;
};

} // namespace gantry::server
