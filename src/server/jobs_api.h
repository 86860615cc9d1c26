// Async jobs over HTTP: /v1/jobs (submit, get, list, cancel, deliveries), the OpenAI Batch API
// (/v1/files, /v1/batches) and the admin route that rotates a project's webhook secret. Owns
// the durable queue, the runner (executing jobs through the gateway's inference path as the key
// that submitted them), the webhook dispatcher and the batch coordinator.
//
// Threading: routes run on I/O threads; the runner's workers, the dispatcher and the
// coordinator have their own threads (see JobRunner, WebhookDispatcher). create() and stop()
// run on the main thread.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <thread>

#include "api/openai.h"
#include "control/control_plane.h"
#include "control/secret_box.h"
#include "core/clock.h"
#include "http/body_sink.h"
#include "http/router.h"
#include "jobs/job_events.h"
#include "jobs/job_ids.h"
#include "jobs/job_queue.h"
#include "jobs/job_records.h"
#include "jobs/job_runner.h"
#include "jobs/webhook_dispatcher.h"
#include "server/admin_api.h"
#include "server/api_call.h"
#include "server/auth_outcome.h"
#include "server/config.h"
#include "server/inference_service.h"
#include "server/stores.h"

namespace gantry::server {

class JobsService {
public:
  // The gateway's hook: authenticate a request (answers 401 itself and returns nullopt). Jobs
  // run through `inference` (the typed call) and are recorded through `calls`.
  using Authenticate = std::function<AuthOutcome(const http::Request &,
                                                 const std::shared_ptr<http::ResponseWriter> &)>;
  using WebhookPost = jobs::WebhookDispatcher::Post;

  static Result<std::unique_ptr<JobsService>>
  create(const ServerConfig &config, control::ControlPlane &control, const Clock &clock,
         JobStores stores, Authenticate authenticate, ApiCalls &calls, InferenceService &inference,
         WebhookPost post, AdminAuth &admin_auth);
  ~JobsService();

  void add_routes(http::Router &router); // /v1/jobs, /v1/files, /v1/batches
  // POST /v1/files streams its body (http::ServerOptions::streamed_body_limit / body_sink): the
  // largest body such a request may have (the file cap and the multipart framing), 0 for any
  // other request; and the sink that parses the upload and writes the file piece by piece.
  size_t streamed_body_limit(const http::Request &head) const;
  std::unique_ptr<http::BodySink> open_upload(const http::Request &head,
                                              std::optional<http::Response> &refusal);
  void add_admin_routes(http::Router &router); // admin token: webhook secret rotation
  void start();
  // Stops leasing new jobs (graceful shutdown begins); running ones go on.
  void stop_leasing();
  // The drain: running jobs get until `grace` to finish, then the unfinished ones are handed back
  // to the queue at once (JobRunner::drain) and the threads joined. How many were handed back.
  int drain(std::chrono::milliseconds grace);
  // drain(0).
  void stop();

  // /readyz's check of the job queue: a read round trip through its store, with the number of
  // queued jobs and the oldest one's age in seconds.
  Result<std::map<std::string, int64_t>> check_queue();

  // The jobs and webhook counters in Prometheus text (for /metrics).
  void render_metrics(std::ostream &out) const;

private:
  class Executor; // job_executor.cpp
  class Upload;   // batch_api.cpp
  static std::unique_ptr<jobs::JobExecutor> make_executor(JobsService &svc);
  JobsService(const ServerConfig &config, control::ControlPlane &control, const Clock &clock);

  void submit(http::Request &&req, std::shared_ptr<http::ResponseWriter> w);
  // Submissions (/v1/jobs, /v1/files, /v1/batches) count against the key's rate limits like
  // inference calls (audit M3). The one call into the control plane's admission.
  Status admit_submission(const control::Principal *principal, std::string_view endpoint,
                          const std::string &id);
  // Answers a POST held by `Prefer: wait` once its wait ended: 200 with a finished job, else 202.
  void answer_wait(const std::shared_ptr<http::ResponseWriter> &w, const std::string &id);
  void on_event(const jobs::Job &job, std::string_view event);
  void coordinate(); // the coordinator thread: Prefer-wait deadlines and batch progress
  Status advance_batch(jobs::Batch b);
  Result<std::string> sign_key_secrets(const std::string &project);

  void add_batch_routes(http::Router &router); // batch_api.cpp
  void create_batch(http::Request &&req, std::shared_ptr<http::ResponseWriter> w,
                    const control::Principal *principal);

  const JobsConfig config_;
  control::ControlPlane &control_;
  // Project webhook secrets are stored sealed under the key pepper (audit M5).
  const control::SecretBox secrets_box_;
  const Clock &clock_;
  Authenticate authenticate_;
  ApiCalls *calls_ = nullptr;             // outcomes and their records (metrics, request log)
  InferenceService *inference_ = nullptr; // the typed call a job runs
  AdminAuth *admin_auth_ = nullptr;
  jobs::JobIds ids_;
  // The ports, from open_stores().
  std::unique_ptr<jobs::JobQueue> queue_;
  std::unique_ptr<jobs::JobRecords> records_;
  std::unique_ptr<jobs::JobEvents> events_; // Prefer-wait completions and cancels
  std::unique_ptr<jobs::JobExecutor> executor_;
  std::unique_ptr<jobs::JobRunner> runner_;
  std::unique_ptr<jobs::WebhookDispatcher> webhooks_;

  std::mutex mu_; // guards stopping_ and the coordinator's flags
  std::condition_variable cv_;
  bool stopping_ = false;
  bool batches_dirty_ = true;
  bool waiters_added_ = false;
  std::thread coordinator_;
};

} // namespace gantry::server
