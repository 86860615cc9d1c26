#include "server/gateway.h"

#include <boost/json.hpp>
#include <cstdio>

#include "api/embeddings.h"
#include "api/openai.h"
#include "cache/memory_cache.h"
#include "http/router.h"
#include "server/cache_replay.h"
#include "server/inference_call.h"
#include "server/metrics_text.h"
#include "server/model_digest.h"

namespace gantry::server {
namespace json = boost::json;
namespace {

http::Response error_with_retry(const Error &e) {
  http::Response r = http::error_response(e);
  if (e.code == ErrorCode::kQueueFull || e.code == ErrorCode::kRateLimited) {
    r.headers.push_back({"Retry-After", "1"});
    r.headers.push_back({"retry-after-ms", "1000"});
  }
  return r;
}

// Probes a model with a one-token greedy generation for /readyz.
class ProbeSink final : public TokenSink {
public:
  using Done = std::function<void(bool ok, std::string error)>;
  explicit ProbeSink(Done done) : done_(std::move(done)) {}
  void on_event(Ticket, const engine::TokenEvent &ev) override {
    if (ev.finish == engine::FinishReason::kNone) return;
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
      if (progress) progress(spec.name, d, t);
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
  const CacheConfig &cc = g->config_.cache;
  g->response_cache_ =
      std::make_unique<ResponseCache>(std::make_unique<cache::MemoryCache>(cc.max_bytes, clock),
                                      ResponseCacheConfig{cc.enabled, cc.ttl});
  g->embeddings_ = std::make_unique<EmbeddingService>(
      std::make_unique<cache::MemoryCache>(cc.embedding_max_bytes, clock), cc.enabled, cc.ttl);
  http::ServerOptions opts;
  opts.host = g->config_.host;
  opts.port = static_cast<uint16_t>(g->config_.port);
  opts.io_threads = g->config_.io_threads;
  opts.max_body_bytes = g->config_.max_body_bytes;
  opts.header_timeout = g->config_.header_timeout;
  opts.body_timeout = g->config_.body_timeout;
  opts.idle_timeout = g->config_.idle_timeout;
  g->http_ = std::make_unique<http::HttpServer>(opts, g->build_routes());
  return g;
}

Gateway::~Gateway() {
  if (http_) http_->shutdown(std::chrono::milliseconds(0));
  models_.clear(); // joins engine threads before the HTTP layer's writers go away
}

Status Gateway::start() { return http_->start(); }
uint16_t Gateway::port() const { return http_->port(); }

bool Gateway::shutdown() {
  shutting_down_.store(true);
  for (auto &m : models_) m->worker->stop_accepting();
  http_->stop_accepting();
  // The engine threads finish the work; the grace is shared by all models.
  const auto deadline = std::chrono::steady_clock::now() + config_.shutdown_grace;
  bool clean = true;
  for (auto &m : models_) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    clean = m->worker->wait_idle(std::max(left, std::chrono::milliseconds(0))) && clean;
  }
  for (auto &m : models_) m->worker->cancel_all();
  for (auto &m : models_) (void)m->worker->wait_idle(std::chrono::milliseconds(1000));
  http_->shutdown(std::chrono::milliseconds(2000));
  return clean;
}

ServedModel *Gateway::find_model(std::string_view name) {
  for (auto &m : models_)
    if (m->spec.name == name) return m.get();
  return nullptr;
}

http::Handler Gateway::build_routes() {
  http::Router r;
  r.get("/healthz", [](http::Request &&, std::shared_ptr<http::ResponseWriter> w) {
    w->respond(http::Response::json(200, R"({"status":"ok"})"));
  });
  r.get("/metrics", [this](http::Request &&, std::shared_ptr<http::ResponseWriter> w) {
    http::Response resp = http::Response::text(200, render_metrics(*this));
    resp.content_type = "text/plain; version=0.0.4; charset=utf-8";
    w->respond(std::move(resp));
  });
  r.get("/readyz", [this](http::Request &&, std::shared_ptr<http::ResponseWriter> w) {
    handle_ready(std::move(w));
  });
  r.get("/v1/models", [this](http::Request &&, std::shared_ptr<http::ResponseWriter> w) {
    std::vector<api::ModelCard> cards;
    for (const auto &m : models_) cards.push_back({m->spec.name, m->created, m->worker->n_ctx()});
    w->respond(http::Response::json(200, api::render_model_list(cards)));
  });
  r.get("/v1/models/{id}", [this](http::Request &&req, std::shared_ptr<http::ResponseWriter> w) {
    ServedModel *m = find_model(req.path_param("id"));
    if (!m) {
      w->respond(http::error_response(
          Error{ErrorCode::kNotFound,
                "The model '" + std::string(req.path_param("id")) + "' does not exist", "model"}));
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
  return std::move(r).into_handler();
}

void Gateway::handle_embeddings(http::Request &&req, std::shared_ptr<http::ResponseWriter> w) {
  if (shutting_down_.load()) {
    w->respond(http::error_response({ErrorCode::kUnavailable, "the server is shutting down", ""}));
    return;
  }
  auto parsed = api::parse_embedding_request(req.body);
  if (!parsed) {
    w->respond(http::error_response(parsed.error()));
    return;
  }
  ServedModel *m = find_model(parsed->model);
  if (!m) {
    w->respond(http::error_response(
        {ErrorCode::kNotFound, "The model '" + parsed->model + "' does not exist", "model"}));
    return;
  }
  embeddings_->handle(*m, std::move(parsed).value(), req.header("cache-control"), std::move(w));
}

void Gateway::handle_inference(int endpoint_int, http::Request &&req,
                               std::shared_ptr<http::ResponseWriter> w) {
  const auto endpoint = static_cast<api::Endpoint>(endpoint_int);
  if (shutting_down_.load()) {
    w->respond(http::error_response({ErrorCode::kUnavailable, "the server is shutting down", ""}));
    return;
  }
  auto parsed = api::parse_inference_request(endpoint, req.body);
  if (!parsed) {
    w->respond(http::error_response(parsed.error()));
    return;
  }
  api::InferenceRequest &ir = *parsed;
  ServedModel *m = find_model(ir.model);
  if (!m) {
    w->respond(http::error_response(
        {ErrorCode::kNotFound, "The model '" + ir.model + "' does not exist", "model"}));
    return;
  }
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
    if (ir.echo) echo = tok.decode(prompt);
  } else {
    prompt = tok.encode(ir.prompt, true, true);
    if (ir.echo) echo = ir.prompt;
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
  if (auto st = engine::check_context(
          n_prompt, max_tokens, n_ctx,
          endpoint == api::Endpoint::kChatCompletions ? "messages" : "prompt");
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
    if (g.sampling.seed && i > 0) g.sampling.seed = *g.sampling.seed + static_cast<uint64_t>(i);
    g.max_tokens = max_tokens;
    g.stop = ir.stop;
    g.ignore_eos = ir.ignore_eos;
  }
  api::ResponseMeta meta{api::id_prefix(endpoint) + req.request_id, m->spec.name,
                         clock_.unix_seconds()};
  auto cached = response_cache_->lookup({m->spec.name, m->digest}, endpoint, ir.n, choices[0],
                                        cache_policy(req.header("cache-control"), ir.cache));
  const http::Header cache_header{"x-gantry-cache",
                                  std::string(cache_outcome_name(cached.outcome))};
  if (cached.hit) {
    replay_cached(endpoint, meta, ir.stream, ir.include_usage, echo, *cached.hit, {cache_header},
                  *w);
    return;
  }
  auto call = std::make_shared<InferenceCall>(endpoint, meta, ir.stream, ir.include_usage, echo,
                                              n_prompt, w, *m->worker);
  call->add_header(cache_header.name, cache_header.value);
  if (cached.store_key) call->store_result_in(*response_cache_, *cached.store_key, cached.ttl);
  auto st = call->start(choices);
  if (!st) {
    http::Response r = error_with_retry(st.error());
    r.headers.push_back(cache_header);
    w->respond(std::move(r));
  }
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
                     {"running", st.running},
                     {"waiting", st.waiting}};
      if (!m->probe_ok) c["error"] = m->probe_error;
      ok = ok && m->probe_ok;
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
    auto done = [this, m, pending, render](bool ok, std::string err) {
      std::lock_guard<std::mutex> lk(ready_mu_);
      m->probe_ok = ok;
      m->probe_error = std::move(err);
      m->probe_at = clock_.now();
      if (--pending->remaining == 0) pending->writer->respond(render());
    };
    engine::GenerationRequest probe;
    const auto &tok = m->worker->model().tokenizer();
    probe.prompt = {tok.bos_id() >= 0 ? tok.bos_id() : 0};
    probe.max_tokens = 1;
    probe.sampling.temperature = 0;
    probe.ignore_eos = true;
    auto t = m->worker->submit(std::move(probe), std::make_shared<ProbeSink>(done));
    if (!t) done(false, t.error().message);
  }
}

} // namespace gantry::server
