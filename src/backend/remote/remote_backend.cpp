#include "backend/remote/remote_backend.h"

#include <boost/json.hpp>

#include <algorithm>
#include <cmath>

#include "backend/remote/remote_call.h"
#include "core/utf8.h"
#include "http/client.h"

namespace gantry::backend::remote {
namespace json = boost::json;

namespace {

using Steady = std::chrono::steady_clock;

double ms_between(Steady::time_point a, Steady::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

class Handle final : public CallHandle {
public:
  explicit Handle(std::shared_ptr<RemoteBackend::Call> call) : call_(std::move(call)) {}
  void cancel() override;

private:
  std::shared_ptr<RemoteBackend::Call> call_;
};

} // namespace

void Handle::cancel() { call_->cancel(); }

// --- construction

RemoteBackend::RemoteBackend(RemoteModelConfig config, const Clock &clock)
    : config_(std::move(config)), clock_(clock) {}

Result<std::unique_ptr<RemoteBackend>> RemoteBackend::create(RemoteModelConfig config,
                                                             const Clock &clock) {
  if (config.endpoints.empty() && !config.allow_no_endpoints)
    return Err(Error::invalid("model '" + config.name + "': no backends"));
  std::unique_ptr<RemoteBackend> b(new RemoteBackend(std::move(config), clock));
  const RemoteModelConfig &c = b->config_;
  b->loop_ = std::make_unique<http::IoLoop>(std::max(1, c.io_threads));
  std::vector<EndpointSpec> specs;
  std::string identity = "remote";
  for (const auto &ec : c.endpoints) {
    GANTRY_ASSIGN_OR_RETURN(auto ep, b->make_endpoint(ec, /*resolve_model=*/true));
    identity += "|" + std::string(backend_kind_name(ec.kind)) + "|" + ep->name + "|" + ep->model;
    specs.push_back({ep->name, ec.weight, ec.max_concurrent});
    b->endpoints_.push_back(std::move(ep));
  }
  const BackendKind kind =
      c.endpoints.empty() ? BackendKind::kOpenAICompatible : c.endpoints.front().kind;
  b->codec_ = make_codec(kind);
  b->live_.assign(b->endpoints_.size(), true);
  b->pool_ = std::make_unique<Pool>(std::move(specs), c.pool, clock);
  b->info_.name = c.name;
  b->info_.kind = std::string(backend_kind_name(kind));
  b->info_.created = clock.unix_seconds();
  b->info_.identity = identity;
  if (!c.probe_path.empty() && c.probe_interval.count() > 0)
    b->prober_ = std::thread([p = b.get()] { p->prober(); });
  return b;
}

Result<std::shared_ptr<RemoteBackend::Endpoint>>
RemoteBackend::make_endpoint(const RemoteEndpointConfig &ec, bool resolve_model) {
  const RemoteModelConfig &c = config_;
  auto parsed = http::parse_url(ec.url);
  if (!parsed)
    return Err(Error::invalid("model '" + c.name + "': backend url: " + parsed.error().message));
  auto ep = std::make_shared<Endpoint>();
  ep->url = ec.url;
  const auto &po = parsed->options;
  ep->name = (po.host.find(':') != std::string::npos ? "[" + po.host + "]" : po.host) + ":" +
             std::to_string(po.port);
  ep->base_path = parsed->target;
  if (const auto q = ep->base_path.find('?'); q != std::string::npos)
    ep->base_path.erase(q);
  while (!ep->base_path.empty() && ep->base_path.back() == '/')
    ep->base_path.pop_back();
  ep->api_key = ec.api_key;
  ep->reports_cost = ec.reports_cost;
  if (!ec.api_key.empty()) {
    std::lock_guard<std::mutex> lk(ep_mu_);
    if (std::find(secrets_.begin(), secrets_.end(), ec.api_key) == secrets_.end())
      secrets_.push_back(ec.api_key);
  }
  ep->codec = make_codec(ec.kind);
  http::UpstreamOptions uo;
  uo.host = po.host;
  uo.port = po.port;
  uo.tls = po.tls;
  uo.tls_ca_file = ec.tls_ca_file;
  uo.connect_timeout = c.connect_timeout;
  uo.first_byte_timeout = c.first_byte_timeout;
  uo.idle_timeout = c.idle_timeout;
  uo.total_timeout = c.total_timeout;
  uo.max_idle = std::max(8, ec.max_concurrent > 0 ? ec.max_concurrent : 64);
  ep->client = std::make_unique<http::UpstreamClient>(uo, clock_);
  ep->async_client = std::make_unique<http::AsyncUpstreamClient>(*loop_, uo, clock_);
  // Built once: every call of this endpoint sends the same paths and headers.
  ep->served_by = c.name + "@" + ep->name;
  const api::Endpoint kinds[2] = {api::Endpoint::kChatCompletions, api::Endpoint::kCompletions};
  for (int i = 0; i < 2; ++i) {
    if (auto path = ep->codec->path(kinds[i]))
      ep->path[i] = ep->base_path + *path;
    ep->headers[i] = {{"Content-Type", "application/json"}};
    if (i == 1)
      ep->headers[i].push_back({"Accept", "text/event-stream"});
    for (auto &w : ep->codec->auth_headers(ep->api_key))
      ep->headers[i].push_back({w.name, w.value});
  }
  ep->model = ec.model;
  if (ep->model.empty()) {
    if (!resolve_model)
      return Err(Error::invalid("model '" + c.name + "': backend " + ep->name +
                                " needs its upstream model named"));
    if (ec.kind == BackendKind::kAnthropic)
      return Err(Error::invalid("model '" + c.name + "': backend " + ep->name +
                                " (anthropic) needs `model = \"...\"`"));
    http::Headers h;
    for (auto &w : ep->codec->auth_headers(ep->api_key))
      h.push_back({w.name, w.value});
    auto call = ep->client->start(http::Method::kGet, ep->base_path + "/models", {}, h);
    if (!call)
      return Err(Error::invalid("model '" + c.name + "': cannot list the models of backend " +
                                ep->name + " (" + call.error().message +
                                "); name one with `model = \"...\"`"));
    auto body = (*call)->read_all(1 << 20);
    if (!body || (*call)->status() != 200)
      return Err(Error::invalid("model '" + c.name + "': backend " + ep->name +
                                " answered /models with HTTP " +
                                std::to_string((*call)->status())));
    GANTRY_ASSIGN_OR_RETURN(auto ids, parse_model_list(*body));
    auto chosen = choose_upstream_model("", ids, ep->name);
    if (!chosen)
      return Err(Error::invalid("model '" + c.name + "': " + chosen.error().message));
    ep->model = *chosen;
  }
  return ep;
}

Result<int> RemoteBackend::add_endpoint(const RemoteEndpointConfig &ec) {
  {
    std::lock_guard<std::mutex> lk(ep_mu_);
    for (std::size_t i = 0; i < endpoints_.size(); ++i)
      if (endpoints_[i] && endpoints_[i]->url == ec.url && live_[i])
        return static_cast<int>(i); // already a member
    if (pool_->members() >= config_.max_endpoints)
      return Err(Error{ErrorCode::kQueueFull,
                       "model '" + config_.name + "' has " + std::to_string(config_.max_endpoints) +
                           " backends already (max_endpoints)",
                       {}});
  }
  GANTRY_ASSIGN_OR_RETURN(auto ep, make_endpoint(ec, /*resolve_model=*/false));
  int index = 0;
  {
    std::lock_guard<std::mutex> lk(ep_mu_);
    index = pool_->add_endpoint({ep->name, ec.weight, ec.max_concurrent});
    if (static_cast<std::size_t>(index) >= endpoints_.size()) {
      endpoints_.resize(static_cast<std::size_t>(index) + 1);
      live_.resize(static_cast<std::size_t>(index) + 1, false);
    }
    endpoints_[static_cast<std::size_t>(index)] = std::move(ep); // calls on the old one hold it
    live_[static_cast<std::size_t>(index)] = true;
  }
  wake_waiters(); // calls queued while the pool had no member (or no free slot) ask again
  return index;
}

bool RemoteBackend::remove_endpoint(std::string_view url) {
  std::lock_guard<std::mutex> lk(ep_mu_);
  for (std::size_t i = 0; i < endpoints_.size(); ++i)
    if (live_[i] && endpoints_[i]->url == url) {
      live_[i] = false;
      pool_->remove_endpoint(static_cast<int>(i));
      return true;
    }
  return false;
}

bool RemoteBackend::set_endpoint_preferred(std::string_view url, bool preferred) {
  std::lock_guard<std::mutex> lk(ep_mu_);
  for (std::size_t i = 0; i < endpoints_.size(); ++i)
    if (live_[i] && endpoints_[i]->url == url) {
      pool_->set_preferred(static_cast<int>(i), preferred);
      return true;
    }
  return false;
}

int RemoteBackend::endpoint_count() const { return pool_->members(); }

std::shared_ptr<RemoteBackend::Endpoint> RemoteBackend::endpoint(int index) const {
  std::lock_guard<std::mutex> lk(ep_mu_);
  return endpoints_[static_cast<std::size_t>(index)];
}

std::vector<std::string> RemoteBackend::secrets() const {
  std::lock_guard<std::mutex> lk(ep_mu_);
  return secrets_;
}

RemoteBackend::~RemoteBackend() {
  cancel_all();
  {
    std::unique_lock<std::mutex> lk(mu_);
    stopping_ = true;
    // Cancelled calls end at their next step; the loop runs them until the last summary.
    idle_cv_.wait(lk, [&] { return in_flight_ == 0; });
  }
  for (auto &ep : endpoints_) // their kept-alive connections live on the loop
    if (ep)
      ep->async_client.reset();
  loop_.reset();
  work_cv_.notify_all();
  prober_cv_.notify_all();
  if (pool_)
    pool_->wake_waiters();
  if (prober_.joinable())
    prober_.join();
  for (auto &t : threads_)
    t.join();
}

// --- call threads

Status RemoteBackend::post(std::function<void()> task) {
  std::unique_lock<std::mutex> lk(mu_);
  if (stopping_)
    return Err(Error{ErrorCode::kUnavailable, "shutting down", {}});
  if (static_cast<int>(tasks_.size()) >= config_.max_queued_calls) {
    ++rejected_;
    Error e{ErrorCode::kQueueFull, "too many calls queued for model '" + config_.name + "'", {}};
    e.retry_after_ms = 1000;
    return Err(std::move(e));
  }
  tasks_.push_back(std::move(task));
  if (idle_threads_ < static_cast<int>(tasks_.size()) &&
      static_cast<int>(threads_.size()) < config_.max_threads)
    threads_.emplace_back([this] { call_thread(); });
  lk.unlock();
  work_cv_.notify_one();
  return Ok();
}

void RemoteBackend::call_thread() {
  std::unique_lock<std::mutex> lk(mu_);
  while (true) {
    ++idle_threads_;
    work_cv_.wait(lk, [&] { return stopping_ || !tasks_.empty(); });
    --idle_threads_;
    if (tasks_.empty())
      return; // stopping
    auto task = std::move(tasks_.front());
    tasks_.pop_front();
    lk.unlock();
    task();
    lk.lock();
  }
}

// --- prepare / start

int64_t RemoteBackend::count_tokens(std::string_view text) const {
  if (config_.tokenizer)
    return config_.tokenizer(text);
  if (text.empty())
    return 0;
  return std::max<int64_t>(1, static_cast<int64_t>(std::ceil(static_cast<double>(text.size()) /
                                                             config_.estimate_bytes_per_token)));
}

Result<PreparedCall> RemoteBackend::prepare(const api::InferenceRequest &request,
                                            const PrepareOptions &options) {
  const WireCodec &codec = *codec_;
  GANTRY_TRY(codec.path(request.endpoint));
  auto state = std::make_shared<Call::State>();
  state->request = request;
  state->request.echo = false; // the service prepends the echo itself
  state->default_max_tokens = options.default_max_tokens;
  int64_t prompt = 0;
  // The affinity key covers the part of the prompt that requests are likely to share: every
  // chat message but the last (system prompt, few-shot examples, the conversation so far) and
  // the first half of the last one (a shared document before the question), at most 2 KiB.
  std::string affinity_text;
  auto leading = [](std::string_view text) {
    return text.substr(0, std::min<std::size_t>(text.size() / 2, 2048));
  };
  if (request.endpoint == api::Endpoint::kChatCompletions) {
    for (std::size_t i = 0; i < request.messages.size(); ++i) {
      const auto &m = request.messages[i];
      prompt += count_tokens(m.content) + 4;
      if (affinity_text.size() < 2048) {
        affinity_text += m.role + ":";
        affinity_text += i + 1 < request.messages.size()
                             ? std::string_view(m.content).substr(0, 2048)
                             : leading(m.content);
        affinity_text += "\n";
      }
    }
  } else {
    for (const api::Prompt &in : request.prompts) {
      if (in.ids) {
        prompt += static_cast<int64_t>(in.ids->size());
        if (request.echo) {
          return Err(Error::invalid("echo with token-id prompts is not supported for remote models",
                                    "echo"));
        }
      } else {
        prompt += count_tokens(in.text);
      }
    }
    // The first prompt decides the affinity (several prompts share one upstream call).
    if (!request.prompts.empty()) {
      const api::Prompt &first = request.prompts.front();
      if (first.ids) {
        for (std::size_t i = 0; i < first.ids->size() / 2 && i < 512; ++i)
          affinity_text += std::to_string((*first.ids)[i]) + ",";
      } else {
        affinity_text = leading(first.text);
      }
    }
  }
  state->prompt_estimate = std::max<int64_t>(prompt, 1);
  if (config_.pool.prefix_affinity)
    state->affinity = prefix_key(affinity_text, affinity_text.size());
  // Request errors (Anthropic's n > 1) surface here, before admission.
  GANTRY_TRY(codec.check_request(state->request));

  PreparedCall p;
  p.endpoint = request.endpoint;
  const int prompts = request.endpoint == api::Endpoint::kCompletions
                          ? std::max(1, static_cast<int>(request.prompts.size()))
                          : 1;
  p.n = prompts * request.n;
  p.choices_per_prompt = request.n;
  p.logprobs = request.logprobs;
  p.prompt_tokens = state->prompt_estimate;
  p.prompt_tokens_estimated = !config_.tokenizer;
  p.max_output_tokens = request.max_tokens ? *request.max_tokens : options.default_max_tokens;
  if (request.echo && request.endpoint == api::Endpoint::kCompletions) {
    for (const api::Prompt &in : request.prompts)
      p.echo.push_back(in.text);
  }
  // The response cache keeps no logprobs: such a request always goes upstream (a bypass). The
  // material is a whole request body: not built when the cache will not look it up.
  if (options.wants_cache_material && request.sampling.deterministic() && !request.logprobs) {
    auto plain = state->request;
    plain.stream = false;
    plain.include_usage = false;
    p.cache_material =
        info_.identity + "\n" + *codec.request_body(plain, "", false, options.default_max_tokens);
  }
  p.state = std::move(state);
  return p;
}

Result<std::unique_ptr<CallHandle>> RemoteBackend::start(const PreparedCall &prepared,
                                                         std::shared_ptr<CallSink> sink) {
  if (!accepting_.load())
    return Err(Error{ErrorCode::kUnavailable, "model '" + config_.name + "' is shutting down", {}});
  auto state = std::static_pointer_cast<const Call::State>(prepared.state);
  if (!state)
    return Err(Error::internal("remote call without its prepared state"));
  auto call = std::make_shared<Call>(*this, std::move(state), std::move(sink));
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (stopping_)
      return Err(Error{ErrorCode::kUnavailable, "shutting down", {}});
    // The bound of what calls hold while they wait (no thread each, but memory and sockets).
    if (in_flight_ >= config_.max_threads + config_.max_queued_calls) {
      ++rejected_;
      Error e{
          ErrorCode::kQueueFull, "too many calls in flight for model '" + config_.name + "'", {}};
      e.retry_after_ms = 1000;
      return Err(std::move(e));
    }
    ++in_flight_;
    if (calls_.size() >= 2 * static_cast<std::size_t>(in_flight_) + 16)
      std::erase_if(calls_, [](const std::weak_ptr<Call> &w) { return w.expired(); });
    calls_.push_back(call);
  }
  call->post_begin(); // on the call's loop: sinks are never called inside start()
  return std::unique_ptr<CallHandle>(std::make_unique<Handle>(call));
}

void RemoteBackend::call_ended() {
  std::lock_guard<std::mutex> lk(mu_);
  --in_flight_;
  idle_cv_.notify_all();
}

void RemoteBackend::wake_waiters() {
  std::vector<std::shared_ptr<Call>> woken;
  {
    std::lock_guard<std::mutex> lk(waiters_mu_);
    ++slot_generation_;
    if (waiters_.empty())
      return;
    woken.swap(waiters_);
  }
  for (auto &c : woken)
    c->wake();
}

// --- embeddings

namespace {
struct EmbedState {
  api::EmbeddingRequest request;
};
} // namespace

Result<PreparedEmbeddings> RemoteBackend::prepare_embeddings(const api::EmbeddingRequest &request) {
  if (codec_->kind() == BackendKind::kAnthropic)
    return Err(
        Error::invalid("model '" + config_.name + "' (Anthropic) has no embeddings", "model"));
  PreparedEmbeddings p;
  p.tokens_estimated = !config_.tokenizer;
  for (std::size_t i = 0; i < request.size(); ++i) {
    const int64_t n = request.texts.empty() ? static_cast<int64_t>(request.token_inputs[i].size())
                                            : std::max<int64_t>(1, count_tokens(request.texts[i]));
    p.input_tokens.push_back(n);
    std::string material = info_.identity + "\n";
    if (request.texts.empty()) {
      for (int32_t id : request.token_inputs[i])
        material += std::to_string(id) + ",";
    } else {
      material += request.texts[i];
    }
    p.cache_material.push_back(std::move(material));
  }
  auto st = std::make_shared<EmbedState>();
  st->request = request;
  p.state = std::move(st);
  return p;
}

Status RemoteBackend::embed(const PreparedEmbeddings &prepared, std::vector<size_t> indices,
                            EmbedDone done) {
  if (!accepting_.load())
    return Err(Error{ErrorCode::kUnavailable, "model '" + config_.name + "' is shutting down", {}});
  {
    std::lock_guard<std::mutex> lk(mu_);
    ++in_flight_;
  }
  auto posted = post([this, prepared, indices = std::move(indices), done = std::move(done)] {
    run_embed(prepared, indices, done);
    std::lock_guard<std::mutex> lk(mu_);
    --in_flight_;
    idle_cv_.notify_all();
  });
  if (!posted) {
    std::lock_guard<std::mutex> lk(mu_);
    --in_flight_;
    return posted;
  }
  return Ok();
}

void RemoteBackend::run_embed(const PreparedEmbeddings &prepared,
                              const std::vector<size_t> &indices, const EmbedDone &done) {
  const auto &req = std::static_pointer_cast<const EmbedState>(prepared.state)->request;
  pool_->record_request();
  std::vector<int> exclude;
  Error last{ErrorCode::kUnavailable, "no backend answered", {}};
  for (int attempt = 1; attempt <= config_.max_attempts; ++attempt) {
    auto lease = pool_->acquire(exclude, std::nullopt);
    if (!lease)
      return done(Err(lease.error()));
    const std::shared_ptr<Endpoint> held = endpoint(lease->index);
    Endpoint &ep = *held;
    json::array input;
    for (size_t i : indices) {
      if (req.texts.empty()) {
        json::array ids;
        for (int32_t id : req.token_inputs[i])
          ids.push_back(id);
        input.push_back(std::move(ids));
      } else {
        input.push_back(json::string(req.texts[i]));
      }
    }
    json::object b{{"model", ep.model}, {"input", std::move(input)}};
    http::Headers headers{{"Content-Type", "application/json"}};
    for (auto &w : ep.codec->auth_headers(ep.api_key))
      headers.push_back({w.name, w.value});
    const auto t0 = clock_.now();
    auto up = ep.client->start(http::Method::kPost, ep.base_path + "/embeddings",
                               json::serialize(b), std::move(headers));
    bool retry = false;
    Outcome outcome = Outcome::kSuccess;
    std::optional<ErrorKind> ekind;
    std::optional<EmbedResult> result;
    if (!up) {
      last = client_transport_error(up.error(), config_.name);
      outcome = Outcome::kFailure;
      ekind = transport_error_kind(up.error());
      retry = up.error().param == http::kConnectFailed || up.error().param == http::kConnectTimeout;
    } else {
      auto body = (*up)->read_all(config_.max_response_bytes);
      const int status = (*up)->status();
      if (!body) {
        last = client_transport_error(body.error(), config_.name);
        outcome = Outcome::kFailure;
        ekind = transport_error_kind(body.error());
      } else if (status < 200 || status > 299) {
        last = ep.codec->error_from(status, *body);
        last.message = scrub_upstream_message(last.message, secrets());
        retry = retryable_status(status);
        outcome = status == 429 ? Outcome::kOverloaded
                                : (status >= 500 ? Outcome::kFailure : Outcome::kSuccess);
        ekind = status == 429
                    ? std::optional(ErrorKind::kStatus429)
                    : (status >= 500 ? std::optional(ErrorKind::kStatus5xx) : std::nullopt);
      } else {
        json::parse_options po;
        po.allow_invalid_utf8 = true;
        json::error_code jec;
        json::value v = json::parse(*body, jec, {}, po);
        const json::value *data =
            !jec && v.is_object() ? v.as_object().if_contains("data") : nullptr;
        if (!data || !data->is_array() || data->as_array().size() != indices.size()) {
          last = Error{ErrorCode::kUnavailable, "upstream sent an invalid embeddings response", {}};
          outcome = Outcome::kFailure;
          ekind = ErrorKind::kBadResponse;
        } else {
          EmbedResult r;
          r.vectors.resize(indices.size());
          bool ok = true;
          std::size_t pos = 0;
          for (const json::value &d : data->as_array()) {
            const json::object *o = d.if_object();
            const json::value *emb = o ? o->if_contains("embedding") : nullptr;
            std::size_t at = pos++;
            if (o)
              if (const json::value *ix = o->if_contains("index");
                  ix && ix->is_int64() && ix->as_int64() >= 0 &&
                  static_cast<std::size_t>(ix->as_int64()) < indices.size())
                at = static_cast<std::size_t>(ix->as_int64());
            if (!emb || !emb->is_array()) {
              ok = false;
              break;
            }
            for (const json::value &x : emb->as_array()) {
              if (!x.is_number()) {
                ok = false;
                break;
              }
              r.vectors[at].push_back(static_cast<float>(x.to_number<double>()));
            }
          }
          if (const json::value *u = v.as_object().if_contains("usage"); u && u->is_object())
            if (const json::value *pt = u->as_object().if_contains("prompt_tokens");
                pt && pt->is_int64())
              r.prompt_tokens = pt->as_int64();
          if (r.prompt_tokens == 0)
            for (size_t i : indices)
              r.prompt_tokens += prepared.input_tokens[i];
          r.served_by = config_.name + "@" + ep.name;
          if (ok)
            result = std::move(r);
          else {
            last = Error{ErrorCode::kUnavailable, "upstream sent an invalid embedding", {}};
            outcome = Outcome::kFailure;
            ekind = ErrorKind::kBadResponse;
          }
        }
      }
    }
    pool_->release(*lease, outcome, ekind, 0, std::chrono::duration<double>(clock_.now() - t0));
    if (result)
      return done(std::move(*result));
    if (!retry || !pool_->allow_retry())
      break;
    exclude.push_back(lease->index);
    if (static_cast<int>(exclude.size()) >= pool_->members())
      exclude.clear();
  }
  done(Err(std::move(last)));
}

// --- health

void RemoteBackend::prober() {
  std::unique_lock<std::mutex> lk(mu_);
  while (!stopping_) {
    prober_cv_.wait_for(lk, config_.probe_interval, [&] { return stopping_; });
    if (stopping_)
      return;
    lk.unlock();
    std::vector<std::pair<int, std::shared_ptr<Endpoint>>> members;
    {
      std::lock_guard<std::mutex> elk(ep_mu_);
      for (std::size_t i = 0; i < endpoints_.size(); ++i)
        if (live_[i])
          members.emplace_back(static_cast<int>(i), endpoints_[i]);
    }
    for (const auto &[i, held] : members) {
      Endpoint &ep = *held;
      http::Headers h;
      for (auto &w : ep.codec->auth_headers(ep.api_key))
        h.push_back({w.name, w.value});
      auto up = ep.client->start(http::Method::kGet, ep.base_path + config_.probe_path, {}, h);
      bool ok = false;
      if (up) {
        auto body = (*up)->read_all(1 << 20);
        ok = body.ok() && (*up)->status() >= 200 && (*up)->status() < 300;
      }
      pool_->probe_result(i, ok);
    }
    lk.lock();
  }
}

void RemoteBackend::probe(ProbeDone done) {
  const auto t0 = clock_.now();
  auto posted = post([this, done, t0] {
    ProbeResult r;
    r.ok = pool_->ready();
    if (!r.ok)
      r.error = "every backend of model '" + config_.name + "' is ejected";
    r.latency_ms = ms_between(t0, clock_.now());
    done(std::move(r));
  });
  if (!posted)
    done(ProbeResult{false, posted.error().message, 0});
}

BackendStats RemoteBackend::stats() const {
  BackendStats s;
  const PoolStats ps = pool_->stats();
  for (const auto &e : ps.endpoints)
    s.running += e.in_flight;
  s.waiting = ps.queued;
  s.queued_requests = ps.queued;
  s.cancelled = cancelled_.load();
  s.rejected_queue_full = ps.queue_rejected + rejected_.load();
  std::lock_guard<std::mutex> lk(mu_);
  s.in_flight = in_flight_;
  return s;
}

void RemoteBackend::stop_accepting() { accepting_.store(false); }

bool RemoteBackend::wait_idle(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lk(mu_);
  return idle_cv_.wait_for(lk, timeout, [&] { return in_flight_ == 0; });
}

void RemoteBackend::cancel_all() {
  std::vector<std::shared_ptr<Call>> live;
  {
    std::lock_guard<std::mutex> lk(mu_);
    for (auto &w : calls_)
      if (auto c = w.lock())
        live.push_back(std::move(c));
  }
  for (auto &c : live)
    c->cancel();
  if (pool_)
    pool_->wake_waiters();
}

} // namespace gantry::backend::remote
