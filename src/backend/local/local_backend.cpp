#include "backend/local/local_backend.h"

#include <algorithm>
#include <mutex>
#include <optional>
#include <random>

#include "api/json_schema_grammar.h"
#include "api/tool_call_parser.h"
#include "api/tool_grammar.h"
#include "api/tool_prompt.h"
#include "cache/cache_key.h"
#include "core/utf8.h"
#include "engine/grammar/matcher.h"

namespace gantry::backend {
namespace {

// How a choice's text is read for tool calls (a request with tools and tool_choice != none).
struct ToolParsing {
  api::ToolStyle style = api::ToolStyle::kGeneric;
  bool parallel = true;
};

struct LocalState {
  std::vector<engine::GenerationRequest> choices;
  std::optional<ToolParsing> tools;
};

struct LocalEmbedState {
  std::vector<std::vector<int32_t>> inputs;
  bool many = false;
};

// One started call: the engine's per-ticket events become per-choice ChoiceEvents, and the
// last one a CallSummary. Events arrive on the engine thread; cancel() on any thread.
class LocalCall final : public TokenSink, public std::enable_shared_from_this<LocalCall> {
public:
  LocalCall(ModelWorker &worker, std::shared_ptr<CallSink> sink, int64_t prompt_tokens,
            int choices_per_prompt, std::string served_by)
      : worker_(worker), tok_(worker.model().tokenizer()), sink_(std::move(sink)),
        prompt_tokens_(prompt_tokens), choices_per_prompt_(std::max(choices_per_prompt, 1)),
        served_by_(std::move(served_by)) {}

  Status start(const std::vector<engine::GenerationRequest> &choices,
               const std::optional<ToolParsing> &tools) {
    std::lock_guard<std::mutex> lk(mu_); // events wait until every ticket is known
    choices_.resize(choices.size());
    if (tools) {
      std::random_device rd; // call ids only need to be unique, not reproducible
      for (auto &c : choices_) {
        const uint64_t seed = (static_cast<uint64_t>(rd()) << 32) ^ rd();
        c.parser = std::make_unique<api::ToolCallParser>(tools->style, tools->parallel, seed);
      }
    }
    for (size_t i = 0; i < choices.size(); ++i)
      choices_[i].logprobs = choices[i].logprobs >= 0;
    for (size_t i = 0; i < choices.size(); ++i) {
      auto t = worker_.submit(choices[i], shared_from_this());
      if (!t) {
        for (size_t j = 0; j < i; ++j)
          worker_.cancel(choices_[j].ticket);
        silenced_ = true; // the cancelled ones still report; the sink must hear nothing
        return t.take_error();
      }
      choices_[i].ticket = *t;
    }
    return Ok();
  }

  void cancel() {
    std::lock_guard<std::mutex> lk(mu_);
    for (const auto &c : choices_) {
      if (!c.done)
        worker_.cancel(c.ticket);
    }
  }

  void on_event(Ticket ticket, const engine::TokenEvent &ev) override {
    std::optional<ChoiceEvent> out;
    std::optional<CallSummary> summary;
    std::shared_ptr<CallSink> sink;
    {
      std::lock_guard<std::mutex> lk(mu_);
      const int i = index_of(ticket);
      if (i < 0 || silenced_)
        return;
      Choice &c = choices_[i];
      c.generated = ev.n_generated;
      if (ev.finish == engine::FinishReason::kCancelled) {
        c.done = true;
        // Cancelled while the replica drains: drain_s ran out (a client that went away reads
        // nothing). The stream's error event says why, so a client knows to retry elsewhere.
        if (!failure_)
          failure_ = worker_.accepting()
                         ? Error{ErrorCode::kUnavailable, "the request was cancelled", ""}
                         : Error{ErrorCode::kUnavailable,
                                 "this replica is draining (shutting down or preempted) and its "
                                 "drain_s ran out: the request was cut off; retry it",
                                 ""};
      } else {
        c.cached = ev.n_cached;
        ChoiceEvent e;
        e.choice = i;
        e.text = ev.text;
        e.tokens = ev.token >= 0 ? 1 : 0;
        // Per token, on the event of that token, even when its text is held back for a stop
        // string or an incomplete UTF-8 sequence.
        if (c.logprobs && ev.token >= 0)
          e.logprobs.push_back(token_logprob(ev));
        const bool last = ev.finish != engine::FinishReason::kNone;
        if (c.parser)
          parse_tools(*c.parser, last, e);
        if (last) {
          c.done = true;
          c.finish = engine::finish_reason_name(ev.finish);
          if (c.parser && c.parser->calls() > 0)
            c.finish = "tool_calls";
          e.finish_reason = c.finish;
        }
        output_ = output_ || e.tokens > 0 || !e.text.empty() || !e.tool_calls.empty();
        out = std::move(e);
      }
      summary = summary_if_done();
      sink = sink_;
      if (summary)
        sink_.reset(); // nothing more is delivered; breaks the sink → handle → call cycle
    }
    if (out)
      sink->on_event(*out);
    if (summary)
      sink->on_done(*summary);
  }

  void on_rejected(Ticket ticket, const Error &error) override {
    std::optional<CallSummary> summary;
    std::shared_ptr<CallSink> sink;
    {
      std::lock_guard<std::mutex> lk(mu_);
      const int i = index_of(ticket);
      if (i < 0 || silenced_)
        return;
      choices_[i].done = true;
      failure_ = error;
      for (const auto &c : choices_) {
        if (!c.done)
          worker_.cancel(c.ticket);
      }
      summary = summary_if_done();
      sink = sink_;
      if (summary)
        sink_.reset();
    }
    if (summary)
      sink->on_done(*summary);
  }

  void on_timing(Ticket, const SeqTiming &timing) override {
    std::lock_guard<std::mutex> lk(mu_);
    engine_seconds_ += timing.engine_seconds;
    if (!timing_)
      timing_ = timing;
  }

private:
  struct Choice {
    Ticket ticket = 0;
    std::string finish;
    int generated = 0;
    int cached = 0; // prompt tokens served from the prefix cache
    bool done = false;
    std::unique_ptr<api::ToolCallParser> parser; // when the request has tools
    bool logprobs = false;
  };

  // The event's text through the choice's tool-call parser: what is content stays text, calls
  // become fragments; the last event releases whatever the parser still held.
  static void parse_tools(api::ToolCallParser &parser, bool last, ChoiceEvent &e) {
    api::ToolParse p = parser.push(e.text);
    if (last) {
      api::ToolParse rest = parser.finish();
      p.content += rest.content;
      for (auto &d : rest.calls)
        p.calls.push_back(std::move(d));
    }
    e.text = std::move(p.content);
    e.tool_calls = std::move(p.calls);
  }

  // `token` is valid UTF-8 for JSON (a byte-fallback piece becomes U+FFFD); `bytes` keeps the
  // raw bytes so a client can reassemble split characters.
  api::TopLogprob piece_of(int32_t id, float logprob) const {
    api::TopLogprob t;
    t.bytes = tok_.token_to_piece(id);
    t.token = utf8_sanitize(t.bytes);
    t.logprob = logprob;
    return t;
  }

  api::TokenLogprob token_logprob(const engine::TokenEvent &ev) const {
    api::TopLogprob chosen = piece_of(ev.token, ev.logprob);
    api::TokenLogprob t;
    t.token = std::move(chosen.token);
    t.bytes = std::move(chosen.bytes);
    t.logprob = chosen.logprob;
    t.top.reserve(ev.top_logprobs.size());
    for (const auto &[id, lp] : ev.top_logprobs)
      t.top.push_back(piece_of(id, lp));
    return t;
  }

  int index_of(Ticket t) const {
    for (size_t i = 0; i < choices_.size(); ++i) {
      if (choices_[i].ticket == t)
        return static_cast<int>(i);
    }
    return -1;
  }

  std::optional<CallSummary> summary_if_done() {
    for (const auto &c : choices_) {
      if (!c.done)
        return std::nullopt;
    }
    if (finished_)
      return std::nullopt;
    finished_ = true;
    CallSummary s;
    s.served_by = served_by_;
    s.usage.prompt_tokens = prompt_tokens_;
    // Each prompt is counted once for its choices: the best reuse among them, summed over the
    // prompts.
    int64_t best = 0;
    for (size_t i = 0; i < choices_.size(); ++i) {
      const auto &c = choices_[i];
      s.usage.completion_tokens += c.generated;
      best = std::max<int64_t>(best, c.cached);
      if ((i + 1) % static_cast<size_t>(choices_per_prompt_) == 0 || i + 1 == choices_.size()) {
        s.usage.cached_tokens += best;
        best = 0;
      }
    }
    const bool failed =
        failure_.has_value() && std::any_of(choices_.begin(), choices_.end(),
                                            [](const Choice &c) { return c.finish.empty(); });
    if (failed)
      s.error = BackendError{*failure_, !output_};
    else
      s.finish_reason = choices_.empty() ? "" : choices_[0].finish;
    s.timings.engine_seconds = engine_seconds_;
    s.timings.queue_ms = s.timings.prefill_ms = s.timings.decode_ms = 0;
    if (timing_) {
      using T = std::chrono::steady_clock::time_point;
      using ms = std::chrono::duration<double, std::milli>;
      auto span = [](T a, T b) { return a == T{} || b == T{} ? 0.0 : ms(b - a).count(); };
      s.timings.queue_ms = span(timing_->submitted, timing_->scheduled);
      s.timings.prefill_ms = span(timing_->scheduled, timing_->first_token);
      s.timings.decode_ms = span(timing_->first_token, timing_->finished);
    }
    return s;
  }

  ModelWorker &worker_;
  const engine::Tokenizer &tok_;
  std::shared_ptr<CallSink> sink_;
  const int64_t prompt_tokens_;
  const int choices_per_prompt_;
  const std::string served_by_;

  std::mutex mu_;
  std::vector<Choice> choices_;
  bool silenced_ = false;
  bool finished_ = false;
  bool output_ = false;
  std::optional<Error> failure_;
  double engine_seconds_ = 0;
  std::optional<SeqTiming> timing_; // of the first choice to finish
};

class LocalHandle final : public CallHandle {
public:
  explicit LocalHandle(std::weak_ptr<LocalCall> call) : call_(std::move(call)) {}
  void cancel() override {
    if (auto c = call_.lock())
      c->cancel();
  }

private:
  std::weak_ptr<LocalCall> call_;
};

// Probes a model with a one-token greedy generation for /readyz.
class ProbeSink final : public TokenSink {
public:
  ProbeSink(ProbeDone done, const Clock &clock)
      : done_(std::move(done)), clock_(clock), started_(clock.now()) {}
  void on_event(Ticket, const engine::TokenEvent &ev) override {
    if (ev.finish == engine::FinishReason::kNone)
      return;
    const bool cancelled = ev.finish == engine::FinishReason::kCancelled;
    report(!cancelled && ev.n_generated >= 1, cancelled ? "probe cancelled" : "");
  }
  void on_rejected(Ticket, const Error &e) override { report(false, e.message); }

private:
  void report(bool ok, std::string error) {
    ProbeResult r;
    r.ok = ok;
    r.error = std::move(error);
    r.latency_ms = std::chrono::duration<double, std::milli>(clock_.now() - started_).count();
    done_(std::move(r));
  }
  ProbeDone done_;
  const Clock &clock_;
  const std::chrono::steady_clock::time_point started_;
};

} // namespace

std::string completion_material(std::string_view name, std::string_view digest,
                                api::Endpoint endpoint, int n, const engine::GenerationRequest &req,
                                std::string_view constraint) {
  const auto &s = req.sampling;
  cache::KeyBuilder k("resp.v1");
  k.add("model", name)
      .add("digest", digest)
      .add("endpoint", endpoint == api::Endpoint::kChatCompletions ? "chat" : "completions")
      .add("prompt", std::span<const int32_t>(req.prompt))
      .add("n", n)
      .add("max_tokens", req.max_tokens)
      .add("ignore_eos", req.ignore_eos)
      .add("temperature", s.temperature)
      .add("top_k", s.top_k)
      .add("top_p", s.top_p)
      .add("min_p", s.min_p)
      .add("repetition_penalty", s.repetition_penalty)
      .add("repeat_last_n", s.repeat_last_n)
      .add("frequency_penalty", s.frequency_penalty)
      .add("presence_penalty", s.presence_penalty)
      .add("seed", s.seed)
      .add("stop_count", static_cast<int64_t>(req.stop.size()));
  for (const auto &stop : req.stop)
    k.add("stop", stop);
  k.add("constraint", constraint);
  if (!req.rendered_controls.empty())
    k.add("rendered_controls", std::span<const int32_t>(req.rendered_controls));
  // Only when set, so that the keys of requests without it stay what they were.
  if (!req.logit_bias.empty()) {
    k.add("logit_bias_count", static_cast<int64_t>(req.logit_bias.size()));
    for (const auto &[t, b] : req.logit_bias)
      k.add("bias_token", static_cast<int64_t>(t)).add("bias", b);
  }
  return k.finish();
}

LocalBackend::LocalBackend(std::unique_ptr<ModelWorker> worker, LocalBackendConfig config,
                           const Clock &clock)
    : worker_(std::move(worker)), config_(std::move(config)), clock_(clock) {
  info_.name = config_.name;
  info_.kind = "local";
  info_.context_length = worker_->n_ctx();
  info_.created = config_.created;
  info_.embedding_dims = worker_->model().config().n_embd;
  info_.identity = config_.digest;
}

LocalBackend::~LocalBackend() = default;

Result<PreparedCall> LocalBackend::prepare(const api::InferenceRequest &ir,
                                           const PrepareOptions &options) {
  // An encoder (BERT family) has no LM head: a clean 400 naming the model, before any work.
  if (worker_->model().config().encoder) {
    return Err(Error::invalid("The model '" + config_.name +
                                  "' is an embeddings model: it serves /v1/embeddings only, not "
                                  "text generation",
                              "model"));
  }
  const auto &tok = worker_->model().tokenizer();
  const bool chat = ir.endpoint == api::Endpoint::kChatCompletions;
  PreparedCall p;
  p.endpoint = ir.endpoint;
  std::string constraint_key;
  // tool_choice "none" renders no tools and reads no calls: the model answers in text.
  const bool tools =
      chat && !ir.tools.empty() && ir.tool_choice.mode != api::ToolChoice::Mode::kNone;
  GANTRY_ASSIGN_OR_RETURN(auto constraint, constraint_for(ir, tools, constraint_key));
  p.choices_per_prompt = ir.n;
  p.logprobs = ir.logprobs;
  for (const auto &[t, b] : ir.logit_bias) {
    if (t >= tok.n_vocab()) {
      return Err(Error::invalid("logit_bias token id " + std::to_string(t) +
                                    " is outside the vocabulary (" + std::to_string(tok.n_vocab()) +
                                    " tokens)",
                                "logit_bias"));
    }
  }
  std::vector<std::vector<int32_t>> prompts;
  if (chat) {
    // Special tokens are parsed only in the template's own text, never in message contents or
    // tool definitions (audit L8): a user cannot forge a role switch or an end-of-turn.
    static const std::vector<api::FunctionTool> kNoTools;
    GANTRY_ASSIGN_OR_RETURN(auto prompt, api::encode_chat(config_.chat_format, ir.messages, true,
                                                          tok, tools ? ir.tools : kNoTools));
    prompts.push_back(std::move(prompt));
  } else {
    if (ir.prompts.empty())
      return Err(Error::invalid("'prompt' is a required property", "prompt"));
    for (size_t i = 0; i < ir.prompts.size(); ++i) {
      const api::Prompt &in = ir.prompts[i];
      const std::string param =
          ir.prompts.size() == 1 ? "prompt" : "prompt[" + std::to_string(i) + "]";
      std::vector<int32_t> prompt;
      if (in.ids) {
        prompt = *in.ids;
        for (int32_t t : prompt) {
          if (t >= tok.n_vocab()) {
            return Err(Error::invalid(
                "token id " + std::to_string(t) + " is outside the vocabulary", param));
          }
        }
        // Token ids can decode to lone bytes (byte-fallback tokens); echo must be valid UTF-8
        // like every other text we send (audit L2).
        if (ir.echo)
          p.echo.push_back(utf8_sanitize(tok.decode(prompt)));
      } else {
        prompt = tok.encode(in.text, true, true);
        if (ir.echo)
          p.echo.push_back(in.text);
      }
      prompts.push_back(std::move(prompt));
    }
  }
  const int n_ctx = worker_->n_ctx();
  auto state = std::make_shared<LocalState>();
  std::vector<int32_t> markers;
  if (tools) {
    state->tools = ToolParsing{api::tool_style(config_.chat_format), ir.parallel_tool_calls};
    for (std::string_view m : api::tool_output_markers(config_.chat_format)) {
      if (auto id = tok.token_id(m); id && tok.is_control(*id))
        markers.push_back(*id);
    }
  }
  state->choices.resize(prompts.size() * static_cast<size_t>(ir.n));
  for (size_t pi = 0; pi < prompts.size(); ++pi) {
    const std::string param = chat                  ? "messages"
                              : prompts.size() == 1 ? "prompt"
                                                    : "prompt[" + std::to_string(pi) + "]";
    const int n_prompt = static_cast<int>(prompts[pi].size());
    if (n_prompt == 0)
      return Err(Error::invalid("the prompt is empty", param));
    const int max_tokens =
        ir.max_tokens ? *ir.max_tokens
                      : std::min(options.default_max_tokens, std::max(n_ctx - n_prompt, 1));
    // The engine checks this too; checking here makes the error a plain 400 rather than a
    // failure inside a stream that has already started.
    GANTRY_TRY(engine::check_context(n_prompt, max_tokens, n_ctx, param));
    p.prompt_tokens += n_prompt;
    p.max_output_tokens = std::max<int64_t>(p.max_output_tokens, max_tokens);
    for (int j = 0; j < ir.n; ++j) {
      const size_t i = pi * static_cast<size_t>(ir.n) + static_cast<size_t>(j);
      auto &g = state->choices[i];
      g.prompt = prompts[pi];
      g.sampling = ir.sampling;
      // Each choice of a seeded request gets its own, still reproducible, seed; each prompt
      // the seeds it would get alone.
      if (g.sampling.seed && j > 0)
        g.sampling.seed = *g.sampling.seed + static_cast<uint64_t>(j);
      g.max_tokens = max_tokens;
      g.stop = ir.stop;
      g.ignore_eos = ir.ignore_eos;
      g.cache_scope = options.cache_scope;
      g.logit_bias = ir.logit_bias;
      g.logprobs = ir.logprobs ? ir.top_logprobs : -1;
      g.constraint = constraint;
      g.rendered_controls = markers;
    }
  }
  p.n = static_cast<int>(state->choices.size());
  // The response cache keeps text, not log-probabilities: a request that asks for them is
  // answered by the engine every time (a bypass) rather than from an entry that lacks them.
  if (ir.sampling.deterministic() && !ir.logprobs) {
    if (prompts.size() == 1) {
      p.cache_material = completion_material(config_.name, config_.digest, ir.endpoint, ir.n,
                                             state->choices[0], constraint_key);
    } else {
      cache::KeyBuilder k("resp.prompts.v1");
      k.add("prompts", static_cast<int64_t>(prompts.size()));
      for (size_t pi = 0; pi < prompts.size(); ++pi) {
        k.add("prompt_material",
              completion_material(config_.name, config_.digest, ir.endpoint, ir.n,
                                  state->choices[pi * static_cast<size_t>(ir.n)], constraint_key));
      }
      p.cache_material = k.finish();
    }
    // Parsing changes what the same tokens answer (text or calls, and which calls are kept).
    if (state->tools) {
      p.cache_material = cache::KeyBuilder("resp.tools.v1")
                             .add("base", p.cache_material)
                             .add("style", static_cast<int>(state->tools->style))
                             .add("parallel", state->tools->parallel)
                             .finish();
    }
  }
  p.state = std::move(state);
  return p;
}

Result<std::shared_ptr<const engine::TokenConstraint>>
LocalBackend::constraint_for(const api::InferenceRequest &ir, bool tools, std::string &key) {
  using Mode = api::ToolChoice::Mode;
  using Type = api::ResponseFormat::Type;
  const bool forced = tools && ir.tool_choice.mode != Mode::kAuto;
  // With tools the model may call (auto) and a JSON response_format, the output is either a
  // call or the document: the two grammars side by side.
  const bool either = tools && !forced && ir.response_format.type != Type::kText;
  std::string param;
  engine::GrammarCache::Compile compile;
  const auto tool_grammar = [this, &ir](api::ToolChoice choice) {
    return api::tool_call_grammar(config_.chat_format, ir.tools, choice, ir.parallel_tool_calls,
                                  api::json_schema_to_gbnf);
  };
  const auto format_gbnf = [&ir](std::string_view prefix) -> Result<std::string> {
    if (ir.response_format.type == Type::kJsonObject)
      return api::json_object_gbnf(prefix);
    return api::json_schema_to_gbnf(ir.response_format.schema, prefix);
  };
  if (forced || either) {
    // Every tool's schema and the choice shape the grammar; the template family its syntax.
    key = "tools:" + std::to_string(static_cast<int>(config_.chat_format)) + ":" +
          std::to_string(static_cast<int>(ir.tool_choice.mode)) + ":" + ir.tool_choice.function +
          ":" + (ir.parallel_tool_calls ? "p" : "s") + ":" +
          std::to_string(static_cast<int>(ir.response_format.type)) + ":" +
          ir.response_format.schema;
    for (const auto &t : ir.tools)
      key += "\n" + t.name + "\t" + t.parameters;
    param = forced ? "tool_choice" : "response_format";
    compile = [&]() -> Result<std::shared_ptr<const engine::Grammar>> {
      if (forced) {
        GANTRY_ASSIGN_OR_RETURN(std::string g, tool_grammar(ir.tool_choice));
        return engine::compile_gbnf(g);
      }
      api::ToolChoice any;
      any.mode = Mode::kRequired;
      GANTRY_ASSIGN_OR_RETURN(std::string calls, tool_grammar(any));
      GANTRY_ASSIGN_OR_RETURN(std::string doc, format_gbnf("fmt-"));
      // The call grammar's start rule is its first line's `root`: renamed, then either.
      if (!calls.starts_with("root ::= "))
        return Err(Error::internal("tool-call grammar without a leading root rule"));
      return engine::compile_gbnf("root ::= tc-root | fmt-root\ntc-" + calls + "\n" + doc);
    };
  } else if (!ir.grammar.empty()) {
    key = "gbnf:" + ir.grammar;
    param = "grammar";
    compile = [&ir] { return engine::compile_gbnf(ir.grammar); };
  } else if (ir.response_format.type == Type::kJsonObject) {
    key = "json_object";
    param = "response_format";
    compile = [] { return engine::compile_gbnf(api::json_object_gbnf("")); };
  } else if (ir.response_format.type == Type::kJsonSchema) {
    key = "schema:" + ir.response_format.schema;
    param = "response_format.json_schema.schema";
    compile = [&ir] { return api::compile_json_schema(ir.response_format.schema); };
  } else {
    return std::shared_ptr<const engine::TokenConstraint>();
  }
  auto grammar = grammars_.get_or_compile(key, compile);
  if (!grammar) {
    Error e = grammar.take_error();
    if (e.param.empty())
      e.param = param;
    return Err(std::move(e));
  }
  std::call_once(trie_once_,
                 [this] { trie_ = engine::TokenTrie::build(worker_->model().tokenizer()); });
  return std::shared_ptr<const engine::TokenConstraint>(
      engine::make_grammar_constraint(std::move(grammar).value(), trie_));
}

Result<std::unique_ptr<CallHandle>> LocalBackend::start(const PreparedCall &prepared,
                                                        std::shared_ptr<CallSink> sink) {
  const auto *state = static_cast<const LocalState *>(prepared.state.get());
  if (!state)
    return Err(Error::internal("LocalBackend::start without a prepared call"));
  auto call = std::make_shared<LocalCall>(*worker_, std::move(sink), prepared.prompt_tokens,
                                          prepared.choices_per_prompt, config_.name);
  GANTRY_TRY(call->start(state->choices, state->tools));
  return std::unique_ptr<CallHandle>(std::make_unique<LocalHandle>(call));
}

Result<PreparedEmbeddings> LocalBackend::prepare_embeddings(const api::EmbeddingRequest &req) {
  const auto &tok = worker_->model().tokenizer();
  const size_t n = req.size();
  auto state = std::make_shared<LocalEmbedState>();
  state->many = n > 1;
  auto param = [&](size_t i) { return state->many ? "input[" + std::to_string(i) + "]" : "input"; };
  state->inputs.resize(n);
  PreparedEmbeddings p;
  p.input_tokens.resize(n);
  p.cache_material.resize(n);
  const int pooling = static_cast<int>(worker_->model().config().pooling);
  for (size_t i = 0; i < n; ++i) {
    auto &in = state->inputs[i];
    if (!req.texts.empty()) {
      in = tok.encode(req.texts[i], true, true);
    } else {
      in = req.token_inputs[i];
      for (int32_t t : in) {
        if (t >= tok.n_vocab()) {
          return Err(Error::invalid("token id " + std::to_string(t) + " is outside the vocabulary",
                                    param(i)));
        }
      }
    }
    if (static_cast<int>(in.size()) > worker_->n_ctx()) {
      return Err(Error{ErrorCode::kContextLengthExceeded,
                       "This model's maximum context length is " +
                           std::to_string(worker_->n_ctx()) + " tokens, however you requested " +
                           std::to_string(in.size()) +
                           " tokens in the input. Please reduce the length of the input.",
                       param(i)});
    }
    p.input_tokens[i] = static_cast<int64_t>(in.size());
    // Keyed by the model, its pooling and the token ids: a text and the same text sent as
    // token ids share one entry.
    p.cache_material[i] = cache::KeyBuilder("emb.v1")
                              .add("model", config_.name)
                              .add("digest", config_.digest)
                              .add("pooling", pooling)
                              .add("tokens", std::span<const int32_t>(in))
                              .finish();
  }
  p.state = std::move(state);
  return p;
}

Status LocalBackend::embed(const PreparedEmbeddings &prepared, std::vector<size_t> indices,
                           EmbedDone done) {
  const auto *state = static_cast<const LocalEmbedState *>(prepared.state.get());
  if (!state)
    return Err(Error::internal("LocalBackend::embed without prepared inputs"));
  std::vector<std::vector<int32_t>> work;
  work.reserve(indices.size());
  int64_t tokens = 0;
  for (size_t i : indices) {
    work.push_back(state->inputs.at(i));
    tokens += static_cast<int64_t>(work.back().size());
  }
  // The worker names inputs by their position in `work`: renamed to the request's own index.
  return worker_->embed(
      std::move(work),
      [indices, many = state->many, tokens, name = config_.name,
       done = std::move(done)](Result<std::vector<std::vector<float>>> r, double engine_seconds) {
        if (!r) {
          Error e = r.take_error();
          if (!indices.empty() && (e.param == "input" || e.param.starts_with("input["))) {
            size_t j = 0;
            if (e.param != "input")
              j = static_cast<size_t>(std::strtoul(e.param.c_str() + 6, nullptr, 10));
            if (j < indices.size())
              e.param = many ? "input[" + std::to_string(indices[j]) + "]" : "input";
          }
          done(std::move(e));
          return;
        }
        done(EmbedResult{std::move(r).value(), tokens, name, engine_seconds});
      });
}

void LocalBackend::probe(ProbeDone done) {
  if (worker_->model().config().encoder) {
    // An encoder cannot generate: the probe embeds one token instead (its [CLS]).
    const auto &tok = worker_->model().tokenizer();
    const auto started = clock_.now();
    auto st = worker_->embed(
        {{tok.bos_id() >= 0 ? tok.bos_id() : 0}},
        [done, started, &clock = clock_](Result<std::vector<std::vector<float>>> r, double) {
          ProbeResult p;
          p.ok = r.ok();
          if (!r.ok())
            p.error = r.error().message;
          p.latency_ms = std::chrono::duration<double, std::milli>(clock.now() - started).count();
          done(std::move(p));
        });
    if (!st.ok())
      done(ProbeResult{false, st.error().message, 0});
    return;
  }
  engine::GenerationRequest probe;
  const auto &tok = worker_->model().tokenizer();
  probe.prompt = {tok.bos_id() >= 0 ? tok.bos_id() : 0};
  probe.max_tokens = 1;
  probe.sampling.temperature = 0;
  probe.ignore_eos = true;
  auto sink = std::make_shared<ProbeSink>(done, clock_);
  auto t = worker_->submit(std::move(probe), std::move(sink));
  if (!t)
    done(ProbeResult{false, t.error().message, 0});
}

BackendStats LocalBackend::stats() const {
  const WorkerStats w = worker_->stats();
  BackendStats s;
  s.in_flight = w.in_flight;
  s.running = w.running;
  s.waiting = w.waiting;
  s.queued_requests = w.queued_requests;
  s.queued_tokens = w.queued_tokens;
  s.kv_blocks_used = w.kv_blocks_used;
  s.kv_blocks_total = w.kv_blocks_total;
  s.kv_blocks_cached = w.kv_blocks_cached;
  s.steps = w.steps;
  s.prompt_tokens = w.prompt_tokens;
  s.generated_tokens = w.generated_tokens;
  s.prefix_queried_tokens = w.prefix_queried_tokens;
  s.prefix_hit_tokens = w.prefix_hit_tokens;
  s.rejected_queue_full = w.rejected_queue_full;
  s.cancelled = w.cancelled;
  return s;
}

} // namespace gantry::backend
