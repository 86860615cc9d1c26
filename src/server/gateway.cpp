#include "server/gateway.h"

#include <boost/json.hpp>
#include <boost/url/parse.hpp>

#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <sstream>
#include <unistd.h>
#include <unordered_map>

#include "api/embeddings.h"
#include "api/openai.h"
#include "cache/cache_key.h"
#include "control/api_key.h"
#include "control/webhook_signature.h"
#include "core/utf8.h"
#include "http/client.h"
#include "http/request_id.h"
#include "http/router.h"
#include "observe/error_tracker.h"
#include "observe/http_poster.h"
#include "server/admin_api.h"
#include "server/cache_replay.h"
#include "server/inference_call.h"
#include "server/metrics_text.h"
#include "server/model_digest.h"
#include "server/recording_writer.h"
#include "server/stores.h"

namespace gantry::server {
namespace json = boost::json;
namespace {

// Bytes of an error message kept in a request-log line (audit L6).
constexpr std::size_t kMaxLoggedError = 256;

http::Headers rate_headers(const control::RateSnapshot &s) {
  http::Headers h;
  if (s.limit_requests >= 0) {
    h.push_back({"x-ratelimit-limit-requests", std::to_string(s.limit_requests)});
    h.push_back({"x-ratelimit-remaining-requests", std::to_string(s.remaining_requests)});
    h.push_back({"x-ratelimit-reset-requests", control::format_reset(s.reset_requests)});
  }
  if (s.limit_tokens >= 0) {
    h.push_back({"x-ratelimit-limit-tokens", std::to_string(s.limit_tokens)});
    h.push_back({"x-ratelimit-remaining-tokens", std::to_string(s.remaining_tokens)});
    h.push_back({"x-ratelimit-reset-tokens", control::format_reset(s.reset_tokens)});
  }
  return h;
}

// An admission refused by the control plane: the error, Retry-After and the x-ratelimit-* numbers
// of the scope that refused it.
http::Response refusal_response(const Error &e, const control::RateSnapshot &refusal) {
  http::Response r = http::error_response(e);
  for (auto &h : rate_headers(refusal))
    r.headers.push_back(std::move(h));
  return r;
}

std::string sha256_hex(std::string_view data) {
  cache::Sha256 h;
  h.update(data);
  return h.hex_digest();
}

std::string env_or_file(const char *var, const char *file_var) {
  if (const char *v = std::getenv(var); v && *v)
    return v;
  if (const char *f = std::getenv(file_var); f && *f) {
    std::ifstream in(f);
    std::stringstream ss;
    ss << in.rdbuf();
    std::string s = ss.str();
    while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' '))
      s.pop_back();
    return s;
  }
  return {};
}

// Probes a model with a one-token greedy generation for /readyz.
class ProbeSink final : public TokenSink {
public:
  using Done = std::function<void(bool ok, std::string error)>;
  explicit ProbeSink(Done done) : done_(std::move(done)) {}
  void on_event(Ticket, const engine::TokenEvent &ev) override {
    if (ev.finish == engine::FinishReason::kNone)
      return;
    done_(ev.finish != engine::FinishReason::kCancelled && ev.n_generated >= 1,
          ev.finish == engine::FinishReason::kCancelled ? "probe cancelled" : "");
  }
  void on_rejected(Ticket, const Error &e) override { done_(false, e.message); }

private:
  Done done_;
};

} // namespace

Result<std::unique_ptr<Gateway>> Gateway::create(ServerConfig config, const Clock &clock,
                                                 const LoadProgress &progress) {
  GANTRY_TRY(config.validate());
  std::unique_ptr<Gateway> g(new Gateway(std::move(config), clock));
  for (const auto &spec : g->config_.models) {
    auto model = engine::Model::load(spec.path, [&](uint64_t d, uint64_t t) {
      if (progress)
        progress(spec.name, d, t);
    });
    if (!model) {
      Error e = model.take_error();
      e.message = "model '" + spec.name + "' (" + spec.path + "): " + e.message;
      return Err(std::move(e));
    }
    auto sm = std::make_unique<ServedModel>();
    sm->spec = spec;
    sm->created = clock.unix_seconds();
    sm->digest = model_digest((*model)->file());
    if (!spec.chat_template.empty()) {
      GANTRY_ASSIGN_OR_RETURN(sm->chat_format, api::chat_format_from_name(spec.chat_template));
    } else {
      auto tmpl = (*model)->file().get_string("tokenizer.chat_template");
      auto det = api::detect_chat_format(tmpl ? *tmpl : std::string_view());
      sm->chat_format = det.format;
      sm->template_recognized = det.recognized;
    }
    WorkerConfig wc;
    wc.name = spec.name;
    wc.engine.n_threads = spec.threads;
    wc.engine.max_seqs = spec.max_seqs;
    wc.engine.max_batch_tokens = spec.max_batch_tokens;
    wc.engine.kv_bytes = static_cast<size_t>(spec.kv_mb) << 20;
    wc.engine.n_ctx = spec.ctx;
    wc.engine.prefix_cache = spec.prefix_cache;
    wc.max_queued_requests = g->config_.max_queued_requests;
    wc.max_queued_tokens = g->config_.max_queued_tokens;
    sm->worker = std::make_unique<ModelWorker>(std::move(model).value(), wc);
    g->models_.push_back(std::move(sm));
  }

  // Every state port's adapter, chosen in one place (server/stores.h).
  GANTRY_ASSIGN_OR_RETURN(Stores stores, open_stores(g->config_, clock));
  // The control plane: keys, limits, quotas, cost, ledger.
  g->outbound_ = std::make_unique<Outbound>(g->config_, clock);
  GANTRY_ASSIGN_OR_RETURN(std::string pepper, control::load_pepper(g->config_.data_dir));
  control::ControlConfig cc;
  cc.auth = g->config_.auth == "required" ? control::AuthMode::kRequired : control::AuthMode::kAuto;
  cc.global = {g->config_.global_rpm, g->config_.global_tpm, g->config_.global_max_concurrent};
  cc.ledger_flush = g->config_.ledger_flush;
  cc.alert_webhook_url = g->config_.alert_webhook_url;
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
  for (const auto &spec : g->config_.models) {
    control::ModelControl mc;
    mc.name = spec.name;
    mc.price = {spec.price_input_per_mtok, spec.price_output_per_mtok, spec.price_per_hour};
    mcs.push_back(std::move(mc));
  }
  g->control_ = std::make_unique<control::ControlPlane>(
      std::move(stores.control), std::move(pepper), std::move(cc), std::move(mcs), clock,
      g->outbound_->alert_post(),
      [](const std::string &line) { std::fprintf(stderr, "%s\n", line.c_str()); });
  GANTRY_TRY(g->control_->start());
  control::BackupOptions bo;
  bo.interval = g->config_.backup_interval;
  bo.keep = g->config_.backup_keep;
  bo.dir = g->config_.backup_dir.empty() ? g->config_.data_dir + "/backups" : g->config_.backup_dir;
  g->backups_ = std::make_unique<control::BackupScheduler>(
      stores.backup_to, bo, clock,
      [](const std::string &line) { std::fprintf(stderr, "%s\n", line.c_str()); });
  g->admin_token_ = env_or_file("GANTRY_ADMIN_TOKEN", "GANTRY_ADMIN_TOKEN_FILE");
  if (g->config_.request_log != "off") {
    telemetry::RequestLogOptions lo;
    lo.path = g->config_.request_log;
    lo.max_bytes = static_cast<uint64_t>(g->config_.request_log_max_mb) << 20;
    lo.keep = g->config_.request_log_keep;
    GANTRY_ASSIGN_OR_RETURN(g->request_log_, telemetry::RequestLog::open(lo));
  }
  if (!g->config_.sentry_dsn.empty()) {
    GANTRY_ASSIGN_OR_RETURN(auto dsn, observe::parse_dsn(g->config_.sentry_dsn));
    if (auto st = observe::check_postable_url(dsn.envelope_url()); !st) {
      return Err(Error::invalid("sentry_dsn: " + st.error().message, "sentry_dsn"));
    }
    observe::SentryOptions so;
    so.context.environment = g->config_.environment;
    g->sentry_ = std::make_unique<observe::SentryForwarder>(
        dsn, so, observe::make_http_poster(std::chrono::seconds(5), g->config_.tls_ca_file), clock);
  }
  g->errors_ = std::make_unique<observe::ErrorTracker>(clock, observe::ErrorTrackerOptions{},
                                                       g->sentry_.get());
  g->instance_id_ = g->config_.instance_id;
  if (g->instance_id_.empty()) {
    char host[256] = {};
    ::gethostname(host, sizeof(host) - 1);
    g->instance_id_ = std::string(host) + ":" + std::to_string(::getpid());
  }

  const CacheConfig &cache_cfg = g->config_.cache;
  g->response_cache_ = std::make_unique<ResponseCache>(
      std::move(stores.responses), ResponseCacheConfig{cache_cfg.enabled, cache_cfg.ttl});
  g->embeddings_ = std::make_unique<EmbeddingService>(std::move(stores.embeddings),
                                                      cache_cfg.enabled, cache_cfg.ttl);
  Gateway *gp = g.get();
  GANTRY_ASSIGN_OR_RETURN(
      g->jobs_,
      JobsService::create(
          g->config_, *g->control_, clock, std::move(stores.jobs),
          [gp](const http::Request &req, const std::shared_ptr<http::ResponseWriter> &w) {
            return gp->authenticate(req, w);
          },
          [gp](api::Endpoint e, http::Request &&req, std::shared_ptr<http::ResponseWriter> w,
               std::optional<control::Principal> p) {
            gp->execute_job(e, std::move(req), std::move(w), std::move(p));
          },
          g->outbound_->webhook_post(), g->admin_token_));
  OperatorViewsDeps vd{&clock,
                       g->control_.get(),
                       g->errors_.get(),
                       &g->admin_token_,
                       &g->metrics_,
                       [gp] { return render_metrics(*gp); },
                       [gp](std::shared_ptr<http::ResponseWriter> w) { gp->handle_ready(w); },
                       std::move(stores.readiness)};
  g->views_ = std::make_unique<OperatorViews>(std::move(vd), operator_views_options_from_env());
  http::ServerOptions opts;
  opts.host = g->config_.host;
  opts.port = static_cast<uint16_t>(g->config_.port);
  opts.io_threads = g->config_.io_threads;
  opts.max_body_bytes = g->config_.max_body_bytes;
  opts.header_timeout = g->config_.header_timeout;
  opts.body_timeout = g->config_.body_timeout;
  opts.idle_timeout = g->config_.idle_timeout;
  opts.max_connections = g->config_.max_connections;
  opts.max_inflight_body_bytes = g->config_.max_inflight_body_bytes;
  // Audit M6: an upload without a valid key gets its 401 before its body is read.
  opts.on_headers = [gp](const http::Request &req) -> std::optional<http::Response> {
    if (req.method != http::Method::kPost || !req.path.starts_with("/v1/"))
      return std::nullopt;
    auto p = gp->control_->authenticate(req.header("Authorization"));
    if (p || p.error().code != ErrorCode::kUnauthorized)
      return std::nullopt; // accepted, or a store error the normal path reports
    http::Response r = http::error_response(p.error());
    r.headers.push_back({"WWW-Authenticate", "Bearer"});
    gp->control_->record_rejection(nullptr, "", req.path, req.call_id, p.error(),
                                   gp->clock_.unix_millis());
    if (req.path == "/v1/chat/completions" || req.path == "/v1/completions" ||
        req.path == "/v1/embeddings") {
      CallRecord rec; // the metrics and request log an ObservedWriter would have written
      rec.arrived_unix_ms = gp->clock_.unix_millis();
      rec.request_id = req.request_id;
      rec.endpoint = req.path;
      rec.status = r.status;
      rec.error_type = "authentication_error";
      rec.error = p.error().message;
      gp->record_call(rec);
    }
    return r;
  };
  g->http_ = std::make_unique<http::HttpServer>(opts, g->build_routes());
  if (g->config_.admin_port >= 0) {
    // Health, metrics and the admin API on their own port, so operators can keep them off the
    // public load balancer (metrics and admin are then not served on the main port).
    http::ServerOptions aopts = opts;
    aopts.host = g->config_.admin_host.empty() ? g->config_.host : g->config_.admin_host;
    aopts.port = static_cast<uint16_t>(g->config_.admin_port);
    aopts.io_threads = 1;
    aopts.on_headers = nullptr;
    g->admin_http_ = std::make_unique<http::HttpServer>(aopts, g->build_ops_routes());
  }
  return g;
}

Gateway::~Gateway() {
  if (views_)
    views_->stop();
  if (http_)
    http_->shutdown(std::chrono::milliseconds(0));
  if (admin_http_)
    admin_http_->shutdown(std::chrono::milliseconds(0));
  if (jobs_)
    jobs_->stop();
  models_.clear(); // joins engine threads before the HTTP layer's writers go away
  backups_.reset();
  if (control_)
    control_->stop();
}

Status Gateway::start() {
  if (admin_http_)
    GANTRY_TRY(admin_http_->start());
  GANTRY_TRY(http_->start());
  jobs_->start();
  views_->start();
  return Ok();
}
uint16_t Gateway::admin_port() const { return admin_http_ ? admin_http_->port() : 0; }
uint16_t Gateway::port() const { return http_->port(); }

bool Gateway::shutdown() {
  shutting_down_.store(true);
  views_->stop();
  jobs_->stop_leasing();
  for (auto &m : models_)
    m->worker->stop_accepting();
  http_->stop_accepting();
  // The engine threads finish the work; the grace is shared by all models.
  const auto deadline = std::chrono::steady_clock::now() + config_.shutdown_grace;
  bool clean = true;
  for (auto &m : models_) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    clean = m->worker->wait_idle(std::max(left, std::chrono::milliseconds(0))) && clean;
  }
  for (auto &m : models_)
    m->worker->cancel_all();
  jobs_->stop(); // cut-off jobs go back to the queue for the next start
  for (auto &m : models_)
    (void)m->worker->wait_idle(std::chrono::milliseconds(1000));
  http_->shutdown(std::chrono::milliseconds(2000));
  if (admin_http_)
    admin_http_->shutdown(std::chrono::milliseconds(500));
  control_->stop(); // flushes the last ledger rows
  if (sentry_)
    (void)sentry_->flush(std::chrono::milliseconds(2000));
  return clean;
}

ServedModel *Gateway::find_model(std::string_view name) {
  for (auto &m : models_)
    if (m->spec.name == name)
      return m.get();
  return nullptr;
}

void Gateway::add_ops_routes(http::Router &r) {
  r.get("/healthz", [](http::Request &&, std::shared_ptr<http::ResponseWriter> w) {
    w->respond(http::Response::json(200, R"({"status":"ok"})"));
  });
  // The listener opens only after every model is loaded, so once this answers, start-up is over
  // (a Kubernetes startupProbe fails with "connection refused" until then).
  r.get("/startupz", [this](http::Request &&, std::shared_ptr<http::ResponseWriter> w) {
    json::array models;
    for (const auto &m : models_)
      models.push_back(json::value(m->spec.name));
    w->respond(http::Response::json(
        200, json::serialize(json::object{{"status", "started"}, {"models", std::move(models)}})));
  });
  r.get("/readyz", [this](http::Request &&, std::shared_ptr<http::ResponseWriter> w) {
    handle_ready(std::move(w));
  });
  views_->add_status_routes(r);
}

void Gateway::add_operator_routes(http::Router &r) {
  r.get("/metrics", [this](http::Request &&, std::shared_ptr<http::ResponseWriter> w) {
    http::Response resp = http::Response::text(200, render_metrics(*this));
    resp.content_type = "text/plain; version=0.0.4; charset=utf-8";
    w->respond(std::move(resp));
  });
  add_admin_routes(r, *control_, admin_token_, clock_, errors_.get());
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
  add_ops_routes(r);
  // With an admin listener, the operator surface (/admin/*, the errors and webhook-secret
  // routes, /metrics) lives only there, so keeping that port off the public load balancer
  // really keeps it private (audit M1). Without one, the public port serves it as before.
  if (config_.admin_port < 0)
    add_operator_routes(r);
  r.get("/v1/models", [this](http::Request &&req, std::shared_ptr<http::ResponseWriter> w) {
    auto principal = authenticate(req, w);
    if (!principal)
      return;
    std::vector<api::ModelCard> cards;
    for (const auto &m : models_) {
      const auto &p = *principal;
      if (p && !p->models.empty() &&
          std::find(p->models.begin(), p->models.end(), m->spec.name) == p->models.end()) {
        continue; // a key limited to some models sees only those
      }
      cards.push_back({m->spec.name, m->created, m->worker->n_ctx()});
    }
    w->respond(http::Response::json(200, api::render_model_list(cards)));
  });
  r.get("/v1/models/{id}", [this](http::Request &&req, std::shared_ptr<http::ResponseWriter> w) {
    auto principal = authenticate(req, w);
    if (!principal)
      return;
    ServedModel *m = find_model(req.path_param("id"));
    if (!m) {
      w->respond(http::error_response(
          Error{ErrorCode::kNotFound,
                "The model '" + echoed(req.path_param("id")) + "' does not exist", "model"}));
      return;
    }
    w->respond(http::Response::json(
        200, api::render_model({m->spec.name, m->created, m->worker->n_ctx()})));
  });
  r.post("/v1/chat/completions",
         [this](http::Request &&req, std::shared_ptr<http::ResponseWriter> w) {
           handle_inference(static_cast<int>(api::Endpoint::kChatCompletions), std::move(req),
                            std::move(w));
         });
  r.post("/v1/completions", [this](http::Request &&req, std::shared_ptr<http::ResponseWriter> w) {
    handle_inference(static_cast<int>(api::Endpoint::kCompletions), std::move(req), std::move(w));
  });
  r.post("/v1/embeddings", [this](http::Request &&req, std::shared_ptr<http::ResponseWriter> w) {
    handle_embeddings(std::move(req), std::move(w));
  });
  jobs_->add_routes(r);
  return guarded(std::move(r));
}

http::Handler Gateway::build_ops_routes() {
  http::Router r;
  add_ops_routes(r);
  add_operator_routes(r);
  return guarded(std::move(r));
}

void Gateway::handle_embeddings(http::Request &&req, std::shared_ptr<http::ResponseWriter> w) {
  if (req.call_id.empty()) // an in-process caller that named no ledger key
    req.call_id = http::next_call_id();
  if (shutting_down_.load()) {
    w->respond(http::error_response({ErrorCode::kUnavailable, "the server is shutting down", ""}));
    return;
  }
  auto rec = std::make_shared<CallRecord>();
  rec->arrived_unix_ms = clock_.unix_millis();
  rec->request_id = req.request_id;
  rec->endpoint = req.path;
  // Filled once admitted; settled when the response is complete (the record's done callback).
  auto admission = std::make_shared<std::shared_ptr<control::Admission>>();
  w = std::make_shared<ObservedWriter>(std::move(w), rec, [this, admission](CallRecord &r) {
    if (*admission) {
      // Tokens are charged only for a response that was answered (the usage hook filled
      // them); a failure settles with none, as a completion whose engine call failed.
      control::Outcome o;
      o.status = r.status;
      o.latency_ms = r.latency_ms;
      o.finish_reason = r.status == 200 ? "stop" : "error";
      if (r.status == 200) {
        o.input_tokens = r.input_tokens;
        o.cached_tokens = r.cached_tokens;
        o.cached = r.cached;
      }
      r.cost_usd = control_->finish(**admission, o);
    }
    record_call(r);
  });
  auto principal = authenticate(req, w);
  if (!principal)
    return;
  if (*principal) {
    rec->key_id = (*principal)->key_id;
    rec->project = (*principal)->project;
  }
  auto parsed = api::parse_embedding_request(req.body);
  if (!parsed) {
    w->respond(http::error_response(parsed.error()));
    return;
  }
  ServedModel *m = find_model(parsed->model);
  if (!m) {
    w->respond(http::error_response({ErrorCode::kNotFound,
                                     "The model '" + echoed(parsed->model) + "' does not exist",
                                     "model"}));
    return;
  }
  rec->model = m->spec.name;
  // Embeddings are metered like completions (H5): the service tokenizes the inputs, then admits
  // with the real prompt token count, so RPM, concurrency, TPM, token quotas, budgets, the model
  // allow-list and the breaker all apply; the settlement charges those tokens at the model's
  // input price. RPM is checked in the same admission, after tokenization (see M4).
  control::AdmitRequest ar;
  ar.principal = *principal ? &**principal : nullptr;
  ar.model = m->spec.name;
  ar.endpoint = req.path;
  ar.request_id = req.call_id;
  ar.client_request_id = req.request_id;
  ar.arrived_ms = rec->arrived_unix_ms;
  EmbeddingHooks hooks;
  hooks.admit = [this, ar = std::move(ar), admission, w](int64_t prompt_tokens) mutable {
    ar.prompt_tokens = prompt_tokens;
    control::RateSnapshot refusal;
    auto adm = control_->admit(ar, &refusal);
    if (!adm) {
      w->respond(refusal_response(adm.error(), refusal));
      return false;
    }
    *admission = std::move(adm).value();
    return true;
  };
  hooks.usage = [rec](const EmbeddingUsage &u) {
    rec->input_tokens = u.prompt_tokens;
    rec->cached_tokens = u.cached_tokens;
    rec->cached = u.prompt_tokens > 0 && u.cached_tokens == u.prompt_tokens;
  };
  embeddings_->handle(*m, std::move(parsed).value(), req.header("cache-control"), std::move(hooks),
                      std::move(w));
}

AuthOutcome Gateway::authenticate(const http::Request &req,
                                  const std::shared_ptr<http::ResponseWriter> &w) {
  auto p = control_->authenticate(req.header("Authorization"));
  if (!p) {
    http::Response r = http::error_response(p.error());
    if (p.error().code == ErrorCode::kUnauthorized) {
      r.headers.push_back({"WWW-Authenticate", "Bearer"});
      control_->record_rejection(nullptr, "", req.path, req.call_id, p.error(),
                                 clock_.unix_millis());
    }
    w->respond(std::move(r));
    return AuthOutcome::refused();
  }
  return AuthOutcome::allow(std::move(p).value());
}

void Gateway::handle_inference(int endpoint_int, http::Request &&req,
                               std::shared_ptr<http::ResponseWriter> w) {
  if (req.call_id.empty()) // an in-process caller that named no ledger key
    req.call_id = http::next_call_id();
  auto rec = std::make_shared<CallRecord>();
  rec->arrived_unix_ms = clock_.unix_millis();
  rec->request_id = req.request_id;
  rec->endpoint = req.path;
  w = std::make_shared<ObservedWriter>(std::move(w), rec,
                                       [this](CallRecord &r) { record_call(r); });
  const auto endpoint = static_cast<api::Endpoint>(endpoint_int);
  if (shutting_down_.load()) {
    w->respond(http::error_response({ErrorCode::kUnavailable, "the server is shutting down", ""}));
    return;
  }
  auto principal = authenticate(req, w);
  if (!principal)
    return;
  if (*principal) {
    rec->key_id = (*principal)->key_id;
    rec->project = (*principal)->project;
  }
  if (auto idem = req.header("Idempotency-Key")) {
    if (idem->empty() || idem->size() > 255) {
      w->respond(http::error_response(
          Error::invalid("Idempotency-Key must be 1 to 255 characters", "Idempotency-Key")));
      return;
    }
    // Scoped by caller and endpoint: one tenant can neither collide with nor read another's.
    const std::string scope = (*principal ? (*principal)->key_id : std::string("-")) + "|" +
                              req.path + "|" + std::string(*idem);
    auto &store = control_->idempotency();
    auto b = store.begin(scope, sha256_hex(req.body));
    using O = control::IdempotencyStore::Outcome;
    if (b.outcome == O::kMismatch) {
      w->respond(http::error_response(
          {ErrorCode::kUnprocessable,
           "This Idempotency-Key was already used with a different request body.",
           "Idempotency-Key"}));
      return;
    }
    if (b.outcome == O::kInFlight) {
      w->respond(http::error_response(
          {ErrorCode::kConflict,
           "A request with this Idempotency-Key is still being processed; retry later.",
           "Idempotency-Key"}));
      return;
    }
    if (b.outcome == O::kNotStored) {
      w->respond(http::error_response(
          {ErrorCode::kConflict,
           "The response to the first request with this Idempotency-Key was too large to store "
           "for replay; send a new Idempotency-Key to run the request again.",
           "Idempotency-Key"}));
      return;
    }
    if (b.outcome == O::kReplay) {
      const auto &sr = *b.response;
      http::Headers hs;
      for (const auto &[k, v] : sr.headers)
        hs.push_back({k, v});
      hs.push_back({"idempotent-replayed", "true"});
      if (sr.sse) {
        w->start_sse(std::move(hs));
        for (const auto &ev : sr.events)
          w->send_event(ev);
        w->end();
      } else {
        http::Response r{sr.status, sr.content_type, std::move(hs), sr.body};
        w->respond(std::move(r));
      }
      return;
    }
    w = std::make_shared<RecordingWriter>(
        std::move(w),
        [&store, scope](bool complete, control::StoredResponse r) {
          bool ok = complete && r.status >= 200 && r.status < 300;
          for (const auto &ev : r.events)
            ok = ok && !ev.starts_with("{\"error\"");
          if (ok) {
            store.complete(scope, std::move(r));
          } else {
            store.abandon(scope); // a failed or cut-off first attempt may be retried for real
          }
        },
        store.max_entry_bytes());
  }
  run_inference(endpoint, std::move(req), std::move(w), std::move(*principal), std::move(rec));
}

void Gateway::execute_job(api::Endpoint endpoint, http::Request &&req,
                          std::shared_ptr<http::ResponseWriter> w,
                          std::optional<control::Principal> principal) {
  auto rec = std::make_shared<CallRecord>();
  rec->arrived_unix_ms = clock_.unix_millis();
  rec->request_id = req.request_id;
  rec->endpoint = req.path;
  if (principal) {
    rec->key_id = principal->key_id;
    rec->project = principal->project;
  }
  w = std::make_shared<ObservedWriter>(std::move(w), rec,
                                       [this](CallRecord &r) { record_call(r); });
  if (shutting_down_.load()) {
    w->respond(http::error_response({ErrorCode::kUnavailable, "the server is shutting down", ""}));
    return;
  }
  run_inference(endpoint, std::move(req), std::move(w), std::move(principal), std::move(rec));
}

void Gateway::run_inference(api::Endpoint endpoint, http::Request &&req,
                            std::shared_ptr<http::ResponseWriter> w,
                            std::optional<control::Principal> principal,
                            std::shared_ptr<CallRecord> rec) {
  const std::string endpoint_path = req.path;
  const int64_t arrived_ms = rec->arrived_unix_ms;
  auto parsed = api::parse_inference_request(endpoint, req.body);
  if (!parsed) {
    w->respond(http::error_response(parsed.error()));
    return;
  }
  api::InferenceRequest &ir = *parsed;
  ServedModel *m = find_model(ir.model);
  if (!m) {
    w->respond(http::error_response(
        {ErrorCode::kNotFound, "The model '" + echoed(ir.model) + "' does not exist", "model"}));
    return;
  }
  rec->model = m->spec.name;
  rec->stream = ir.stream;
  const engine::Model &model = m->worker->model();
  const auto &tok = model.tokenizer();

  std::vector<int32_t> prompt;
  std::string echo;
  if (endpoint == api::Endpoint::kChatCompletions) {
    auto text = api::render_chat(m->chat_format, ir.messages, true);
    if (!text) {
      w->respond(http::error_response(text.error()));
      return;
    }
    prompt = tok.encode(*text, true, true);
  } else if (ir.prompt_ids) {
    prompt = *ir.prompt_ids;
    for (int32_t t : prompt) {
      if (t >= tok.n_vocab()) {
        w->respond(http::error_response(Error::invalid(
            "token id " + std::to_string(t) + " is outside the vocabulary", "prompt")));
        return;
      }
    }
    // Token ids can decode to lone bytes (byte-fallback tokens); echo must be valid UTF-8
    // like every other text we send (audit L2).
    if (ir.echo)
      echo = utf8_sanitize(tok.decode(prompt));
  } else {
    prompt = tok.encode(ir.prompt, true, true);
    if (ir.echo)
      echo = ir.prompt;
  }
  const int n_ctx = m->worker->n_ctx();
  const int n_prompt = static_cast<int>(prompt.size());
  if (n_prompt == 0) {
    w->respond(http::error_response(Error::invalid("the prompt is empty", "prompt")));
    return;
  }
  const int max_tokens = ir.max_tokens
                             ? *ir.max_tokens
                             : std::min(config_.default_max_tokens, std::max(n_ctx - n_prompt, 1));
  // The engine checks this too; checking here makes the error a plain 400 rather than a failure
  // inside a stream that has already started.
  if (auto st = engine::check_context(n_prompt, max_tokens, n_ctx,
                                      endpoint == api::Endpoint::kChatCompletions ? "messages"
                                                                                  : "prompt");
      !st) {
    w->respond(http::error_response(st.error()));
    return;
  }

  std::vector<engine::GenerationRequest> choices(ir.n);
  for (int i = 0; i < ir.n; ++i) {
    auto &g = choices[i];
    g.prompt = prompt;
    g.sampling = ir.sampling;
    // Each choice of a seeded request gets its own, still reproducible, seed.
    if (g.sampling.seed && i > 0)
      g.sampling.seed = *g.sampling.seed + static_cast<uint64_t>(i);
    g.max_tokens = max_tokens;
    g.stop = ir.stop;
    g.ignore_eos = ir.ignore_eos;
  }
  // Looked up before admission: a hit costs no tokens, so it reserves none (it still counts as
  // a request for RPM and concurrency, and needs the key's model access and budget).
  auto cached = response_cache_->lookup({m->spec.name, m->digest}, endpoint, ir.n, choices[0],
                                        cache_policy(req.header("cache-control"), ir.cache));
  const http::Header cache_header{"x-gantry-cache",
                                  std::string(cache_outcome_name(cached.outcome))};
  control::AdmitRequest ar;
  ar.principal = principal ? &*principal : nullptr;
  ar.model = m->spec.name;
  ar.endpoint = endpoint_path;
  ar.request_id = req.call_id;
  ar.client_request_id = req.request_id;
  ar.prompt_tokens = cached.hit ? 0 : n_prompt;
  ar.max_output_tokens = cached.hit ? 0 : static_cast<int64_t>(max_tokens) * ir.n;
  ar.arrived_ms = arrived_ms;
  control::RateSnapshot refusal;
  auto adm = control_->admit(ar, &refusal);
  if (!adm) {
    http::Response r = refusal_response(adm.error(), refusal);
    r.headers.push_back(cache_header);
    w->respond(std::move(r));
    return;
  }
  std::shared_ptr<control::Admission> admission = std::move(adm).value();

  CallHooks hooks;
  hooks.arrived = rec->arrived;
  hooks.headers = rate_headers(admission->snapshot);
  if (config_.metrics) {
    hooks.inter_token = &metrics_.histogram(
        "inter_token_latency_seconds", "Time between consecutive tokens of a sequence.",
        {{"model_name", m->spec.name}}, telemetry::Registry::token_latency_buckets());
  }
  hooks.on_finish = [ctl = control_.get(), admission, rec](const CallResult &r,
                                                           http::Headers &add) {
    control::Outcome o;
    o.status = r.status;
    o.input_tokens = r.prompt_tokens;
    o.output_tokens = r.completion_tokens;
    o.cached_tokens = r.cached_tokens;
    o.engine_seconds = r.engine_seconds;
    o.ttft_ms = r.ttft_ms;
    o.latency_ms = r.latency_ms;
    o.finish_reason = r.finish_reason;
    const double cost = ctl->finish(*admission, o);
    rec->input_tokens = r.prompt_tokens;
    rec->output_tokens = r.completion_tokens;
    rec->cached_tokens = r.cached_tokens;
    rec->ttft_ms = r.ttft_ms;
    rec->queue_ms = r.queue_ms;
    rec->prefill_ms = r.prefill_ms;
    rec->decode_ms = r.decode_ms;
    rec->engine_ms = r.engine_seconds * 1000;
    rec->cost_usd = cost;
    rec->finish_reason = r.finish_reason;
    char buf[32];
    std::snprintf(buf, sizeof(buf), "%.8f", cost);
    add.push_back({"x-gantry-cost-usd", buf});
  };
  api::ResponseMeta meta{api::id_prefix(endpoint) + req.request_id, m->spec.name,
                         clock_.unix_seconds()};
  if (cached.hit) {
    // A hit ran no engine work: the admission is settled as cached (cost 0, every reserved
    // token refunded) but still counts as a request against RPM, and gets its ledger row.
    control::Outcome o;
    o.cached = true;
    o.input_tokens = cached.hit->prompt_tokens;
    for (const auto &c : cached.hit->choices)
      o.output_tokens += c.completion_tokens;
    o.cached_tokens = o.input_tokens;
    o.finish_reason = cached.hit->choices.empty() ? "" : cached.hit->choices[0].finish_reason;
    o.latency_ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - rec->arrived)
            .count();
    o.ttft_ms = o.latency_ms;
    control_->finish(*admission, o);
    rec->cached = true;
    rec->input_tokens = o.input_tokens;
    rec->output_tokens = o.output_tokens;
    rec->cached_tokens = o.cached_tokens;
    rec->finish_reason = o.finish_reason;
    http::Headers hs = rate_headers(admission->snapshot);
    hs.push_back(cache_header);
    hs.push_back({"x-gantry-cost-usd", "0.00000000"});
    replay_cached(endpoint, meta, ir.stream, ir.include_usage, echo, *cached.hit, hs, *w);
    return;
  }
  auto call = std::make_shared<InferenceCall>(endpoint, meta, ir.stream, ir.include_usage, echo,
                                              n_prompt, w, *m->worker, std::move(hooks));
  call->add_header(cache_header.name, cache_header.value);
  if (cached.store_key)
    call->store_result_in(*response_cache_, *cached.store_key, cached.ttl);
  auto st = call->start(choices);
  if (!st) {
    control::Outcome o;
    o.status = http_status(st.error().code);
    o.finish_reason = std::string(error_code_name(st.error().code));
    control_->finish(*admission, o);
    http::Response r = http::error_response(st.error());
    r.headers.push_back(cache_header);
    w->respond(std::move(r));
  }
}

namespace {

// JSON string escaping for the log line (RFC 8259: quote, backslash, control characters).
void append_json_string(std::string &out, std::string_view v) {
  out.push_back('"');
  for (char ch : v) {
    const auto c = static_cast<unsigned char>(ch);
    if (c == '"' || c == '\\') {
      out.push_back('\\');
      out.push_back(ch);
    } else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\u%04x", c);
      out += buf;
    } else {
      out.push_back(ch);
    }
  }
  out.push_back('"');
}

void append_number(std::string &out, double v) {
  char buf[32];
  auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), v, std::chars_format::fixed, 3);
  if (ec != std::errc()) {
    out += "null";
    return;
  }
  out.append(buf, static_cast<size_t>(end - buf));
}

void append_int(std::string &out, int64_t v) {
  char buf[24];
  auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), v);
  (void)ec; // 24 bytes always hold an int64
  out.append(buf, static_cast<size_t>(end - buf));
}

} // namespace

Gateway::CallSeries &Gateway::call_series(const CallRecord &r) {
  // Resolving a labelled series in the registry takes its lock and builds the label string; a
  // per-thread cache keyed by the label values makes the steady state a hash lookup.
  thread_local std::unordered_map<std::string, CallSeries> cache;
  thread_local uint64_t owner = 0; // instance ids, not addresses: an address can be reused
  if (owner != instance_) {
    cache.clear();
    owner = instance_;
  }
  std::string key;
  key.reserve(r.model.size() + r.endpoint.size() + r.project.size() + r.finish_reason.size() + 8);
  key.append(r.model).push_back('\x1f');
  key.append(r.endpoint).push_back('\x1f');
  key.append(std::to_string(r.status)).push_back('\x1f');
  key.append(r.project).push_back('\x1f');
  key.append(r.finish_reason);
  auto it = cache.find(key);
  if (it != cache.end())
    return it->second;
  if (cache.size() > 4096)
    cache.clear();
  const std::string model = r.model.empty() ? "none" : r.model;
  const auto &lat = telemetry::Registry::latency_buckets();
  const telemetry::Labels ml{{"model_name", model}};
  CallSeries cs;
  cs.requests = &metrics_.counter("requests_total",
                                  "Inference calls answered, by model, endpoint, status, project.",
                                  {{"model_name", model},
                                   {"endpoint", r.endpoint},
                                   {"status", std::to_string(r.status)},
                                   {"project", r.project}});
  cs.e2e = &metrics_.histogram("e2e_request_latency_seconds",
                               "Arrival to the last byte of the response.",
                               {{"model_name", model}, {"endpoint", r.endpoint}}, lat);
  cs.ttft = &metrics_.histogram("time_to_first_token_seconds",
                                "Arrival to the first generated token.", ml, lat);
  cs.queue = &metrics_.histogram("request_queue_time_seconds",
                                 "Waiting for the engine to schedule it.", ml, lat);
  cs.prefill = &metrics_.histogram("request_prefill_time_seconds",
                                   "First engine step to first token.", ml, lat);
  cs.decode =
      &metrics_.histogram("request_decode_time_seconds", "First token to last token.", ml, lat);
  cs.overhead = &metrics_.histogram("gateway_overhead_seconds",
                                    "Time spent in Gantry outside the engine (parse, auth, "
                                    "limits, tokenize, render, queue hand-off).",
                                    ml, lat);
  cs.success =
      r.finish_reason.empty()
          ? nullptr
          : &metrics_.counter("request_success_total", "Requests finished, by finish reason.",
                              {{"model_name", model}, {"finished_reason", r.finish_reason}});
  return cache.emplace(std::move(key), cs).first->second;
}

void Gateway::record_call(CallRecord &r) {
  const bool failed = r.status >= 400 || !r.error.empty();
  const bool server_error = r.status >= 500 || (!r.error.empty() && r.status < 400);
  if (config_.metrics) {
    CallSeries &cs = call_series(r);
    cs.requests->inc();
    cs.e2e->observe(r.latency_ms / 1000);
    if (!failed && r.ttft_ms >= 0 && !r.cached) {
      cs.ttft->observe(r.ttft_ms / 1000);
      cs.queue->observe(r.queue_ms / 1000);
      cs.prefill->observe(r.prefill_ms / 1000);
      cs.decode->observe(r.decode_ms / 1000);
      cs.overhead->observe(std::max(0.0, r.latency_ms - r.queue_ms - r.prefill_ms - r.decode_ms) /
                           1000);
    }
    if (!failed && cs.success)
      cs.success->inc();
    if (server_error) {
      metrics_
          .counter("errors_total", "Server-side failures, by error type.",
                   {{"type", r.error_type.empty() ? "unknown" : r.error_type}})
          .inc();
    }
  }
  if (server_error) {
    observe::ErrorEvent ev;
    ev.type = r.error_type.empty() ? "server_error" : r.error_type;
    ev.message = r.error.empty() ? "HTTP " + std::to_string(r.status) : r.error;
    ev.location = r.status < 400 ? "inference.stream" : "inference.response";
    ev.status = r.status;
    ev.tags = {{"model", r.model},
               {"project", r.project},
               {"key_id", r.key_id},
               {"request_id", r.request_id},
               {"endpoint", r.endpoint}};
    errors_->capture(std::move(ev));
  }
  if (!request_log_)
    return;
  // Built by hand: a boost::json::object of 19 members costs more than the rest of a cached
  // request (measured with bench/overhead.sh).
  // Per-thread buffer and second-resolution timestamp prefix: both are reused across lines.
  thread_local std::string line;
  thread_local int64_t prefix_second = -1;
  thread_local std::string prefix;
  line.clear();
  {
    const int64_t second = r.arrived_unix_ms / 1000;
    if (second != prefix_second) {
      const std::time_t secs = static_cast<std::time_t>(second);
      std::tm tm{};
      gmtime_r(&secs, &tm);
      char ts[48];
      const size_t n = std::strftime(ts, sizeof(ts), "{\"timestamp\":\"%Y-%m-%dT%H:%M:%S.", &tm);
      prefix.assign(ts, n);
      prefix_second = second;
    }
    line += prefix;
    const int ms = static_cast<int>(r.arrived_unix_ms % 1000);
    line.push_back(static_cast<char>('0' + ms / 100));
    line.push_back(static_cast<char>('0' + ms / 10 % 10));
    line.push_back(static_cast<char>('0' + ms % 10));
    line += "Z\"";
  }
  auto str = [&](const char *k, std::string_view v) {
    line += ",\"";
    line += k;
    line += "\":";
    append_json_string(line, v);
  };
  auto num = [&](const char *k, double v) {
    line += ",\"";
    line += k;
    line += "\":";
    append_number(line, v);
  };
  auto integer = [&](const char *k, int64_t v) {
    line += ",\"";
    line += k;
    line += "\":";
    append_int(line, v);
  };
  auto raw = [&](const char *k, const char *v) {
    line += ",\"";
    line += k;
    line += "\":";
    line += v;
  };
  str("request_id", r.request_id);
  str("project", r.project);
  str("key_id", r.key_id);
  str("model", r.model);
  str("endpoint", r.endpoint);
  raw("stream", r.stream ? "true" : "false");
  integer("input_tokens", r.input_tokens);
  integer("output_tokens", r.output_tokens);
  integer("cached_tokens", r.cached_tokens);
  if (r.ttft_ms >= 0) {
    num("ttft_ms", r.ttft_ms);
  } else {
    raw("ttft_ms", "null");
  }
  num("latency_ms", r.latency_ms);
  if (r.queue_ms >= 0) {
    num("queue_ms", r.queue_ms);
  } else {
    raw("queue_ms", "null");
  }
  str("worker", instance_id_);
  {
    char buf[32];
    auto [end, ec] =
        std::to_chars(buf, buf + sizeof(buf) - 1, r.cost_usd, std::chars_format::fixed, 8);
    if (ec == std::errc()) {
      *end = '\0';
      raw("cost_usd", buf);
    } else {
      raw("cost_usd", "null");
    }
  }
  raw("cached", r.cached ? "true" : "false");
  integer("status", r.status);
  if (r.finish_reason.empty()) {
    raw("finish_reason", "null");
  } else {
    str("finish_reason", r.finish_reason);
  }
  if (r.error.empty()) {
    raw("error", "null");
  } else {
    // The message can echo client text (a field name, a model name, a key pasted as the
    // model): redact secrets before cutting, so a cut cannot leave a key unrecognisable, and
    // bound the line (audit L6).
    str("error", utf8_truncate(observe::redact_secrets(r.error), kMaxLoggedError));
  }
  line.push_back('}');
  request_log_->write(line);
}

void Gateway::handle_ready(std::shared_ptr<http::ResponseWriter> w) {
  if (shutting_down_.load()) {
    w->respond(http::Response::json(503, R"({"status":"shutting_down","checks":[]})"));
    return;
  }
  // Shared by the probes of this request; responds when the last one reports.
  struct Pending {
    int remaining = 0;
    std::shared_ptr<http::ResponseWriter> writer;
  };
  auto render = [this] {
    json::array checks;
    bool ok = true;
    for (const auto &m : models_) {
      auto st = m->worker->stats();
      json::object c{{"name", "model:" + m->spec.name},
                     {"status", m->probe_ok ? "ok" : "failed"},
                     {"latency_ms", m->probe_ms},
                     {"running", st.running},
                     {"waiting", st.waiting}};
      if (!m->probe_ok)
        c["error"] = m->probe_error;
      ok = ok && m->probe_ok;
      checks.push_back(std::move(c));
    }
    {
      // The store backs keys, limits and the ledger: a read and a write round trip.
      const auto t0 = std::chrono::steady_clock::now();
      auto st = control_->check_stores();
      const double ms =
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      json::object c{{"name", "store"}, {"status", st ? "ok" : "failed"}, {"latency_ms", ms}};
      if (!st)
        c["error"] = st.error().message;
      ok = ok && st.ok();
      checks.push_back(std::move(c));
    }
    json::object body{{"status", ok ? "ok" : "unavailable"}, {"checks", std::move(checks)}};
    return http::Response::json(ok ? 200 : 503, json::serialize(body));
  };

  auto pending = std::make_shared<Pending>();
  pending->writer = w;
  std::vector<ServedModel *> stale;
  {
    std::lock_guard<std::mutex> lk(ready_mu_);
    const auto now = clock_.now();
    for (auto &m : models_) {
      if (m->probe_at == std::chrono::steady_clock::time_point{} ||
          now - m->probe_at > config_.ready_cache) {
        stale.push_back(m.get());
      }
    }
    if (stale.empty()) {
      w->respond(render());
      return;
    }
    pending->remaining = static_cast<int>(stale.size());
  }
  for (ServedModel *m : stale) {
    const auto probe_start = std::chrono::steady_clock::now();
    auto done = [this, m, pending, render, probe_start](bool ok, std::string err) {
      std::lock_guard<std::mutex> lk(ready_mu_);
      m->probe_ok = ok;
      m->probe_error = std::move(err);
      m->probe_at = clock_.now();
      m->probe_ms =
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - probe_start)
              .count();
      if (--pending->remaining == 0)
        pending->writer->respond(render());
    };
    engine::GenerationRequest probe;
    const auto &tok = m->worker->model().tokenizer();
    probe.prompt = {tok.bos_id() >= 0 ? tok.bos_id() : 0};
    probe.max_tokens = 1;
    probe.sampling.temperature = 0;
    probe.ignore_eos = true;
    auto t = m->worker->submit(std::move(probe), std::make_shared<ProbeSink>(done));
    if (!t)
      done(false, t.error().message);
  }
}

} // namespace gantry::server
