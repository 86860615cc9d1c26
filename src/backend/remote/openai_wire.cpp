// The OpenAI wire (kinds `openai-compatible` and `openai`): Gantry's typed request back into an
// OpenAI body for the upstream model, and the upstream's body or chunks into typed results.
#include <boost/json.hpp>

#include <charconv>

#include "backend/remote/wire.h"
#include "core/json_text.h"
#include "core/utf8.h"

namespace gantry::backend::remote {
namespace json = boost::json;

namespace {

json::parse_options lenient() {
  json::parse_options po;
  po.allow_invalid_utf8 = true; // repaired field by field below
  po.max_depth = 64;
  return po;
}

// A float field as Boost.JSON writes it (the DOM body's rendering, byte for byte).
void append_float(std::string &o, float v) { o += json::serialize(json::value(v)); }

std::string text_of(const json::value *v) {
  if (!v || !v->is_string())
    return {};
  return utf8_sanitize(std::string_view(v->as_string()));
}

int64_t int_of(const json::object &o, std::string_view key) {
  const json::value *v = o.if_contains(key);
  if (!v)
    return 0;
  if (v->is_int64())
    return std::max<int64_t>(0, v->as_int64());
  if (v->is_uint64())
    return static_cast<int64_t>(std::min<uint64_t>(v->as_uint64(), INT64_MAX));
  return 0;
}

std::optional<double> cost_of(const json::value *v) {
  if (!v)
    return std::nullopt;
  double d = -1;
  if (v->is_double())
    d = v->as_double();
  else if (v->is_int64())
    d = static_cast<double>(v->as_int64());
  else if (v->is_uint64())
    d = static_cast<double>(v->as_uint64());
  return plausible_cost(d);
}

std::optional<UpstreamUsage> usage_of(const json::object &o) {
  const json::value *u = o.if_contains("usage");
  if (!u || !u->is_object())
    return std::nullopt;
  const json::object &uo = u->as_object();
  UpstreamUsage out;
  out.prompt_tokens = int_of(uo, "prompt_tokens");
  out.completion_tokens = int_of(uo, "completion_tokens");
  if (const json::value *d = uo.if_contains("prompt_tokens_details"); d && d->is_object())
    out.cached_tokens = int_of(d->as_object(), "cached_tokens");
  out.cost_usd = cost_of(uo.if_contains("cost_usd"));
  return out;
}

int index_of(const json::object &c, int fallback) {
  const json::value *i = c.if_contains("index");
  if (i && i->is_int64() && i->as_int64() >= 0 && i->as_int64() < api::kMaxTotalChoices)
    return static_cast<int>(i->as_int64());
  if (i && i->is_uint64() && i->as_uint64() < api::kMaxTotalChoices)
    return static_cast<int>(i->as_uint64());
  return fallback;
}

double number_of(const json::value *v) {
  if (v && v->is_double())
    return v->as_double();
  if (v && v->is_int64())
    return static_cast<double>(v->as_int64());
  if (v && v->is_uint64())
    return static_cast<double>(v->as_uint64());
  return -9999.0; // OpenAI's word for an impossible token; null or junk reads as it
}

// OpenAI's "bytes" (an array of 0..255), else the token's own text.
std::string bytes_of(const json::value *v, const std::string &token) {
  if (!v || !v->is_array())
    return token;
  std::string out;
  for (const json::value &b : v->as_array()) {
    if (b.is_int64() && b.as_int64() >= 0 && b.as_int64() <= 255)
      out.push_back(static_cast<char>(b.as_int64()));
    else
      return token;
  }
  return out;
}

// Bounds on what an upstream's logprobs may make us hold.
constexpr std::size_t kMaxUpstreamLogprobTokens = 1 << 16;

// A choice's "logprobs": chat's {"content": [...]} or the legacy completions form
// {"tokens", "token_logprobs", "top_logprobs"} — both into TokenLogprobs.
std::vector<api::TokenLogprob> logprobs_of(const json::value *v) {
  std::vector<api::TokenLogprob> out;
  if (!v || !v->is_object())
    return out;
  const json::object &o = v->as_object();
  if (const json::value *content = o.if_contains("content"); content && content->is_array()) {
    for (const json::value &e : content->as_array()) {
      if (!e.is_object() || out.size() >= kMaxUpstreamLogprobTokens)
        break;
      const json::object &eo = e.as_object();
      api::TokenLogprob t;
      t.token = text_of(eo.if_contains("token"));
      t.bytes = bytes_of(eo.if_contains("bytes"), t.token);
      t.logprob = number_of(eo.if_contains("logprob"));
      if (const json::value *top = eo.if_contains("top_logprobs"); top && top->is_array()) {
        for (const json::value &a : top->as_array()) {
          if (!a.is_object() || t.top.size() >= static_cast<std::size_t>(api::kMaxTopLogprobs))
            break;
          api::TopLogprob alt;
          alt.token = text_of(a.as_object().if_contains("token"));
          alt.bytes = bytes_of(a.as_object().if_contains("bytes"), alt.token);
          alt.logprob = number_of(a.as_object().if_contains("logprob"));
          t.top.push_back(std::move(alt));
        }
      }
      out.push_back(std::move(t));
    }
    return out;
  }
  const json::value *tokens = o.if_contains("tokens");
  if (!tokens || !tokens->is_array())
    return out;
  const json::value *lps = o.if_contains("token_logprobs");
  const json::value *tops = o.if_contains("top_logprobs");
  const auto &ta = tokens->as_array();
  for (std::size_t i = 0; i < ta.size() && i < kMaxUpstreamLogprobTokens; ++i) {
    api::TokenLogprob t;
    t.token = text_of(&ta[i]);
    t.bytes = t.token;
    if (lps && lps->is_array() && i < lps->as_array().size())
      t.logprob = number_of(&lps->as_array()[i]);
    if (tops && tops->is_array() && i < tops->as_array().size() &&
        tops->as_array()[i].is_object()) {
      for (const auto &[k, lp] : tops->as_array()[i].as_object()) {
        if (t.top.size() >= static_cast<std::size_t>(api::kMaxTopLogprobs))
          break;
        api::TopLogprob alt;
        alt.token = utf8_sanitize(std::string_view(k));
        alt.bytes = alt.token;
        alt.logprob = number_of(&lp);
        t.top.push_back(std::move(alt));
      }
    }
    out.push_back(std::move(t));
  }
  return out;
}

std::optional<Error> embedded_error(const json::object &o) {
  const json::value *e = o.if_contains("error");
  if (!e || e->is_null())
    return std::nullopt;
  std::string msg = "upstream error";
  if (e->is_object())
    msg = "upstream: " + scrub_upstream_message(text_of(e->as_object().if_contains("message")), {});
  else if (e->is_string())
    msg = "upstream: " + scrub_upstream_message(text_of(e), {});
  return Error{ErrorCode::kUnavailable, std::move(msg), {}};
}

// message.tool_calls / delta.tool_calls: [{"index", "id", "type", "function": {"name",
// "arguments"}}] (a response body's calls have no index: their position is it).
std::vector<api::ToolCallDelta> tool_calls_of(const json::object &message) {
  std::vector<api::ToolCallDelta> out;
  const json::value *tc = message.if_contains("tool_calls");
  if (!tc || !tc->is_array())
    return out;
  int pos = 0;
  for (const json::value &c : tc->as_array()) {
    if (!c.is_object() || out.size() >= api::kMaxTools)
      continue;
    const json::object &co = c.as_object();
    api::ToolCallDelta d;
    d.index = pos++;
    if (const json::value *i = co.if_contains("index");
        i && i->is_int64() && i->as_int64() >= 0 && i->as_int64() < int64_t{api::kMaxTools})
      d.index = static_cast<int>(i->as_int64());
    d.id = text_of(co.if_contains("id"));
    if (const json::value *fn = co.if_contains("function"); fn && fn->is_object()) {
      d.name = text_of(fn->as_object().if_contains("name"));
      d.arguments = text_of(fn->as_object().if_contains("arguments"));
    }
    out.push_back(std::move(d));
  }
  return out;
}

} // namespace

namespace detail {

Result<StreamStep> decode_chunk_dom(std::string_view data) {
  // A chunk's values live in a stack buffer (the heap only past it), and the DOM is dropped
  // before the next one.
  alignas(16) unsigned char scratch[4096];
  json::monotonic_resource mr(scratch, sizeof scratch);
  json::error_code ec;
  json::value v = json::parse(data, ec, &mr, lenient());
  if (ec || !v.is_object())
    return Err(Error{ErrorCode::kUnavailable, "upstream sent an invalid stream chunk", {}});
  const json::object &o = v.as_object();
  if (auto e = embedded_error(o))
    return Err(std::move(*e));
  StreamStep step;
  if (const json::value *cs = o.if_contains("choices"); cs && cs->is_array()) {
    int pos = 0;
    for (const json::value &c : cs->as_array()) {
      if (!c.is_object())
        continue;
      const json::object &co = c.as_object();
      UpstreamChoice d;
      d.index = index_of(co, pos++);
      if (const json::value *delta = co.if_contains("delta"); delta && delta->is_object()) {
        d.text = text_of(delta->as_object().if_contains("content"));
        d.tool_calls = tool_calls_of(delta->as_object());
      } else {
        d.text = text_of(co.if_contains("text")); // completions
      }
      d.finish_reason = text_of(co.if_contains("finish_reason"));
      d.logprobs = logprobs_of(co.if_contains("logprobs"));
      if (!d.text.empty() || !d.finish_reason.empty() || !d.tool_calls.empty() ||
          !d.logprobs.empty())
        step.deltas.push_back(std::move(d));
    }
  }
  step.usage = usage_of(o);
  return step;
}

} // namespace detail

namespace {

class OpenAIStreamDecoder final : public StreamDecoder {
public:
  Result<StreamStep> on_event(const SseEvent &event) override {
    if (event.data == "[DONE]") {
      StreamStep step;
      step.done = true;
      return step;
    }
    // Every streamed token passes here: the common chunk without a document, anything else
    // (tool calls, logprobs, errors, odd shapes) through the DOM.
    if (auto step = detail::decode_common_chunk(event.data))
      return std::move(*step);
    return detail::decode_chunk_dom(event.data);
  }
};

// A message as the client sent it, tool fields included.
json::object message_json(const api::ChatMessage &m, const json::storage_ptr &sp) {
  json::object o({{"role", m.role}, {"content", m.content}}, sp);
  if (!m.tool_calls.empty()) {
    json::array calls(sp);
    for (const auto &c : m.tool_calls) {
      calls.push_back({{"id", c.id},
                       {"type", "function"},
                       {"function", {{"name", c.name}, {"arguments", c.arguments}}}});
    }
    o["tool_calls"] = std::move(calls);
    if (m.content.empty())
      o["content"] = nullptr;
  }
  if (m.role == "tool") {
    o["tool_call_id"] = m.tool_call_id;
    if (!m.name.empty())
      o["name"] = m.name;
  }
  return o;
}

// tools, tool_choice and parallel_tool_calls, unchanged (only with tools: OpenAI refuses
// parallel_tool_calls without them).
void add_tools(const api::InferenceRequest &r, json::object &b) {
  if (r.tools.empty())
    return;
  json::array tools;
  for (const auto &t : r.tools) {
    json::object fn{{"name", t.name}};
    if (!t.description.empty())
      fn["description"] = t.description;
    if (!t.parameters.empty()) {
      json::error_code ec;
      json::value params = json::parse(t.parameters, ec);
      if (!ec)
        fn["parameters"] = std::move(params);
    }
    if (t.strict)
      fn["strict"] = true;
    tools.push_back({{"type", "function"}, {"function", std::move(fn)}});
  }
  b["tools"] = std::move(tools);
  switch (r.tool_choice.mode) {
  case api::ToolChoice::Mode::kAuto: b["tool_choice"] = "auto"; break;
  case api::ToolChoice::Mode::kNone: b["tool_choice"] = "none"; break;
  case api::ToolChoice::Mode::kRequired: b["tool_choice"] = "required"; break;
  case api::ToolChoice::Mode::kFunction:
    b["tool_choice"] = {{"type", "function"}, {"function", {{"name", r.tool_choice.function}}}};
    break;
  }
  if (!r.parallel_tool_calls)
    b["parallel_tool_calls"] = false;
}

// request_body's only refusal.
Status check_grammar(const api::InferenceRequest &r, BackendKind kind) {
  if (!r.grammar.empty() && kind != BackendKind::kOpenAICompatible) {
    return Err(Error::invalid("'grammar' is a llama.cpp/vLLM extension that this model's "
                              "backend (OpenAI) does not accept",
                              "grammar"));
  }
  return Ok();
}

} // namespace

namespace detail {

Result<std::string> openai_body_dom(const api::InferenceRequest &r, std::string_view model,
                                    bool stream, int default_max_tokens, BackendKind kind) {
  // Every node of the body comes from a stack buffer (the heap only past it) and the body is
  // serialized before it goes: built on the default resource it took about 50 allocations and
  // as many frees per request, most of the body's cost.
  alignas(16) unsigned char scratch[8192];
  json::monotonic_resource mr(scratch, sizeof scratch);
  const json::storage_ptr sp(&mr);
  json::object b(sp);
  b.reserve(24);
  b["model"] = model;
  if (r.endpoint == api::Endpoint::kChatCompletions) {
    json::array msgs(sp);
    msgs.reserve(r.messages.size());
    for (const auto &m : r.messages)
      msgs.push_back(message_json(m, sp));
    b["messages"] = std::move(msgs);
    add_tools(r, b);
  } else {
    auto one = [](const api::Prompt &p) -> json::value {
      if (!p.ids)
        return json::string(p.text);
      json::array ids;
      for (int32_t id : *p.ids)
        ids.push_back(id);
      return ids;
    };
    if (r.prompts.size() == 1) {
      b["prompt"] = one(r.prompts[0]);
    } else {
      json::array all;
      for (const auto &p : r.prompts)
        all.push_back(one(p));
      b["prompt"] = std::move(all);
    }
  }
  // The server's default bounds an open-ended request here as it does for local models, so
  // the admission's reservation and the upstream's work agree.
  b["max_tokens"] = r.max_tokens ? *r.max_tokens : default_max_tokens;
  const auto &s = r.sampling;
  b["temperature"] = s.temperature;
  b["top_p"] = s.top_p;
  if (s.frequency_penalty != 0)
    b["frequency_penalty"] = s.frequency_penalty;
  if (s.presence_penalty != 0)
    b["presence_penalty"] = s.presence_penalty;
  if (s.seed)
    b["seed"] = *s.seed;
  if (kind == BackendKind::kOpenAICompatible) { // extensions vLLM, SGLang, llama.cpp accept
    if (s.top_k > 0)
      b["top_k"] = s.top_k;
    if (s.min_p > 0)
      b["min_p"] = s.min_p;
    if (s.repetition_penalty != 1.0f)
      b["repetition_penalty"] = s.repetition_penalty;
    if (r.ignore_eos)
      b["ignore_eos"] = true;
  }
  if (!r.stop.empty()) {
    json::array stop;
    for (const auto &x : r.stop)
      stop.push_back(json::string(x));
    b["stop"] = std::move(stop);
  }
  if (r.n != 1)
    b["n"] = r.n;
  if (r.logprobs) {
    if (r.endpoint == api::Endpoint::kChatCompletions) {
      b["logprobs"] = true;
      b["top_logprobs"] = r.top_logprobs;
    } else {
      b["logprobs"] = r.top_logprobs;
    }
  }
  if (!r.logit_bias.empty()) {
    json::object bias;
    for (const auto &[t, v] : r.logit_bias)
      bias[std::to_string(t)] = v;
    b["logit_bias"] = std::move(bias);
  }
  if (r.echo)
    b["echo"] = true;
  if (!r.user.empty())
    b["user"] = r.user;
  // Structured outputs are the upstream's to enforce: sent as the client wrote them.
  switch (r.response_format.type) {
  case api::ResponseFormat::Type::kText: break;
  case api::ResponseFormat::Type::kJsonObject:
    b["response_format"] = json::object{{"type", "json_object"}};
    break;
  case api::ResponseFormat::Type::kJsonSchema: {
    json::object js{{"name", r.response_format.name.empty() ? "output" : r.response_format.name},
                    {"schema", json::parse(r.response_format.schema)},
                    {"strict", r.response_format.strict}};
    b["response_format"] = json::object{{"type", "json_schema"}, {"json_schema", std::move(js)}};
    break;
  }
  }
  if (!r.grammar.empty()) {
    GANTRY_TRY(check_grammar(r, kind));
    b["grammar"] = r.grammar;        // llama.cpp server
    b["guided_grammar"] = r.grammar; // vLLM
  }
  if (stream) {
    b["stream"] = true;
    // Always asked for, so every call is billed on the upstream's real usage; the client sees
    // a usage chunk only when it asked for one (Gantry renders its own).
    b["stream_options"] = json::object{{"include_usage", true}};
  }
  return json::serialize(b);
}

std::optional<std::string> openai_body_plain(const api::InferenceRequest &r, std::string_view model,
                                             bool stream, int default_max_tokens,
                                             BackendKind kind) {
  // What only the DOM body writes: tools and tool history, logprobs, logit_bias, structured
  // outputs, grammars, token-id prompts.
  if (!r.tools.empty() || r.logprobs || !r.logit_bias.empty() || !r.grammar.empty() ||
      r.response_format.type != api::ResponseFormat::Type::kText)
    return std::nullopt;
  const bool chat = r.endpoint == api::Endpoint::kChatCompletions;
  std::size_t size = 256 + model.size() + r.user.size();
  if (chat) {
    for (const auto &m : r.messages) {
      if (!m.tool_calls.empty() || m.role == "tool")
        return std::nullopt;
      size += 32 + m.role.size() + m.content.size() * 2;
    }
  } else {
    if (r.prompts.empty())
      return std::nullopt;
    for (const auto &p : r.prompts) {
      if (p.ids)
        return std::nullopt;
      size += 8 + p.text.size() * 2;
    }
  }
  for (const auto &x : r.stop)
    size += 8 + x.size() * 2;
  std::string o;
  o.reserve(size);
  // Fields in the DOM body's order: its object keeps insertion order.
  auto key = [&o](std::string_view name) {
    o += ",\"";
    o += name;
    o += "\":";
  };
  auto number = [&](std::string_view name, float v) {
    key(name);
    append_float(o, v);
  };
  auto integer = [&](std::string_view name, int64_t v) {
    key(name);
    append_json_int(o, v);
  };
  o += "{\"model\":";
  append_json_string(o, model);
  if (chat) {
    key("messages");
    o += '[';
    for (std::size_t i = 0; i < r.messages.size(); ++i) {
      o += i ? ",{\"role\":" : "{\"role\":";
      append_json_string(o, r.messages[i].role);
      o += ",\"content\":";
      append_json_string(o, r.messages[i].content);
      o += '}';
    }
    o += ']';
  } else {
    key("prompt");
    if (r.prompts.size() == 1) {
      append_json_string(o, r.prompts[0].text);
    } else {
      o += '[';
      for (std::size_t i = 0; i < r.prompts.size(); ++i) {
        if (i)
          o += ',';
        append_json_string(o, r.prompts[i].text);
      }
      o += ']';
    }
  }
  integer("max_tokens", r.max_tokens ? *r.max_tokens : default_max_tokens);
  const auto &s = r.sampling;
  number("temperature", s.temperature);
  number("top_p", s.top_p);
  if (s.frequency_penalty != 0)
    number("frequency_penalty", s.frequency_penalty);
  if (s.presence_penalty != 0)
    number("presence_penalty", s.presence_penalty);
  if (s.seed) { // unsigned: up to 2^64 - 1
    key("seed");
    char buf[24];
    o.append(buf, std::to_chars(buf, buf + sizeof buf, *s.seed).ptr);
  }
  if (kind == BackendKind::kOpenAICompatible) {
    if (s.top_k > 0)
      integer("top_k", s.top_k);
    if (s.min_p > 0)
      number("min_p", s.min_p);
    if (s.repetition_penalty != 1.0f)
      number("repetition_penalty", s.repetition_penalty);
    if (r.ignore_eos)
      o += ",\"ignore_eos\":true";
  }
  if (!r.stop.empty()) {
    key("stop");
    o += '[';
    for (std::size_t i = 0; i < r.stop.size(); ++i) {
      if (i)
        o += ',';
      append_json_string(o, r.stop[i]);
    }
    o += ']';
  }
  if (r.n != 1)
    integer("n", r.n);
  if (r.echo)
    o += ",\"echo\":true";
  if (!r.user.empty()) {
    key("user");
    append_json_string(o, r.user);
  }
  if (stream)
    o += ",\"stream\":true,\"stream_options\":{\"include_usage\":true}";
  o += '}';
  return o;
}

} // namespace detail

namespace {

class OpenAICodec final : public WireCodec {
public:
  explicit OpenAICodec(BackendKind kind) : kind_(kind) {}
  BackendKind kind() const override { return kind_; }

  Result<std::string> path(api::Endpoint endpoint) const override {
    return std::string(endpoint == api::Endpoint::kChatCompletions ? "/chat/completions"
                                                                   : "/completions");
  }

  Result<std::string> request_body(const api::InferenceRequest &r, std::string_view model,
                                   bool stream, int default_max_tokens) const override {
    if (auto plain = detail::openai_body_plain(r, model, stream, default_max_tokens, kind_))
      return std::move(*plain);
    return detail::openai_body_dom(r, model, stream, default_max_tokens, kind_);
  }

  // request_body's only refusal, checked before admission without building a body.
  Status check_request(const api::InferenceRequest &r) const override {
    return check_grammar(r, kind_);
  }

  std::vector<WireHeader> auth_headers(const std::string &api_key) const override {
    if (api_key.empty())
      return {};
    return {{"Authorization", "Bearer " + api_key}};
  }

  Result<UpstreamResult> parse_response(std::string_view body) const override {
    // The document is read out into UpstreamResult and dropped: its nodes come from a stack
    // buffer (the heap only past it), not one allocation each.
    alignas(16) unsigned char scratch[8192];
    json::monotonic_resource mr(scratch, sizeof scratch);
    json::error_code ec;
    json::value v = json::parse(body, ec, &mr, lenient());
    if (ec || !v.is_object())
      return Err(Error{ErrorCode::kUnavailable, "upstream sent an invalid JSON response", {}});
    const json::object &o = v.as_object();
    if (auto e = embedded_error(o))
      return Err(std::move(*e));
    const json::value *cs = o.if_contains("choices");
    if (!cs || !cs->is_array())
      return Err(Error{ErrorCode::kUnavailable, "upstream response has no choices", {}});
    UpstreamResult out;
    int pos = 0;
    for (const json::value &c : cs->as_array()) {
      if (!c.is_object() || out.choices.size() >= static_cast<std::size_t>(api::kMaxTotalChoices))
        continue;
      const json::object &co = c.as_object();
      UpstreamChoice ch;
      ch.index = index_of(co, pos++);
      if (const json::value *m = co.if_contains("message"); m && m->is_object()) {
        ch.text = text_of(m->as_object().if_contains("content"));
        ch.tool_calls = tool_calls_of(m->as_object());
      } else
        ch.text = text_of(co.if_contains("text"));
      ch.finish_reason = text_of(co.if_contains("finish_reason"));
      if (ch.finish_reason.empty())
        ch.finish_reason = "stop";
      ch.logprobs = logprobs_of(co.if_contains("logprobs"));
      out.choices.push_back(std::move(ch));
    }
    out.usage = usage_of(o);
    return out;
  }

  std::unique_ptr<StreamDecoder> stream_decoder() const override {
    return std::make_unique<OpenAIStreamDecoder>();
  }

  Error error_from(int status, std::string_view body) const override {
    std::string message, code, type, param;
    json::error_code ec;
    json::value v = json::parse(body.substr(0, 64 * 1024), ec, {}, lenient());
    if (!ec && v.is_object()) {
      const json::value *e = v.as_object().if_contains("error");
      if (e && e->is_object()) {
        const json::object &eo = e->as_object();
        message = text_of(eo.if_contains("message"));
        code = text_of(eo.if_contains("code"));
        type = text_of(eo.if_contains("type"));
        param = text_of(eo.if_contains("param"));
      } else if (e && e->is_string()) {
        message = text_of(e); // llama.cpp server's older shape
      } else {
        message = text_of(v.as_object().if_contains("message")); // TGI, FastAPI "detail"
        if (message.empty())
          message = text_of(v.as_object().if_contains("detail"));
      }
    }
    return normalise_openai_error(status, message, code, type, param);
  }

  static Error normalise_openai_error(int status, const std::string &message,
                                      const std::string &code, const std::string &type,
                                      const std::string &param) {
    const std::string shown =
        "upstream: " +
        (message.empty() ? "HTTP " + std::to_string(status) : scrub_upstream_message(message, {}));
    auto mk = [&](ErrorCode c) { return Error{c, shown, echoed(param)}; };
    if (code == "context_length_exceeded" ||
        message.find("maximum context length") != std::string::npos ||
        message.find("context length") != std::string::npos)
      return mk(ErrorCode::kContextLengthExceeded);
    switch (status) {
    case 400:
    case 422: return mk(ErrorCode::kInvalidArgument);
    case 413: return mk(ErrorCode::kPayloadTooLarge);
    case 429:
      return type == "insufficient_quota" || code == "insufficient_quota"
                 ? Error{ErrorCode::kUnavailable, shown, {}}
                 : mk(ErrorCode::kRateLimited);
    default: break;
    }
    // 401/403/404 mean Gantry's configuration of the backend is wrong (key, model): the client
    // did nothing wrong, so it sees a server error, never the upstream's auth failure.
    return Error{ErrorCode::kUnavailable, shown, {}};
  }

  BackendKind kind_;
};

} // namespace

std::unique_ptr<WireCodec> make_openai_codec(BackendKind kind) {
  return std::make_unique<OpenAICodec>(kind);
}

} // namespace gantry::backend::remote
