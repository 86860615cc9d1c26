#include "server/gateway.h"

#include <boost/json.hpp>

#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <unistd.h>

#include "backend/local/local_backend.h"
#include "control/api_key.h"
#include "control/webhook_signature.h"
#include "observe/http_poster.h"
#include "server/admin_api.h"
#include "server/metrics_text.h"
#include "server/model_digest.h"
#include "server/remote_models.h"
#include "server/stores.h"

namespace gantry::server {
namespace {

// Template rendering and tokenizing (audit M4): a few threads, and a bounded queue in front of
// them (each queued task holds a parsed request; beyond the bound, 429 with Retry-After).
constexpr int kPrepareThreads = 2;
constexpr size_t kPrepareQueue = 256;

std::string env_or_file(const char *var, const char *file_var) {
  if (const char *v = std::getenv(var); v && *v)
    return v;
  if (const char *f = std::getenv(file_var); f && *f)
    return read_secret_file(f);
  return {};
}

void log_line(const std::string &line) { std::fprintf(stderr, "%s\n", line.c_str()); }

// The internal token between gateways and workers: from worker_token_file, else the variable
// worker_token_env names. Required by both roles; never echoed.
Result<std::string> worker_token(const ServerConfig &c) {
  std::string token;
  if (!c.worker_token_file.empty()) {
    token = read_secret_file(c.worker_token_file);
    if (token.empty())
      return config_error("worker_token_file", "cannot be read or is empty");
  } else if (const char *v = std::getenv(c.worker_token_env.c_str()); v && *v) {
    token = v;
  }
  if (token.empty())
    return config_error("worker_token_file", "role \"" + c.role +
                                                 "\" needs the internal token gateways and workers "
                                                 "share: set $" +
                                                 c.worker_token_env + " or worker_token_file");
  if (token.size() < 16 || token.find_first_of(" \t\r\n") != std::string::npos)
    return config_error("worker_token_file",
                        "the internal token must be at least 16 characters, without spaces");
  return token;
}

} // namespace

Result<std::unique_ptr<Gateway>> Gateway::create(ServerConfig config, const Clock &clock,
                                                 const LoadProgress &progress) {
  GANTRY_TRY(config.validate());
  std::string token;
  if (config.role != "all") {
    GANTRY_ASSIGN_OR_RETURN(token, worker_token(config));
  }
  std::unique_ptr<Gateway> g(new Gateway(std::move(config), clock));
  g->worker_token_ = std::move(token);
  GANTRY_TRY(g->load_models(progress));
  // Every state port's adapter, chosen in one place (server/stores.h).
  GANTRY_ASSIGN_OR_RETURN(Stores stores, open_stores(g->config_, clock));
  GANTRY_TRY(g->build_control(stores));
  GANTRY_TRY(g->build_observability());
  GANTRY_TRY(g->build_services(stores));
  GANTRY_TRY(g->build_roles(stores));
  g->build_servers();
  return g;
}

// One LocalBackend per configured model (a remote backend would be one more registry entry), or
// a ModelHost's facades under models_max (server/local_models.h).
Status Gateway::load_models(const LoadProgress &progress) {
  // A gateway's [[models]] are autoscaled (config validation): its executor runs their workers.
  if (config_.role != "gateway") {
    GANTRY_ASSIGN_OR_RETURN(auto local,
                            add_local_models(config_, clock_, registry_, progress, log_line));
    local_models_ = std::move(local.models);
    model_host_ = std::move(local.host);
  }
  // Remote models (issue 12): one more registry entry each; fallbacks resolve by name at call
  // time, so they may name local or remote models in any order.
  GANTRY_ASSIGN_OR_RETURN(auto remote,
                          create_remote_backends(config_, clock_, [this](std::string_view n) {
                            return registry_.find(n);
                          }));
  for (auto &b : remote)
    registry_.add(std::move(b));
  return Ok();
}

// The control plane: keys, limits, quotas, cost, ledger.
Status Gateway::build_control(Stores &stores) {
  outbound_ = std::make_unique<Outbound>(config_, clock_);
  GANTRY_ASSIGN_OR_RETURN(std::string pepper, control::load_pepper(config_.data_dir));
  control::ControlConfig cc;
  cc.auth = control::auth_mode_from_name(config_.auth).value_or(control::AuthMode::kRequired);
  cc.global = {config_.global_rpm, config_.global_tpm, config_.global_max_concurrent};
  cc.ledger_flush = config_.ledger_flush;
  cc.ledger_retention = config_.ledger_retention;
  cc.key_poll = config_.key_poll;
  cc.alert_webhook_url = config_.alert_webhook_url;
  cc.ledger_keyless = config_.role != "worker"; // a gateway already billed what it sends here
  if (const char *sec = std::getenv("GANTRY_ALERT_WEBHOOK_SECRET"); sec && *sec) {
    std::istringstream in(sec);
    for (std::string one; in >> one;)
      cc.alert_webhook_secrets.push_back(one);
  }
  if (!cc.alert_webhook_url.empty()) {
    if (cc.alert_webhook_secrets.empty()) {
      return Err(Error::invalid("alerts.webhook_url is set but GANTRY_ALERT_WEBHOOK_SECRET is "
                                "not (generate one with `gantry keys webhook-secret`)"));
    }
    for (const auto &sec : cc.alert_webhook_secrets) {
      if (auto k = control::webhook_key(sec); !k) {
        return Err(Error::invalid("GANTRY_ALERT_WEBHOOK_SECRET: " + k.error().message));
      }
    }
  }
  std::vector<control::ModelControl> mcs;
  for (const auto &spec : config_.models) {
    control::ModelControl mc;
    mc.name = spec.name;
    // The replica's own hourly price (spot or on-demand) is charged like the model's: each call
    // pays its share of the engine time it was in.
    mc.price = {spec.price_input_per_mtok, spec.price_output_per_mtok,
                spec.price_per_hour + config_.replica_price_per_hour};
    mcs.push_back(std::move(mc));
  }
  for (auto &mc : remote_model_controls(config_))
    mcs.push_back(std::move(mc));
  control_ = std::make_unique<control::ControlPlane>(std::move(stores.control), std::move(pepper),
                                                     std::move(cc), std::move(mcs), clock_,
                                                     outbound_->alert_post(), log_line);
  GANTRY_TRY(control_->start());
  if (stores.key_events) { // other nodes' key changes reach this node's cache at once
    key_events_ = std::move(stores.key_events);
    key_events_->subscribe([cp = control_.get()] { cp->keys_changed(); });
  }
  control::BackupOptions bo;
  bo.interval = config_.backup_interval;
  bo.keep = config_.backup_keep;
  bo.dir = config_.backup_dir.empty() ? config_.data_dir + "/backups" : config_.backup_dir;
  backups_ = std::make_unique<control::BackupScheduler>(stores.backup_to, bo, clock_, log_line);
  // A token shorter than 32 characters stops start-up; failed attempts are throttled per peer
  // (audit M1).
  GANTRY_ASSIGN_OR_RETURN(
      admin_auth_, AdminAuth::create(env_or_file("GANTRY_ADMIN_TOKEN", "GANTRY_ADMIN_TOKEN_FILE"),
                                     clock_, log_line));
  return Ok();
}

// The request log, the error tracker (and Sentry), and the recorder that feeds them per call.
Status Gateway::build_observability() {
  if (config_.request_log != "off") {
    telemetry::RequestLogOptions lo;
    lo.path = config_.request_log;
    lo.max_bytes = static_cast<uint64_t>(config_.request_log_max_mb) << 20;
    lo.keep = config_.request_log_keep;
    GANTRY_ASSIGN_OR_RETURN(request_log_, telemetry::RequestLog::open(lo));
  }
  if (!config_.sentry_dsn.empty()) {
    GANTRY_ASSIGN_OR_RETURN(auto dsn, observe::parse_dsn(config_.sentry_dsn));
    if (auto st = observe::check_postable_url(dsn.envelope_url()); !st) {
      return Err(Error::invalid("sentry_dsn: " + st.error().message, "sentry_dsn"));
    }
    observe::SentryOptions so;
    so.context.environment = config_.environment;
    sentry_ = std::make_unique<observe::SentryForwarder>(
        dsn, so, observe::make_http_poster(std::chrono::seconds(5), config_.tls_ca_file), clock_);
  }
  errors_ = std::make_unique<observe::ErrorTracker>(clock_, observe::ErrorTrackerOptions{},
                                                    sentry_.get());
  // The engine, job runner, ledger writer, settlement, webhook and key threads report what escapes
  // them here: grouped at /admin/v1/errors (and Sentry) instead of a silent std::terminate.
  thread_failures_ = std::make_unique<ScopedFailureReporter>(
      [errors = errors_.get()](std::string_view site, const std::exception &e) {
        auto ev = observe::exception_event(e, std::string(site));
        ev.tags = {{"thread", std::string(site)}};
        errors->capture(std::move(ev));
      });
  instance_id_ = config_.instance_id;
  if (instance_id_.empty()) {
    char host[256] = {};
    ::gethostname(host, sizeof(host) - 1);
    instance_id_ = std::string(host) + ":" + std::to_string(::getpid());
  }
  recorder_ = std::make_unique<CallRecorder>(metrics_, config_.metrics, *errors_,
                                             request_log_.get(), instance_id_);
  calls_ = std::make_unique<ApiCalls>(*control_, clock_, *recorder_, shutting_down_);
  return Ok();
}

// The caches, the inference pipeline and the route classes over them.
Status Gateway::build_services(Stores &stores) {
  const CacheConfig &cache_cfg = config_.cache;
  response_cache_ = std::make_unique<ResponseCache>(
      std::move(stores.responses), ResponseCacheConfig{cache_cfg.enabled, cache_cfg.ttl});
  embeddings_ = std::make_unique<EmbeddingService>(std::move(stores.embeddings), cache_cfg.enabled,
                                                   cache_cfg.ttl);
  prepare_pool_ = std::make_unique<PreparePool>(kPrepareThreads, kPrepareQueue);
  InferenceServiceConfig ic;
  ic.prepare.default_max_tokens = config_.default_max_tokens;
  ic.metrics = config_.metrics;
  ic.share_cache_across_projects = config_.cache.share_across_projects;
  inference_ = std::make_unique<InferenceService>(registry_, *control_, *response_cache_,
                                                  *prepare_pool_, metrics_, clock_, ic);
  inference_routes_ = std::make_unique<InferenceRoutes>(*calls_, *inference_);
  typed_routes_ = std::make_unique<TypedApiRoutes>(*calls_, *inference_);
  embeddings_route_ = std::make_unique<EmbeddingsRoute>(
      *calls_, registry_, *embeddings_, *prepare_pool_, config_.cache.share_across_projects);
  health_routes_ = std::make_unique<HealthRoutes>(registry_, *control_, *calls_, clock_,
                                                  config_.ready_cache, shutting_down_);
  ApiCalls *calls = calls_.get();
  GANTRY_ASSIGN_OR_RETURN(
      jobs_, JobsService::create(
                 config_, *control_, clock_, std::move(stores.jobs),
                 [calls](const http::Request &req, const std::shared_ptr<http::ResponseWriter> &w) {
                   return calls->authenticate(req, *w, nullptr);
                 },
                 *calls_, *inference_, outbound_->webhook_post(), *admin_auth_));
  health_routes_->add_check("jobs", [jobs = jobs_.get()] { return jobs->check_queue(); });
  if (stores.redis_check)
    health_routes_->add_check("redis", std::move(stores.redis_check));
  build_autoscale();
  OperatorViewsDeps vd{
      &clock_,
      control_.get(),
      errors_.get(),
      admin_auth_.get(),
      &metrics_,
      [this] { return metrics_text(); },
      [this](std::shared_ptr<http::ResponseWriter> w) { health_routes_->ready(std::move(w)); },
      std::move(stores.readiness)};
  views_ = std::make_unique<OperatorViews>(std::move(vd), operator_views_options_from_env());
  return Ok();
}

std::string Gateway::metrics_text() {
  const MetricsSources src{registry_, *control_, http_->stats(),   *response_cache_, *embeddings_,
                           *jobs_,    metrics_,  autoscale_.get(), replica_state()};
  std::string out = render_metrics(src);
  if (worker_pools_) {
    std::ostringstream o;
    worker_pools_->render_metrics(o);
    if (executors_)
      executors_->render_metrics(o);
    out += o.str();
  }
  if (model_host_) {
    std::ostringstream o;
    render_placement_metrics(*model_host_, config_, o);
    out += o.str();
  }
  return out;
}

// Roles (issue 13). A gateway reads the registry now (so the models of workers already up are
// served from the first request) and then on its watcher thread; a worker requires the internal
// token of every API call and announces itself once its listener has a port (start()).
Status Gateway::build_roles(Stores &stores) {
  if (config_.role == "all")
    return Ok();
  worker_registry_ = std::move(stores.workers);
  if (!worker_registry_)
    return Err(Error::invalid("role \"" + config_.role + "\" needs Redis (redis.url)", "role"));
  if (config_.role == "worker") {
    calls_->require_internal_token(worker_token_);
    return Ok();
  }
  WorkerPoolsOptions wo;
  wo.poll = config_.worker_heartbeat;
  wo.token = worker_token_;
  wo.max_workers = config_.max_workers;
  wo.routing = config_.worker_routing;
  wo.tls_ca_file = config_.tls_ca_file;
  // Worker-hosted models the gateway has no prices for are billed by what their workers
  // announce (reservations) and report per call (the cost itself); configured prices win.
  wo.on_price = [cp = control_.get()](const std::string &model, const cluster::ModelPrice &p) {
    cp->learn_price(model, {p.input_per_mtok, p.output_per_mtok, p.usd_per_hour});
  };
  if (AutoscaleExecutors::any(config_)) {
    executors_ = std::make_unique<AutoscaleExecutors>(config_, clock_, log_line);
    wo.on_members = [e = executors_.get()](const std::string &model, int live) {
      e->set_ready(model, live);
    };
  }
  worker_pools_ = std::make_unique<WorkerPools>(registry_, *worker_registry_, wo, clock_, log_line);
  if (executors_) {
    GANTRY_TRY(executors_->build(*worker_pools_, [this] {
      if (autoscale_)
        autoscale_->poke();
    }));
  }
  (void)worker_pools_->poll_once(); // an unreadable registry is logged and shown in /readyz
  health_routes_->add_check("workers", [p = worker_pools_.get()] { return p->check(); });
  return Ok();
}

cluster::WorkerInfo Gateway::worker_snapshot() const {
  cluster::WorkerInfo w;
  w.node_id = instance_id_;
  w.url = advertised_url_;
  w.heartbeat_ms = clock_.unix_millis();
  for (const auto &m : registry_.models()) {
    // Placement: a hosted model not loaded now is announced as one this worker can load.
    (m->loaded && !m->loaded() ? w.available : w.models).push_back(m->name());
    if (auto p = control_->price_of(m->name()))
      w.prices[m->name()] = {p->input_per_mtok, p->output_per_mtok, p->usd_per_hour};
    const backend::BackendStats st = m->backend->stats();
    w.in_flight += st.running;
    w.waiting += st.queued_requests;
    if (st.kv_blocks_total > 0)
      w.kv_usage = std::max(w.kv_usage, static_cast<double>(st.kv_blocks_used) /
                                            static_cast<double>(st.kv_blocks_total));
  }
  return w;
}

// Issue 14: each model with an [autoscale.<model>] table gets its policy evaluated once a second.
// In `--role all` the process itself is the model's one replica (ready while it serves, draining
// once shutdown began) and the decisions are advice (logged and exported). On a gateway, a model
// with an executor reads its replicas from the executor and the registry, its demand from the
// gateway (calls outstanding at its pool and held by its cold-start gate), and each decision is
// handed to the executor (docs/AUTOSCALING.md).
void Gateway::build_autoscale() {
  if (config_.autoscale.empty())
    return;
  AutoscaleDeps deps;
  deps.clock = &clock_;
  deps.read_model = [this](const std::string &name) -> std::optional<ModelReading> {
    if (executors_ && executors_->manages(name)) { // replicas are the executor's workers
      auto s = executors_->read(name, worker_pools_->live_workers(name));
      if (!s)
        return std::nullopt;
      ModelReading r;
      r.signals = *s;
      return r;
    }
    const backend::ModelBackend *b = registry_.find(name);
    if (!b)
      return std::nullopt;
    const backend::BackendStats st = b->stats();
    ModelReading r;
    r.signals.running_requests = st.running;
    r.signals.waiting_requests = st.queued_requests;
    r.signals.kv_usage =
        st.kv_blocks_total > 0 ? static_cast<double>(st.kv_blocks_used) / st.kv_blocks_total : 0;
    (shutting_down_.load() ? r.signals.replicas.draining : r.signals.replicas.ready) = 1;
    r.generated_tokens = st.generated_tokens;
    return r;
  };
  deps.read_jobs = [jobs = jobs_.get()] {
    JobBacklog b;
    if (auto q = jobs->check_queue()) {
      b.queued = (*q)["queued"];
      b.oldest_wait_s = static_cast<double>((*q)["oldest_queued_s"]);
    }
    return b;
  };
  deps.log = log_line;
  deps.before_tick = [this] {
    if (executors_ && worker_registry_)
      executors_->refresh(*worker_registry_);
  };
  deps.act = [this](const std::string &name, const autoscale::Decision &d) {
    if (executors_)
      executors_->act(name, d.desired);
  };
  autoscale_ = std::make_unique<AutoscaleMonitor>(config_.autoscale, std::move(deps));
}

void Gateway::build_servers() {
  http::ServerOptions opts;
  opts.host = config_.host;
  opts.port = static_cast<uint16_t>(config_.port);
  opts.io_threads = config_.io_threads;
  opts.max_body_bytes = config_.max_body_bytes;
  opts.header_timeout = config_.header_timeout;
  opts.body_timeout = config_.body_timeout;
  opts.idle_timeout = config_.idle_timeout;
  opts.max_connections = config_.max_connections;
  opts.max_inflight_body_bytes = config_.max_inflight_body_bytes;
  opts.on_headers = [this](const http::Request &req) { return refuse_before_body(req); };
  if (jobs_) {
    // Batch API uploads stream into the store instead of being held under max_body_bytes.
    opts.streamed_body_limit = [jobs = jobs_.get()](const http::Request &req) {
      return jobs->streamed_body_limit(req);
    };
    opts.body_sink = [jobs = jobs_.get()](const http::Request &req,
                                          std::optional<http::Response> &refusal) {
      return jobs->open_upload(req, refusal);
    };
  }
  http_ = std::make_unique<http::HttpServer>(opts, build_routes());
  if (config_.admin_port >= 0) {
    // Health, metrics and the admin API on their own port, so operators can keep them off the
    // public load balancer (metrics and admin are then not served on the main port).
    http::ServerOptions aopts = opts;
    aopts.host = config_.admin_host.empty() ? config_.host : config_.admin_host;
    aopts.port = static_cast<uint16_t>(config_.admin_port);
    aopts.io_threads = 1;
    aopts.on_headers = nullptr;
    aopts.streamed_body_limit = nullptr;
    aopts.body_sink = nullptr;
    admin_http_ = std::make_unique<http::HttpServer>(aopts, build_ops_routes());
  }
}

std::optional<http::Response> Gateway::refuse_before_body(const http::Request &req) {
  if (req.method != http::Method::kPost || !req.path.starts_with("/v1/"))
    return std::nullopt;
  // The Messages routes read the key from x-api-key too, and answer in Anthropic's shape.
  const bool anthropic = is_anthropic_path(req.path);
  const auto credentials =
      request_credentials(req, anthropic ? KeyHeaders::kBearerOrXApiKey : KeyHeaders::kBearer);
  if (calls_->internal_only()) { // a worker: gateways only, keys are not consulted
    if (calls_->internal_token_ok(credentials))
      return std::nullopt;
    http::Response r = http::error_response(Error{
        ErrorCode::kUnauthorized,
        "this node is a Gantry worker: it serves gateways only (internal token required)", ""});
    r.headers.push_back({"WWW-Authenticate", "Bearer"});
    return r;
  }
  auto p = control_->authenticate(credentials ? std::optional<std::string_view>(*credentials)
                                              : std::nullopt);
  if (p || p.error().code != ErrorCode::kUnauthorized)
    return std::nullopt; // accepted, or a store error the normal path reports
  http::Response r = http::error_response(p.error());
  if (anthropic)
    r.body = api::render_anthropic_error(p.error());
  r.headers.push_back({"WWW-Authenticate", "Bearer"});
  control_->record_rejection(nullptr, "", req.path, req.call_id, p.error(), clock_.unix_millis());
  if (req.path == "/v1/chat/completions" || req.path == "/v1/completions" ||
      req.path == "/v1/embeddings" || req.path == "/v1/responses" || anthropic) {
    // The metrics and request log an ObservedWriter would have written.
    CallOutcome rec = calls_->outcome(req.request_id, req.path);
    rec.status = r.status;
    rec.error = p.error();
    recorder_->record(rec);
  }
  return r;
}

Gateway::~Gateway() {
  if (heartbeat_)
    heartbeat_->stop();
  if (worker_pools_)
    worker_pools_->stop();
  if (autoscale_)
    autoscale_->stop(); // reads the registry and the job queue
  if (executors_)
    executors_->stop_all(std::chrono::milliseconds(2000));
  if (views_)
    views_->stop();
  if (http_)
    http_->shutdown(std::chrono::milliseconds(0));
  if (admin_http_)
    admin_http_->shutdown(std::chrono::milliseconds(0));
  if (jobs_)
    jobs_->stop();
  prepare_pool_.reset(); // runs what is queued while the services its tasks call still exist
  registry_.clear();     // joins engine threads before the HTTP layer's writers go away
  backups_.reset();
  if (control_)
    control_->stop();
}

Status Gateway::start() {
  if (admin_http_)
    GANTRY_TRY(admin_http_->start());
  GANTRY_TRY(http_->start());
  if (config_.role == "worker") {
    advertised_url_ = config_.advertise_url;
    if (advertised_url_.empty()) {
      std::string host = config_.host;
      if (host.empty() || host == "0.0.0.0" || host == "::") { // reachable by name, not "any"
        char name[256] = {};
        ::gethostname(name, sizeof(name) - 1);
        host = name;
      }
      if (host.find(':') != std::string::npos)
        host = "[" + host + "]";
      advertised_url_ = "http://" + host + ":" + std::to_string(http_->port()) + "/v1";
    }
    cluster::HeartbeatOptions ho;
    ho.period = config_.worker_heartbeat;
    ho.ttl = config_.worker_ttl;
    heartbeat_ = std::make_unique<cluster::WorkerHeartbeat>(
        *worker_registry_, [this] { return worker_snapshot(); }, ho, log_line);
    if (auto st = heartbeat_->start(); !st)
      return Err(
          Error{st.error().code,
                "worker registry (redis.url): cannot announce this worker: " + st.error().message,
                "role"});
  }
  if (worker_pools_)
    worker_pools_->start();
  if (executors_)
    executors_->start();
  jobs_->start();
  views_->start();
  if (autoscale_)
    autoscale_->start();
  return Ok();
}
uint16_t Gateway::admin_port() const { return admin_http_ ? admin_http_->port() : 0; }
uint16_t Gateway::port() const { return http_->port(); }

bool Gateway::begin_drain() {
  if (shutting_down_.exchange(true))
    return false;
  // A worker leaves the registry first, so gateways stop sending it work it would refuse.
  if (heartbeat_)
    heartbeat_->stop();
  if (worker_pools_)
    worker_pools_->stop();
  log_line(R"({"event":"drain","drain_s":)" +
           std::to_string(static_cast<double>(config_.shutdown_grace.count()) / 1000) + "}");
  jobs_->stop_leasing();
  registry_.stop_accepting();
  return true;
}

bool Gateway::shutdown() {
  const auto t0 = clock_.now();
  begin_drain();
  views_->stop();
  // The listener stays open while in-flight work finishes: a new request gets a 503 with
  // Retry-After (and /readyz says not ready) rather than a refused connection.
  // The engine threads finish the work, requests and jobs alike; drain_s is shared by all models.
  const bool clean = registry_.wait_idle(config_.shutdown_grace, clock_);
  const auto left =
      std::max(std::chrono::milliseconds(0),
               config_.shutdown_grace -
                   std::chrono::duration_cast<std::chrono::milliseconds>(clock_.now() - t0));
  // Jobs still running are handed back before their executions are cancelled, so another node
  // runs them now (not after their visibility timeout) and a cancelled one cannot complete.
  jobs_handed_back_ = jobs_->drain(left);
  registry_.cancel_all(); // streams still open end with an error event
  http_->stop_accepting();
  if (autoscale_)
    autoscale_->stop(); // it exported replicas{state="draining"} until here
  // The workers this gateway started drain and exit with it (their own drain_s, plus a margin).
  if (executors_)
    executors_->stop_all(config_.shutdown_grace + std::chrono::milliseconds(5000));
  (void)registry_.wait_idle(std::chrono::milliseconds(1000), clock_);
  http_->shutdown(std::chrono::milliseconds(2000));
  if (admin_http_)
    admin_http_->shutdown(std::chrono::milliseconds(500));
  control_->stop(); // flushes the last ledger rows
  if (sentry_)
    (void)sentry_->flush(std::chrono::milliseconds(2000));
  return clean;
}

void Gateway::add_operator_routes(http::Router &r) {
  r.get("/metrics", [this](http::Request &&, std::shared_ptr<http::ResponseWriter> w) {
    http::Response resp = http::Response::text(200, metrics_text());
    resp.content_type = "text/plain; version=0.0.4; charset=utf-8";
    w->respond(std::move(resp));
  });
  add_admin_routes(r, *control_, *admin_auth_, clock_, errors_.get());
  // A preemption notice (a spot instance's two-minute warning, a scale-in): the node drains and
  // exits as on SIGTERM. 202 at once; the drain itself takes up to drain_s.
  r.post("/admin/v1/drain", [this](http::Request &&req, std::shared_ptr<http::ResponseWriter> w) {
    if (auto refused = admin_auth_->check(req)) {
      w->respond(http::error_response(*refused));
      return;
    }
    const bool already = !begin_drain();
    boost::json::object o{{"status", "draining"},
                          {"already_draining", already},
                          {"drain_s", static_cast<double>(config_.shutdown_grace.count()) / 1000}};
    w->respond(http::Response::json(202, boost::json::serialize(o)));
    if (!already && drain_requested_)
      drain_requested_();
  });
  views_->add_dashboard_routes(r);
  jobs_->add_admin_routes(r);
}

http::Handler Gateway::guarded(http::Router &&r) {
  // An exception escaping a handler is a bug: the HTTP layer answers 500, and the error tracker
  // gets it with its type and route, so it shows up grouped at /admin/v1/errors (and Sentry).
  return [this, inner = std::move(r).into_handler()](http::Request &&req,
                                                     std::shared_ptr<http::ResponseWriter> w) {
    std::string path = req.path;
    try {
      inner(std::move(req), w);
    } catch (const std::exception &e) {
      auto ev = observe::exception_event(e, "http " + path);
      ev.tags = {{"endpoint", path}, {"request_id", w->request_id()}};
      errors_->capture(std::move(ev));
      throw;
    }
  };
}

http::Handler Gateway::build_routes() {
  http::Router r;
  health_routes_->add_probe_routes(r);
  views_->add_status_routes(r);
  // With an admin listener, the operator surface (/admin/*, the errors and webhook-secret
  // routes, /metrics) lives only there, so keeping that port off the public load balancer
  // really keeps it private (audit M1). Without one, the public port serves it as before.
  if (config_.admin_port < 0)
    add_operator_routes(r);
  health_routes_->add_model_routes(r);
  r.post("/v1/chat/completions",
         [this](http::Request &&req, std::shared_ptr<http::ResponseWriter> w) {
           inference_routes_->handle(api::Endpoint::kChatCompletions, std::move(req), std::move(w));
         });
  r.post("/v1/completions", [this](http::Request &&req, std::shared_ptr<http::ResponseWriter> w) {
    inference_routes_->handle(api::Endpoint::kCompletions, std::move(req), std::move(w));
  });
  r.post("/v1/responses", [this](http::Request &&req, std::shared_ptr<http::ResponseWriter> w) {
    typed_routes_->responses(std::move(req), std::move(w));
  });
  r.post("/v1/messages", [this](http::Request &&req, std::shared_ptr<http::ResponseWriter> w) {
    typed_routes_->messages(std::move(req), std::move(w));
  });
  r.post("/v1/messages/count_tokens",
         [this](http::Request &&req, std::shared_ptr<http::ResponseWriter> w) {
           typed_routes_->count_tokens(std::move(req), std::move(w));
         });
  r.post("/v1/embeddings", [this](http::Request &&req, std::shared_ptr<http::ResponseWriter> w) {
    embeddings_route_->handle(std::move(req), std::move(w));
  });
  jobs_->add_routes(r);
  return guarded(std::move(r));
}

http::Handler Gateway::build_ops_routes() {
  http::Router r;
  health_routes_->add_probe_routes(r);
  views_->add_status_routes(r);
  add_operator_routes(r);
  return guarded(std::move(r));
}

} // namespace gantry::server
