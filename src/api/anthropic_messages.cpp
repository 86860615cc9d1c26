#include "api/anthropic_messages.h"

#include <boost/json.hpp>

#include "api/json_body.h"
#include "api/json_fields.h"
#include "core/utf8.h"

namespace gantry::api {
namespace json = boost::json;
using fields::bad;

namespace {

constexpr size_t kMaxTools = 128;
// Each stop string is matched at every step; Anthropic sets no documented cap, OpenAI's is 4.
constexpr size_t kMaxStopSequences = 16;

std::string at(const std::string &base, size_t i) { return base + "." + std::to_string(i); }

Result<std::string> required_string(const json::object &o, const char *key, const std::string &p) {
  const json::value *v = o.if_contains(key);
  const std::string f = p.empty() ? std::string(key) : p + "." + key;
  if (!v)
    return bad(f + ": Field required", f);
  return fields::string(*v, f);
}

Result<std::string> block_type(const json::object &b, const std::string &p) {
  return required_string(b, "type", p);
}

// Text blocks only (system prompts, tool results): joined.
Result<std::string> text_blocks(const json::value &v, const std::string &p) {
  if (v.is_string())
    return std::string(v.as_string());
  GANTRY_ASSIGN_OR_RETURN(const json::array *a, fields::array(v, p));
  std::string out;
  for (size_t i = 0; i < a->size(); ++i) {
    const std::string bp = at(p, i);
    GANTRY_ASSIGN_OR_RETURN(const json::object *b, fields::object((*a)[i], bp));
    GANTRY_ASSIGN_OR_RETURN(std::string type, block_type(*b, bp));
    if (type != "text")
      return bad(bp + ".type: content block type '" + echoed(type) +
                     "' is not supported here; only text blocks are",
                 bp + ".type");
    GANTRY_ASSIGN_OR_RETURN(std::string t, required_string(*b, "text", bp));
    out += t;
  }
  return out;
}

// One Messages turn appended to `msgs`: text joined into one message of its role; tool_use
// blocks become the assistant's tool_calls; each tool_result becomes a tool message.
Status parse_message(const json::value &v, const std::string &p, std::vector<ChatMessage> &msgs) {
  GANTRY_ASSIGN_OR_RETURN(const json::object *o, fields::object(v, p));
  GANTRY_ASSIGN_OR_RETURN(std::string role, required_string(*o, "role", p));
  if (role != "user" && role != "assistant")
    return bad(p + ".role: must be 'user' or 'assistant'", p + ".role");
  const json::value *content = o->if_contains("content");
  if (!content)
    return bad(p + ".content: Field required", p + ".content");
  if (content->is_string()) {
    msgs.emplace_back(role, std::string(content->as_string()));
    return Ok();
  }
  GANTRY_ASSIGN_OR_RETURN(const json::array *blocks, fields::array(*content, p + ".content"));
  std::optional<ChatMessage> cur; // the turn's text (and an assistant's tool calls)
  auto flush = [&] {
    if (cur)
      msgs.push_back(std::move(*cur));
    cur.reset();
  };
  for (size_t i = 0; i < blocks->size(); ++i) {
    const std::string bp = at(p + ".content", i);
    GANTRY_ASSIGN_OR_RETURN(const json::object *b, fields::object((*blocks)[i], bp));
    GANTRY_ASSIGN_OR_RETURN(std::string type, block_type(*b, bp));
    if (type == "text") {
      GANTRY_ASSIGN_OR_RETURN(std::string t, required_string(*b, "text", bp));
      if (!cur)
        cur = ChatMessage(role, "");
      cur->content += t;
    } else if (type == "tool_use" && role == "assistant") {
      ToolCall call;
      GANTRY_ASSIGN_OR_RETURN(call.id, required_string(*b, "id", bp));
      GANTRY_ASSIGN_OR_RETURN(call.name, required_string(*b, "name", bp));
      const json::value *input = b->if_contains("input");
      if (!input || !input->is_object())
        return bad(bp + ".input: must be an object", bp + ".input");
      call.arguments = json::serialize(*input);
      if (!cur)
        cur = ChatMessage(role, "");
      cur->tool_calls.push_back(std::move(call));
    } else if (type == "tool_result" && role == "user") {
      flush();
      ChatMessage m("tool", "");
      GANTRY_ASSIGN_OR_RETURN(m.tool_call_id, required_string(*b, "tool_use_id", bp));
      if (const json::value *c = b->if_contains("content"); c && !c->is_null()) {
        GANTRY_ASSIGN_OR_RETURN(m.content, text_blocks(*c, bp + ".content"));
      }
      if (const json::value *e = b->if_contains("is_error"); e && !e->is_null()) {
        GANTRY_ASSIGN_OR_RETURN(bool is_error, fields::boolean(*e, bp + ".is_error"));
        if (is_error) // the model sees that the call failed, as Anthropic's own prompt shows it
          m.content = "Error: " + m.content;
      }
      for (auto it = msgs.rbegin(); it != msgs.rend() && m.name.empty(); ++it)
        for (const auto &c : it->tool_calls)
          if (c.id == m.tool_call_id)
            m.name = c.name;
      msgs.push_back(std::move(m));
    } else if ((type == "thinking" || type == "redacted_thinking") && role == "assistant") {
      // Earlier turns' reasoning: these models have none to continue; dropped.
    } else {
      return bad(bp + ".type: content block type '" + echoed(type) + "' is not supported in a " +
                     role +
                     " message (text, tool_use in assistant turns, tool_result in user "
                     "turns)",
                 bp + ".type");
    }
  }
  if (!cur && blocks->empty())
    cur = ChatMessage(role, "");
  flush();
  return Ok();
}

bool valid_tool_name(std::string_view n) {
  if (n.empty() || n.size() > 128)
    return false;
  for (char c : n)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-'))
      return false;
  return true;
}

Status parse_tools(const json::value &v, InferenceRequest &r) {
  GANTRY_ASSIGN_OR_RETURN(const json::array *a, fields::array(v, "tools"));
  if (a->size() > kMaxTools)
    return bad("tools: at most " + std::to_string(kMaxTools) + " tools", "tools");
  for (size_t i = 0; i < a->size(); ++i) {
    const std::string p = at("tools", i);
    GANTRY_ASSIGN_OR_RETURN(const json::object *o, fields::object((*a)[i], p));
    FunctionTool t;
    for (const auto &[k, fv] : *o) {
      const std::string f = p + "." + std::string(k);
      if (k == "name") {
        GANTRY_ASSIGN_OR_RETURN(t.name, fields::string(fv, f));
        if (!valid_tool_name(t.name))
          return bad(f + ": must be 1 to 128 characters of a-z, A-Z, 0-9, _ and -", f);
      } else if (k == "description") {
        GANTRY_ASSIGN_OR_RETURN(t.description, fields::string(fv, f));
      } else if (k == "input_schema") {
        GANTRY_ASSIGN_OR_RETURN(t.parameters, fields::tool_schema_text(fv, f));
      } else if (k == "type") {
        if (!fv.is_null() && !(fv.is_string() && fv.as_string() == "custom"))
          return bad(f + ": only client tools (type 'custom') are supported", f);
      } else if (k == "strict") {
        GANTRY_ASSIGN_OR_RETURN(t.strict, fields::boolean(fv, f));
      } else if (k != "cache_control") {
        return bad(f + ": Extra inputs are not permitted", echoed(f));
      }
    }
    if (t.name.empty())
      return bad(p + ".name: Field required", p + ".name");
    if (t.parameters.empty())
      return bad(p + ".input_schema: Field required", p + ".input_schema");
    r.tools.push_back(std::move(t));
  }
  return Ok();
}

Status parse_tool_choice(const json::value &v, InferenceRequest &r) {
  GANTRY_ASSIGN_OR_RETURN(const json::object *o, fields::object(v, "tool_choice"));
  GANTRY_ASSIGN_OR_RETURN(std::string type, required_string(*o, "type", "tool_choice"));
  ToolChoice &tc = r.tool_choice;
  if (type == "auto") {
    tc.mode = ToolChoice::Mode::kAuto;
  } else if (type == "any") {
    tc.mode = ToolChoice::Mode::kRequired;
  } else if (type == "none") {
    tc.mode = ToolChoice::Mode::kNone;
  } else if (type == "tool") {
    tc.mode = ToolChoice::Mode::kFunction;
    GANTRY_ASSIGN_OR_RETURN(tc.function, required_string(*o, "name", "tool_choice"));
  } else {
    return bad("tool_choice.type: must be auto, any, tool or none", "tool_choice.type");
  }
  if (const json::value *d = o->if_contains("disable_parallel_tool_use"); d && !d->is_null()) {
    GANTRY_ASSIGN_OR_RETURN(bool off, fields::boolean(*d, "tool_choice.disable_parallel_tool_use"));
    r.parallel_tool_calls = !off;
  }
  return Ok();
}

Status parse_stop_sequences(const json::value &v, InferenceRequest &r) {
  GANTRY_ASSIGN_OR_RETURN(const json::array *a, fields::array(v, "stop_sequences"));
  if (a->size() > kMaxStopSequences)
    return bad("stop_sequences: at most " + std::to_string(kMaxStopSequences) + " sequences",
               "stop_sequences");
  for (size_t i = 0; i < a->size(); ++i) {
    GANTRY_ASSIGN_OR_RETURN(std::string s, fields::string((*a)[i], at("stop_sequences", i)));
    if (!s.empty())
      r.stop.push_back(std::move(s));
  }
  return Ok();
}

Result<InferenceRequest> parse(std::string_view body, bool count_only) {
  GANTRY_ASSIGN_OR_RETURN(json::object o, parse_object_body(body));
  InferenceRequest r;
  r.endpoint = Endpoint::kChatCompletions;
  bool have_model = false, have_messages = false, have_max = false;
  std::string system;
  std::vector<ChatMessage> turns;
  for (const auto &[key_sv, v] : o) {
    const std::string key(key_sv);
    if (v.is_null() && key != "model" && key != "messages" && key != "max_tokens")
      continue;
    if (key == "model") {
      GANTRY_ASSIGN_OR_RETURN(r.model, fields::string(v, key));
      have_model = true;
    } else if (key == "messages") {
      GANTRY_ASSIGN_OR_RETURN(const json::array *a, fields::array(v, key));
      for (size_t i = 0; i < a->size(); ++i)
        GANTRY_TRY(parse_message((*a)[i], at("messages", i), turns));
      have_messages = true;
    } else if (key == "system") {
      GANTRY_ASSIGN_OR_RETURN(system, text_blocks(v, key));
    } else if (key == "tools") {
      GANTRY_TRY(parse_tools(v, r));
    } else if (key == "tool_choice") {
      GANTRY_TRY(parse_tool_choice(v, r));
    } else if (key == "thinking") {
      GANTRY_ASSIGN_OR_RETURN(const json::object *t, fields::object(v, key));
      const json::value *type = t->if_contains("type");
      if (!type || !type->is_string() || type->as_string() != "disabled")
        return bad("thinking: extended thinking is not supported by this model; omit it or set "
                   "{\"type\": \"disabled\"}",
                   "thinking");
    } else if (!count_only && key == "max_tokens") {
      GANTRY_ASSIGN_OR_RETURN(int64_t n, fields::integer(v, key));
      if (n < 1)
        return bad("max_tokens: must be at least 1", key);
      r.max_tokens = static_cast<int>(std::min<int64_t>(n, INT32_MAX));
      have_max = true;
    } else if (!count_only && key == "stop_sequences") {
      GANTRY_TRY(parse_stop_sequences(v, r));
    } else if (!count_only && key == "temperature") {
      GANTRY_ASSIGN_OR_RETURN(r.sampling.temperature, fields::ranged(v, key, 0, 1));
    } else if (!count_only && key == "top_p") {
      GANTRY_ASSIGN_OR_RETURN(r.sampling.top_p, fields::ranged(v, key, 0, 1));
      if (r.sampling.top_p <= 0)
        return bad("top_p: must be greater than 0", key);
    } else if (!count_only && key == "top_k") {
      GANTRY_ASSIGN_OR_RETURN(int64_t k, fields::integer(v, key));
      if (k < 0)
        return bad("top_k: must be at least 0", key);
      r.sampling.top_k = static_cast<int>(std::min<int64_t>(k, INT32_MAX));
    } else if (!count_only && key == "stream") {
      GANTRY_ASSIGN_OR_RETURN(r.stream, fields::boolean(v, key));
    } else if (!count_only && key == "metadata") {
      GANTRY_ASSIGN_OR_RETURN(const json::object *m, fields::object(v, key));
      for (const auto &[mk, mv] : *m) {
        if (mk != "user_id")
          return bad("metadata." + echoed(mk) + ": Extra inputs are not permitted",
                     "metadata." + echoed(mk));
        if (!mv.is_null()) {
          GANTRY_ASSIGN_OR_RETURN(r.user, fields::string(mv, "metadata.user_id"));
        }
      }
    } else if (!count_only && key == "service_tier") {
      // accepted for compatibility; one tier here
    } else {
      return bad(echoed(key) + ": Extra inputs are not permitted", echoed(key));
    }
  }
  if (!have_model)
    return bad("model: Field required", "model");
  if (!have_messages)
    return bad("messages: Field required", "messages");
  if (turns.empty())
    return bad("messages: at least one message is required", "messages");
  if (!count_only && !have_max)
    return bad("max_tokens: Field required", "max_tokens");
  if (!system.empty())
    r.messages.emplace_back("system", std::move(system));
  for (auto &m : turns)
    r.messages.push_back(std::move(m));
  if (r.tool_choice.mode == ToolChoice::Mode::kFunction) {
    bool found = false;
    for (const auto &t : r.tools)
      found = found || t.name == r.tool_choice.function;
    if (!found)
      return bad("tool_choice.name: '" + echoed(r.tool_choice.function) +
                     "' is not among the request's tools",
                 "tool_choice.name");
  }
  GANTRY_TRY(r.sampling.validate());
  return r;
}

// A tool call's arguments as the `input` object Anthropic's clients expect; text the model
// wrote that is not a JSON object becomes {} rather than a body clients cannot parse.
json::value input_of(const std::string &arguments) {
  json::error_code ec;
  json::value v = json::parse(arguments, ec);
  if (ec || !v.is_object())
    return json::object();
  return v;
}

std::string tool_id(const MessagesMeta &meta, const std::string &id, size_t i) {
  if (!id.empty())
    return id;
  std::string_view base = meta.id;
  if (base.starts_with("msg_"))
    base.remove_prefix(4);
  return "toolu_" + std::string(base) + "_" + std::to_string(i);
}

json::object usage_json(const Usage &u) {
  // Anthropic counts cache reads apart from input_tokens (the outbound codec adds them back).
  return {{"input_tokens", u.prompt_tokens - u.cached_tokens},
          {"cache_creation_input_tokens", 0},
          {"cache_read_input_tokens", u.cached_tokens},
          {"output_tokens", u.completion_tokens}};
}

TypedEvent ev(std::string_view type, json::object body) {
  json::object o;
  o["type"] = type;
  for (auto &kv : body)
    o[kv.key()] = std::move(kv.value());
  return {std::string(type), json::serialize(o)};
}

} // namespace

std::string finish_reason_from_stop_reason(std::string_view stop_reason) {
  if (stop_reason == "max_tokens")
    return "length";
  if (stop_reason == "tool_use")
    return "tool_calls";
  if (stop_reason == "refusal")
    return "content_filter";
  return "stop";
}

std::string_view stop_reason_from_finish_reason(std::string_view finish_reason) {
  if (finish_reason == "length")
    return "max_tokens";
  if (finish_reason == "tool_calls")
    return "tool_use";
  if (finish_reason == "content_filter")
    return "refusal";
  return "end_turn";
}

namespace {
// Anthropic's messages lead with the field's path ("max_tokens: Field required"); the shared
// field readers say it OpenAI's way, so their messages get the path in front.
Result<InferenceRequest> with_path_first(Result<InferenceRequest> r) {
  if (!r && !r.error().param.empty() && !r.error().message.starts_with(r.error().param)) {
    Error e = r.take_error();
    e.message = e.param + ": " + e.message;
    return Err(std::move(e));
  }
  return r;
}
} // namespace

Result<InferenceRequest> parse_messages_request(std::string_view body) {
  return with_path_first(parse(body, false));
}

Result<InferenceRequest> parse_count_tokens_request(std::string_view body) {
  return with_path_first(parse(body, true));
}

std::string render_message(const MessagesMeta &meta, const MessagesResult &result) {
  json::array content;
  if (!result.text.empty() || result.tool_calls.empty())
    content.push_back(json::object{{"type", "text"}, {"text", result.text}});
  for (size_t i = 0; i < result.tool_calls.size(); ++i) {
    const ToolCall &c = result.tool_calls[i];
    content.push_back(json::object{{"type", "tool_use"},
                                   {"id", tool_id(meta, c.id, i)},
                                   {"name", c.name},
                                   {"input", input_of(c.arguments)}});
  }
  json::object o{{"id", meta.id},
                 {"type", "message"},
                 {"role", "assistant"},
                 {"model", meta.model},
                 {"content", std::move(content)},
                 {"stop_reason", stop_reason_from_finish_reason(result.finish_reason)},
                 {"stop_sequence", nullptr},
                 {"usage", usage_json(result.usage)}};
  return json::serialize(o);
}

std::string render_count_tokens(int64_t input_tokens) {
  return json::serialize(json::object{{"input_tokens", input_tokens}});
}

int anthropic_status(ErrorCode code) {
  switch (code) {
  case ErrorCode::kQueueFull:
  case ErrorCode::kResourceExhausted:
  case ErrorCode::kUnavailable:
  case ErrorCode::kCircuitOpen: return 529;
  default: return http_status(code);
  }
}

std::string_view anthropic_error_type(ErrorCode code) {
  switch (code) {
  case ErrorCode::kUnauthorized: return "authentication_error";
  case ErrorCode::kPermissionDenied: return "permission_error";
  case ErrorCode::kNotFound: return "not_found_error";
  case ErrorCode::kPayloadTooLarge: return "request_too_large";
  case ErrorCode::kRateLimited:
  case ErrorCode::kQuotaExceeded: return "rate_limit_error";
  case ErrorCode::kQueueFull:
  case ErrorCode::kResourceExhausted:
  case ErrorCode::kUnavailable:
  case ErrorCode::kCircuitOpen: return "overloaded_error";
  case ErrorCode::kCancelled:
  case ErrorCode::kIo:
  case ErrorCode::kInternal: return "api_error";
  default: return "invalid_request_error";
  }
}

void to_anthropic_param(Error &e) {
  if (auto i = fields::chat_tool_schema_index(e.param)) {
    e.param = "tools." + std::to_string(*i) + ".input_schema";
    if (!e.message.starts_with(e.param))
      e.message = e.param + ": " + e.message;
  }
}

std::string render_anthropic_error(const Error &e) {
  return json::serialize(
      json::object{{"type", "error"},
                   {"error", {{"type", anthropic_error_type(e.code)}, {"message", e.message}}}});
}

TypedEvents MessagesStream::start(const Usage &prompt) {
  TypedEvents out;
  Usage u = prompt;
  u.completion_tokens = 0;
  json::object message{{"id", meta_.id},           {"type", "message"},
                       {"role", "assistant"},      {"model", meta_.model},
                       {"content", json::array()}, {"stop_reason", nullptr},
                       {"stop_sequence", nullptr}, {"usage", usage_json(u)}};
  out.push_back(ev("message_start", {{"message", std::move(message)}}));
  out.push_back(ev("ping", {}));
  return out;
}

void MessagesStream::close_open(TypedEvents &out) {
  if (!open_)
    return;
  out.push_back(ev("content_block_stop", {{"index", *open_}}));
  open_.reset();
}

TypedEvents MessagesStream::text(std::string_view delta) {
  TypedEvents out;
  if (delta.empty())
    return out;
  if (!open_ || !open_is_text_) {
    close_open(out);
    open_ = blocks_++;
    open_is_text_ = true;
    out.push_back(ev("content_block_start",
                     {{"index", *open_}, {"content_block", {{"type", "text"}, {"text", ""}}}}));
  }
  out.push_back(ev("content_block_delta",
                   {{"index", *open_}, {"delta", {{"type", "text_delta"}, {"text", delta}}}}));
  return out;
}

TypedEvents MessagesStream::tool_call(const ToolCallDelta &d) {
  TypedEvents out;
  std::optional<int> block;
  for (const auto &[index, b] : tools_)
    if (index == d.index)
      block = b;
  if (!block) {
    close_open(out);
    block = blocks_++;
    const std::string id = tool_id(meta_, d.id, tools_.size());
    tools_.push_back({d.index, *block});
    open_ = block;
    open_is_text_ = false;
    out.push_back(
        ev("content_block_start",
           {{"index", *block},
            {"content_block",
             {{"type", "tool_use"}, {"id", id}, {"name", d.name}, {"input", json::object()}}}}));
  }
  if (!d.arguments.empty()) {
    out.push_back(ev("content_block_delta",
                     {{"index", *block},
                      {"delta", {{"type", "input_json_delta"}, {"partial_json", d.arguments}}}}));
  }
  return out;
}

TypedEvents MessagesStream::finish(std::string_view finish_reason, const Usage &usage) {
  TypedEvents out;
  if (blocks_ == 0) { // an empty answer still has its (empty) text block, as non-streamed
    out.push_back(ev("content_block_start",
                     {{"index", 0}, {"content_block", {{"type", "text"}, {"text", ""}}}}));
    open_ = blocks_++;
  }
  close_open(out);
  out.push_back(ev("message_delta",
                   {{"delta",
                     {{"stop_reason", stop_reason_from_finish_reason(finish_reason)},
                      {"stop_sequence", nullptr}}},
                    // The whole message's totals: clients overwrite the start's guesses with them.
                    {"usage", usage_json(usage)}}));
  out.push_back(ev("message_stop", {}));
  return out;
}

TypedEvents MessagesStream::fail(const Error &error) {
  TypedEvents out;
  out.push_back({"error", render_anthropic_error(error)});
  return out;
}

} // namespace gantry::api
