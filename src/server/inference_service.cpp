#include "server/inference_service.h"

#include <algorithm>
#include <mutex>

#include "core/utf8.h"

namespace gantry::server {
namespace {
// The byte bound of a prompt before tokenizing: context × this many bytes.
constexpr size_t kMaxBytesPerToken = 16;
// Prompts up to this many bytes (text of the prompt or of all messages) are prepared on the
// calling thread; tokenizing 4 KiB takes tens of microseconds on this machine's cores.
constexpr size_t kInlinePrepareBytes = 4096;
// A choice's logprobs kept for a non-streamed response: a bound on memory whatever max_tokens
// the context allows (beyond it the list is cut; the text is not).
constexpr size_t kMaxLogprobTokens = 32768;

size_t prompt_bytes(const api::InferenceRequest &r) {
  size_t bytes = 0;
  for (const auto &p : r.prompts)
    bytes += p.text.size();
  for (const auto &m : r.messages)
    bytes += m.content.size();
  return bytes;
}
} // namespace

// One call in flight: the backend's sink, and the owner of the call's state from admission to
// the outcome. Backend events arrive on the backend's thread; mu_ orders them with start().
class InferenceService::Call final : public backend::CallSink,
                                     public std::enable_shared_from_this<Call> {
public:
  Call(InferenceService &svc, InferenceInput in, CallOutcome out,
       std::shared_ptr<InferenceSink> sink)
      : svc_(svc), in_(std::move(in)), out_(std::move(out)), sink_(std::move(sink)) {}

  // On the caller's thread: the parts that need no CPU to speak of.
  void begin() {
    const api::InferenceRequest &ir = in_.request;
    out_.stream = ir.stream;
    backend_ = svc_.models_.find(ir.model);
    if (!backend_) {
      fail({ErrorCode::kNotFound, "The model '" + echoed(ir.model) + "' does not exist", "model"});
      return;
    }
    out_.model = backend_->info().name;
    // A caller over its RPM or concurrency limits is refused before anything templates or
    // tokenizes its prompt (audit M4); the admission after prepare still decides the rest.
    control::AdmitRequest pre;
    pre.principal = in_.principal ? &*in_.principal : nullptr;
    pre.model = out_.model;
    pre.endpoint = out_.endpoint;
    pre.request_id = in_.call_id;
    pre.client_request_id = out_.request_id;
    pre.arrived_ms = out_.arrived_unix_ms;
    control::RateSnapshot refusal;
    if (auto st = svc_.control_.precheck(pre, &refusal); !st) {
      out_.rate = refusal;
      fail(st.error());
      return;
    }
    // `bytes`: the longest prompt (each is checked against the context on its own); `total`:
    // what prepare will tokenize.
    size_t bytes = 0, total = 0;
    for (const auto &pr : ir.prompts) {
      bytes = std::max(bytes, pr.text.size());
      total += pr.text.size();
    }
    for (const auto &m : ir.messages)
      bytes += m.content.size();
    total = std::max(total, bytes);
    // A prompt far longer than the context is refused before anything tokenizes it (audit M4):
    // no tokenizer emits fewer than one token per ~16 bytes of text.
    if (const int ctx = backend_->info().context_length; ctx > 0) {
      const size_t limit = static_cast<size_t>(ctx) * kMaxBytesPerToken;
      if (bytes > limit) {
        fail({ErrorCode::kContextLengthExceeded,
              "This model's maximum context length is " + std::to_string(ctx) +
                  " tokens; the prompt (" + std::to_string(bytes) +
                  " bytes) is far longer. Please reduce the length of the " +
                  (ir.endpoint == api::Endpoint::kChatCompletions ? "messages." : "prompt."),
              ir.endpoint == api::Endpoint::kChatCompletions ? "messages" : "prompt"});
        return;
      }
    }
    // A short prompt is templated and tokenized right here: that takes microseconds, less than
    // the two thread hand-offs the pool costs (a cache hit went from 121 to 261 us at the median
    // through the pool; bench/side_by_side.sh). Longer ones run on the prepare pool, never on an
    // I/O thread (audit M4), where a full pool is an overload like a full engine queue.
    if (total <= kInlinePrepareBytes) {
      prepare_and_start();
      return;
    }
    auto self = shared_from_this();
    if (!svc_.pool_.post([self] { self->prepare_and_start(); })) {
      Error e{ErrorCode::kQueueFull, "the server is busy preparing other requests; retry shortly",
              ""};
      e.retry_after_ms = 1000;
      fail(std::move(e));
    }
  }

  void on_event(const backend::ChoiceEvent &ev) override {
    std::lock_guard<std::mutex> lk(mu_);
    if (ev.choice < 0 || ev.choice >= static_cast<int>(choices_.size()))
      return;
    Choice &c = choices_[ev.choice];
    c.tokens += ev.tokens;
    if (ev.tokens > 0) {
      const auto now = svc_.clock_.now();
      if (!first_token_)
        first_token_ = now;
      if (inter_token_ && c.last_token != std::chrono::steady_clock::time_point{})
        inter_token_->observe(std::chrono::duration<double>(now - c.last_token).count());
      c.last_token = now;
    }
    if (store_key_ && !ev.text.empty())
      c.pieces.push_back(ev.text);
    if (!head_.stream) {
      c.text += ev.text;
      api::add_tool_call_deltas(c.calls, ev.tool_calls);
    }
    if (!ev.finish_reason.empty())
      c.finish = ev.finish_reason;
    delivered_ = true;
    if (ev.logprobs.empty()) {
      sink_->on_event(head_, ev);
      return;
    }
    // Completions' text_offset: where each token starts in the choice's text, echo included.
    backend::ChoiceEvent out = ev;
    if (!c.offset_started) {
      c.offset = utf8_chars(head_.echo_of(ev.choice));
      c.offset_started = true;
    }
    for (auto &lp : out.logprobs) {
      lp.text_offset = c.offset;
      c.offset += utf8_chars(lp.token);
    }
    if (!head_.stream && c.logprobs.size() + out.logprobs.size() <= kMaxLogprobTokens)
      c.logprobs.insert(c.logprobs.end(), out.logprobs.begin(), out.logprobs.end());
    sink_->on_event(head_, out);
  }

  void on_progress(std::string_view comment) override {
    std::lock_guard<std::mutex> lk(mu_); // after the head
    if (head_.stream) {
      delivered_ = true;
      sink_->on_progress(head_, comment);
    }
  }

  void on_done(const backend::CallSummary &s) override {
    std::lock_guard<std::mutex> lk(mu_);
    using ms = std::chrono::duration<double, std::milli>;
    const auto now = svc_.clock_.now();
    const bool failed = s.error.has_value();
    out_.latency_ms = ms(now - out_.arrived).count();
    out_.ttft_ms = first_token_ ? ms(*first_token_ - out_.arrived).count() : out_.latency_ms;
    out_.input_tokens = s.usage.prompt_tokens;
    out_.output_tokens = s.usage.completion_tokens;
    out_.cached_tokens = s.usage.cached_tokens;
    out_.queue_ms = std::max(0.0, s.timings.queue_ms);
    out_.prefill_ms = std::max(0.0, s.timings.prefill_ms);
    out_.decode_ms = std::max(0.0, s.timings.decode_ms);
    out_.engine_ms = s.timings.engine_seconds * 1000;
    out_.served_by = s.served_by;
    out_.served_model = s.served_model;
    out_.cold_start_ms = s.cold_start_ms;
    out_.finish_reason = failed ? "error" : s.finish_reason;
    // A stream that failed after it opened still answered 200; the error travels in the stream.
    const int status = failed ? http_status(s.error->error.code) : 200;
    const bool opened = head_.stream && (!head_.open_on_first_event || delivered_);
    out_.status = failed && !opened ? status : 200;
    if (failed)
      out_.error = s.error->error;
    if (!failed && store_key_)
      store_result(s);
    out_.cost_usd = settle(status, s.timings.engine_seconds, s.served_model, s.reported_cost_usd);
    out_.priced = true;
    handle_.reset();
    complete(&head_);
  }

private:
  struct Choice {
    std::string text;                // non-streamed calls only
    std::string finish;              // "" until the choice finished
    std::vector<std::string> pieces; // each event's text, kept only for the response cache
    std::chrono::steady_clock::time_point last_token{};
    int tokens = 0;                          // generated so far
    std::vector<api::ToolCall> calls;        // non-streamed calls only
    std::vector<api::TokenLogprob> logprobs; // non-streamed calls that asked for them
    int64_t offset = 0;                      // characters of the choice's text so far
    bool offset_started = false;
  };

  static int64_t utf8_chars(std::string_view s) {
    int64_t n = 0;
    for (unsigned char ch : s)
      n += (ch & 0xC0) != 0x80;
    return n;
  }

  void prepare_and_start() {
    const api::InferenceRequest &ir = in_.request;
    // Cache entries and prefix-cache blocks are shared only within this scope (audit M2).
    const std::string scope = cache_scope(in_.principal, svc_.config_.share_cache_across_projects);
    const CachePolicy policy = cache_policy(in_.cache_control, ir.cache);
    backend::PrepareOptions options = svc_.config_.prepare;
    options.cache_scope = scope;
    options.wants_cache_material = svc_.cache_.enabled() && (policy.read || policy.write);
    auto prepared = backend_->prepare(ir, options);
    if (!prepared) {
      fail(prepared.take_error());
      return;
    }
    backend::PreparedCall &p = *prepared;
    // Looked up before admission: a hit costs no tokens, so it reserves none (it still counts
    // as a request for RPM and concurrency, and needs the key's model access and budget).
    auto cached = svc_.cache_.lookup_material(p.cache_material, p.n, policy, scope);
    out_.cache = std::string(cache_outcome_name(cached.outcome));
    control::AdmitRequest ar;
    ar.principal = in_.principal ? &*in_.principal : nullptr;
    ar.model = out_.model;
    ar.endpoint = out_.endpoint;
    ar.request_id = in_.call_id;
    ar.client_request_id = out_.request_id;
    ar.prompt_tokens = cached.hit ? 0 : p.prompt_tokens;
    ar.max_output_tokens = cached.hit ? 0 : p.max_output_tokens * p.n;
    ar.arrived_ms = out_.arrived_unix_ms;
    control::RateSnapshot refusal;
    auto adm = svc_.control_.admit(ar, &refusal);
    if (!adm) {
      out_.rate = refusal;
      fail(adm.take_error());
      return;
    }
    admission_ = std::move(adm).value();
    out_.rate = admission_->snapshot;

    head_.meta = {api::id_prefix(ir.endpoint) +
                      (in_.response_id.empty() ? in_.call_id : in_.response_id),
                  out_.model, svc_.clock_.unix_seconds()};
    head_.endpoint = ir.endpoint;
    head_.n = p.n;
    head_.choices_per_prompt = p.choices_per_prompt;
    head_.echo = p.echo;
    head_.logprobs = p.logprobs;
    head_.stream = ir.stream;
    head_.include_usage = ir.include_usage;
    head_.prompt_tokens = p.prompt_tokens;
    // A remote backend's failure before its first byte (every retry and fallback spent) is then
    // still an HTTP status (out_.status says which, and the sink answers with it). The local
    // engine's streams keep opening at once, as a cache hit's do: its clients see the head while
    // a long prompt is read, and it fails after admission only when cancelled or drained.
    head_.open_on_first_event = head_.stream && !cached.hit && backend_->info().kind != "local" &&
                                sink_->opens_on_first_event();
    if (cached.hit) {
      replay(*cached.hit);
      return;
    }
    if (cached.store_key) {
      store_key_ = std::move(cached.store_key);
      store_ttl_ = cached.ttl;
    }
    std::unique_lock<std::mutex> lk(mu_); // events wait until the head is out
    choices_.resize(static_cast<size_t>(p.n));
    auto started = backend_->start(p, shared_from_this());
    if (!started) {
      lk.unlock();
      control::Outcome o;
      o.status = http_status(started.error().code);
      o.finish_reason = std::string(error_code_name(started.error().code));
      svc_.control_.finish(*admission_, o);
      out_.rate.reset(); // answered like an error before the call: no x-ratelimit-*
      fail(started.take_error());
      return;
    }
    handle_ = std::shared_ptr<backend::CallHandle>(std::move(started).value());
    // After start (a remote call's request has left by now), still under the lock: the first
    // event waits for it.
    if (svc_.config_.metrics) {
      inter_token_ = &svc_.inter_token_histogram(out_.model);
    }
    sink_->on_head(head_, out_, [h = handle_] { h->cancel(); });
  }

  // A hit ran no engine work: the admission is settled as cached (cost 0, every reserved token
  // refunded) but still counts as a request against RPM, and gets its ledger row. Its events
  // are the stored pieces, so the sink renders it exactly like a live response.
  void replay(const CachedCompletion &hit) {
    control::Outcome o;
    o.cached = true;
    o.input_tokens = hit.prompt_tokens;
    for (const auto &c : hit.choices)
      o.output_tokens += c.completion_tokens;
    o.cached_tokens = o.input_tokens;
    o.finish_reason = hit.choices.empty() ? "" : hit.choices[0].finish_reason;
    o.latency_ms =
        std::chrono::duration<double, std::milli>(svc_.clock_.now() - out_.arrived).count();
    o.ttft_ms = o.latency_ms;
    out_.cost_usd = svc_.control_.finish(*admission_, o);
    out_.priced = true;
    out_.cached = true;
    out_.status = 200;
    out_.input_tokens = o.input_tokens;
    out_.output_tokens = o.output_tokens;
    out_.cached_tokens = o.cached_tokens;
    out_.finish_reason = o.finish_reason;
    out_.latency_ms = o.latency_ms;
    sink_->on_head(head_, out_, [] {});
    CallOutput output;
    for (size_t i = 0; i < hit.choices.size(); ++i) {
      const auto &c = hit.choices[i];
      std::string text;
      for (const auto &piece : c.pieces) {
        if (piece.empty())
          continue;
        if (!head_.stream) {
          text += piece;
          continue;
        }
        backend::ChoiceEvent ev;
        ev.choice = static_cast<int>(i);
        ev.text = piece;
        sink_->on_event(head_, ev);
      }
      if (head_.stream) {
        backend::ChoiceEvent fin;
        fin.choice = static_cast<int>(i);
        fin.finish_reason = c.finish_reason;
        sink_->on_event(head_, fin);
      }
      api::Choice ch;
      ch.index = static_cast<int>(i);
      ch.text = head_.echo_of(static_cast<int>(i)) + text;
      ch.finish_reason = c.finish_reason;
      output.choices.push_back(std::move(ch));
    }
    sink_->on_complete(&head_, out_, output);
  }

  double settle(int status, double engine_seconds, const std::string &served_model,
                std::optional<double> reported_cost = std::nullopt) {
    control::Outcome o;
    o.priced_model = served_model;
    o.reported_cost_usd = reported_cost;
    o.status = status;
    o.input_tokens = out_.input_tokens;
    o.output_tokens = out_.output_tokens;
    o.cached_tokens = out_.cached_tokens;
    o.engine_seconds = engine_seconds;
    o.ttft_ms = out_.ttft_ms;
    o.latency_ms = out_.latency_ms;
    o.finish_reason = out_.finish_reason;
    return svc_.control_.finish(*admission_, o);
  }

  void store_result(const backend::CallSummary &s) {
    CachedCompletion result;
    result.prompt_tokens = static_cast<int>(s.usage.prompt_tokens);
    for (auto &c : choices_) {
      if (c.finish != "stop" && c.finish != "length")
        return;
      result.choices.push_back({std::move(c.pieces), c.finish, c.tokens});
    }
    svc_.cache_.store(*store_key_, store_ttl_, result);
  }

  // A call that never ran: no head, an error outcome.
  void fail(Error e) {
    out_.status = http_status(e.code);
    out_.error = std::move(e);
    out_.latency_ms =
        std::chrono::duration<double, std::milli>(svc_.clock_.now() - out_.arrived).count();
    complete(nullptr);
  }

  void complete(const CallHead *head) {
    CallOutput output;
    if (head && !head->stream) {
      for (size_t i = 0; i < choices_.size(); ++i) {
        api::Choice ch;
        ch.index = static_cast<int>(i);
        ch.text = head->echo_of(static_cast<int>(i)) + choices_[i].text;
        ch.finish_reason = choices_[i].finish;
        ch.tool_calls = std::move(choices_[i].calls);
        if (head->logprobs)
          ch.logprobs = std::move(choices_[i].logprobs);
        output.choices.push_back(std::move(ch));
      }
    }
    sink_->on_complete(head, out_, output);
  }

  InferenceService &svc_;
  InferenceInput in_;
  CallOutcome out_;
  std::shared_ptr<InferenceSink> sink_;
  backend::ModelBackend *backend_ = nullptr;
  std::shared_ptr<control::Admission> admission_;
  CallHead head_;
  std::optional<std::string> store_key_;
  std::chrono::seconds store_ttl_{0};
  telemetry::Histogram *inter_token_ = nullptr;

  std::mutex mu_;
  std::vector<Choice> choices_;
  bool delivered_ = false; // an event or progress comment reached the sink
  std::optional<std::chrono::steady_clock::time_point> first_token_;
  std::shared_ptr<backend::CallHandle> handle_;
};

InferenceService::InferenceService(ModelRegistry &models, control::ControlPlane &control,
                                   ResponseCache &cache, PreparePool &pool,
                                   telemetry::Registry &metrics, const Clock &clock,
                                   InferenceServiceConfig config)
    : models_(models), control_(control), cache_(cache), pool_(pool), metrics_(metrics),
      clock_(clock), config_(config) {}

void InferenceService::count_tokens(InferenceInput input,
                                    std::function<void(Result<int64_t>)> done) {
  backend::ModelBackend *backend = models_.find(input.request.model);
  if (!backend) {
    done(Err(Error{ErrorCode::kNotFound,
                   "The model '" + echoed(input.request.model) + "' does not exist", "model"}));
    return;
  }
  const auto &allowed = input.principal ? input.principal->models : std::vector<std::string>{};
  if (!allowed.empty() &&
      std::find(allowed.begin(), allowed.end(), backend->info().name) == allowed.end()) {
    done(Err(Error{ErrorCode::kPermissionDenied,
                   "This API key is not allowed to use model '" + backend->info().name + "'.",
                   "model"}));
    return;
  }
  const size_t bytes = prompt_bytes(input.request);
  if (const int ctx = backend->info().context_length;
      ctx > 0 && bytes > static_cast<size_t>(ctx) * kMaxBytesPerToken) {
    done(Err(Error{ErrorCode::kContextLengthExceeded,
                   "This model's maximum context length is " + std::to_string(ctx) +
                       " tokens; the prompt (" + std::to_string(bytes) + " bytes) is far longer.",
                   "messages"}));
    return;
  }
  backend::PrepareOptions options = config_.prepare;
  options.cache_scope = cache_scope(input.principal, config_.share_cache_across_projects);
  auto task = [backend, options, done, request = std::move(input.request)] {
    auto prepared = backend->prepare(request, options);
    if (!prepared) {
      done(prepared.take_error());
      return;
    }
    done(prepared->prompt_tokens);
  };
  // The same rule as a call's prepare: short prompts here, long ones off the I/O thread.
  if (bytes <= kInlinePrepareBytes) {
    task();
    return;
  }
  if (!pool_.post(std::move(task))) {
    Error e{ErrorCode::kQueueFull, "the server is busy preparing other requests; retry shortly",
            ""};
    e.retry_after_ms = 1000;
    done(Err(std::move(e)));
  }
}

telemetry::Histogram &InferenceService::inter_token_histogram(const std::string &model) {
  std::lock_guard<std::mutex> lk(inter_token_mu_);
  if (auto it = inter_token_by_model_.find(model); it != inter_token_by_model_.end())
    return *it->second;
  telemetry::Histogram &h = metrics_.histogram(
      "inter_token_latency_seconds", "Time between consecutive tokens of a sequence.",
      {{"model_name", model}}, telemetry::Registry::token_latency_buckets());
  if (inter_token_by_model_.size() < kMaxCachedHistograms)
    inter_token_by_model_.emplace(model, &h);
  return h;
}

void InferenceService::run(InferenceInput input, CallOutcome outcome,
                           std::shared_ptr<InferenceSink> sink) {
  auto call = std::make_shared<Call>(*this, std::move(input), std::move(outcome), std::move(sink));
  call->begin();
}

} // namespace gantry::server
