#include "api/openai.h"

#include <boost/json.hpp>

#include <algorithm>
#include <cctype>
#include <cmath>

#include "api/json_body.h"
#include "api/json_fields.h"
#include "api/json_schema_grammar.h"
#include "core/json_text.h"
#include "core/utf8.h"

namespace gantry::api {
namespace json = boost::json;
namespace {

// The typed field readers every inbound API shares (they name the field in their errors).
using fields::bad;
using fields::boolean;
using fields::integer;
using fields::ranged;
using fields::string;

// Message content: a string, or an array of {"type":"text","text":...} parts (joined).
Result<std::string> content(const json::value &v, const std::string &name) {
  if (v.is_null())
    return std::string();
  if (v.is_string())
    return std::string(v.as_string());
  if (!v.is_array())
    return bad("'" + name + "' must be a string or an array of parts", name);
  std::string out;
  for (size_t i = 0; i < v.as_array().size(); ++i) {
    const auto &part = v.as_array()[i];
    const std::string pname = name + "[" + std::to_string(i) + "]";
    if (!part.is_object())
      return bad("'" + pname + "' must be an object", pname);
    const auto *type = part.as_object().if_contains("type");
    if (!type || !type->is_string() || type->as_string() != "text") {
      return bad("only text content parts are supported ('" + pname + ".type' must be 'text')",
                 pname + ".type");
    }
    const auto *text = part.as_object().if_contains("text");
    if (!text || !text->is_string())
      return bad("'" + pname + ".text' must be a string", pname + ".text");
    out += text->as_string();
  }
  return out;
}

// Tool and function names as OpenAI accepts them: ^[a-zA-Z0-9_-]{1,64}$.
bool valid_tool_name(std::string_view n) {
  if (n.empty() || n.size() > 64)
    return false;
  for (char c : n) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '_' || c == '-';
    if (!ok)
      return false;
  }
  return true;
}

const json::value *member(const json::value &v, std::string_view key) {
  return v.is_object() ? v.as_object().if_contains(key) : nullptr;
}

// An assistant message's tool_calls: [{"id", "type": "function", "function": {"name",
// "arguments"}}].
Status parse_tool_calls(const json::value &v, const std::string &p, ChatMessage &msg) {
  if (!v.is_array())
    return bad("'" + p + "' must be an array", p);
  if (v.as_array().size() > kMaxTools)
    return bad("'" + p + "' has more than " + std::to_string(kMaxTools) + " calls", p);
  for (size_t i = 0; i < v.as_array().size(); ++i) {
    const json::value &c = v.as_array()[i];
    const std::string cp = p + "[" + std::to_string(i) + "]";
    if (!c.is_object())
      return bad("'" + cp + "' must be an object", cp);
    ToolCall call;
    const json::value *id = member(c, "id");
    if (!id || !id->is_string())
      return bad("'" + cp + ".id' must be a string", cp + ".id");
    call.id = std::string(id->as_string());
    if (const json::value *t = member(c, "type");
        t && !(t->is_string() && t->as_string() == "function"))
      return bad("'" + cp + ".type' must be 'function'", cp + ".type");
    const json::value *fn = member(c, "function");
    if (!fn || !fn->is_object())
      return bad("'" + cp + ".function' must be an object", cp + ".function");
    const json::value *name = member(*fn, "name");
    if (!name || !name->is_string() || name->as_string().empty())
      return bad("'" + cp + ".function.name' must be a non-empty string", cp + ".function.name");
    call.name = std::string(name->as_string());
    const json::value *args = member(*fn, "arguments");
    if (!args || !args->is_string())
      return bad("'" + cp + ".function.arguments' must be a string (JSON text)",
                 cp + ".function.arguments");
    call.arguments = std::string(args->as_string());
    msg.tool_calls.push_back(std::move(call));
  }
  return Ok();
}

Status parse_messages(const json::value &v, InferenceRequest &r) {
  if (!v.is_array())
    return bad("'messages' must be an array", "messages");
  if (v.as_array().empty())
    return bad("'messages' must contain at least one message", "messages");
  for (size_t i = 0; i < v.as_array().size(); ++i) {
    const auto &m = v.as_array()[i];
    const std::string p = "messages[" + std::to_string(i) + "]";
    if (!m.is_object())
      return bad("'" + p + "' must be an object", p);
    ChatMessage msg;
    const auto *role = m.as_object().if_contains("role");
    if (!role || !role->is_string())
      return bad("'" + p + ".role' must be a string", p + ".role");
    msg.role = std::string(role->as_string());
    if (msg.role != "system" && msg.role != "user" && msg.role != "assistant" &&
        msg.role != "tool" && msg.role != "developer") {
      return bad("'" + msg.role +
                     "' is not a valid role (system, developer, user, assistant, tool)",
                 p + ".role");
    }
    const auto *c = m.as_object().if_contains("content");
    if (!c && msg.role != "assistant") {
      return bad("'" + p + ".content' is required", p + ".content");
    }
    if (c) {
      GANTRY_ASSIGN_OR_RETURN(msg.content, content(*c, p + ".content"));
    }
    if (const auto *tc = m.as_object().if_contains("tool_calls"); tc && !tc->is_null()) {
      if (msg.role != "assistant")
        return bad("only assistant messages carry 'tool_calls'", p + ".tool_calls");
      GANTRY_TRY(parse_tool_calls(*tc, p + ".tool_calls", msg));
    }
    if (const auto *fc = m.as_object().if_contains("function_call"); fc && !fc->is_null()) {
      return bad("the deprecated 'function_call' is not supported; send 'tool_calls'",
                 p + ".function_call");
    }
    if (msg.role == "tool") {
      const auto *id = m.as_object().if_contains("tool_call_id");
      if (!id || !id->is_string())
        return bad("'" + p + ".tool_call_id' is required for role 'tool'", p + ".tool_call_id");
      msg.tool_call_id = std::string(id->as_string());
      if (const auto *n = m.as_object().if_contains("name"); n && n->is_string())
        msg.name = std::string(n->as_string());
    }
    r.messages.push_back(std::move(msg));
  }
  return Ok();
}

Result<std::vector<int32_t>> token_ids(const json::array &a, const std::string &name) {
  std::vector<int32_t> ids;
  ids.reserve(a.size());
  for (const auto &t : a) {
    if (!t.is_int64() && !t.is_uint64())
      return bad("'" + name + "' token ids must be integers", name);
    const int64_t id = t.is_int64() ? t.as_int64() : static_cast<int64_t>(t.as_uint64());
    if (id < 0 || id > INT32_MAX)
      return bad("'" + name + "' token id out of range", name);
    ids.push_back(static_cast<int32_t>(id));
  }
  return ids;
}

// A string, an array of token ids, an array of strings, or an array of token-id arrays; the
// arrays of several prompts give one set of choices per prompt.
Status parse_prompt(const json::value &v, InferenceRequest &r) {
  if (v.is_string()) {
    r.prompts.push_back({std::string(v.as_string()), std::nullopt});
    return Ok();
  }
  if (!v.is_array()) {
    return bad("'prompt' must be a string, an array of strings, an array of token ids or an "
               "array of token-id arrays",
               "prompt");
  }
  const auto &a = v.as_array();
  if (a.empty())
    return bad("'prompt' must not be empty", "prompt");
  if (a[0].is_int64() || a[0].is_uint64()) {
    GANTRY_ASSIGN_OR_RETURN(auto ids, token_ids(a, "prompt"));
    r.prompts.push_back({{}, std::move(ids)});
    return Ok();
  }
  if (a.size() > static_cast<size_t>(kMaxPrompts)) {
    return bad("'prompt' holds at most " + std::to_string(kMaxPrompts) + " prompts, got " +
                   std::to_string(a.size()),
               "prompt");
  }
  const bool strings = a[0].is_string();
  for (size_t i = 0; i < a.size(); ++i) {
    const std::string name = "prompt[" + std::to_string(i) + "]";
    if (strings && a[i].is_string()) {
      r.prompts.push_back({std::string(a[i].as_string()), std::nullopt});
    } else if (!strings && a[i].is_array() && !a[i].as_array().empty()) {
      GANTRY_ASSIGN_OR_RETURN(auto ids, token_ids(a[i].as_array(), name));
      r.prompts.push_back({{}, std::move(ids)});
    } else {
      return bad("'prompt' must be an array of strings or an array of non-empty token-id arrays "
                 "(not a mix)",
                 name);
    }
  }
  return Ok();
}

// {"token id": bias}: ids as decimal strings, biases in [-100, 100].
Status parse_logit_bias(const json::value &v, InferenceRequest &r) {
  if (!v.is_object())
    return bad("'logit_bias' must be an object mapping token ids to numbers", "logit_bias");
  const auto &o = v.as_object();
  if (o.size() > static_cast<size_t>(kMaxLogitBias)) {
    return bad("'logit_bias' holds at most " + std::to_string(kMaxLogitBias) + " token ids",
               "logit_bias");
  }
  for (const auto &[k, b] : o) {
    int64_t id = -1;
    const bool digits = !k.empty() && k.size() <= 10 && std::all_of(k.begin(), k.end(), [](char c) {
      return c >= '0' && c <= '9';
    });
    if (digits)
      id = std::stoll(std::string(k));
    if (!digits || id > INT32_MAX) {
      return bad("'logit_bias' keys must be token ids (non-negative integers), got '" +
                     echoed(std::string_view(k)) + "'",
                 "logit_bias");
    }
    GANTRY_ASSIGN_OR_RETURN(float f, ranged(b, "logit_bias", -100, 100));
    r.logit_bias.emplace_back(static_cast<int32_t>(id), f);
  }
  return Ok();
}

Status parse_stop(const json::value &v, InferenceRequest &r) {
  if (v.is_null())
    return Ok();
  if (v.is_string()) {
    if (!v.as_string().empty())
      r.stop.emplace_back(v.as_string());
    return Ok();
  }
  if (!v.is_array())
    return bad("'stop' must be a string or an array of strings", "stop");
  if (v.as_array().size() > 4)
    return bad("'stop' accepts at most 4 sequences", "stop");
  for (const auto &s : v.as_array()) {
    if (!s.is_string())
      return bad("'stop' must be a string or an array of strings", "stop");
    if (!s.as_string().empty())
      r.stop.emplace_back(s.as_string());
  }
  return Ok();
}

// A JSON Schema given as an object, or (vLLM's guided_json) as JSON text holding one.
Status schema_into(const json::value &v, const std::string &name, ResponseFormat &f) {
  if (v.is_string()) {
    std::error_code ec;
    const json::value parsed = json::parse(v.as_string(), ec);
    if (ec)
      return bad("'" + name + "' must be a JSON Schema object", name);
    return schema_into(parsed, name, f);
  }
  GANTRY_ASSIGN_OR_RETURN(f.schema, fields::schema_text(v, name));
  return Ok();
}

Status parse_response_format(const json::value &v, InferenceRequest &r) {
  const std::string p = "response_format";
  if (!v.is_object())
    return bad("'response_format' must be an object", p);
  const auto &o = v.as_object();
  const auto *t = o.if_contains("type");
  if (!t || !t->is_string())
    return bad("'response_format.type' must be a string", p + ".type");
  ResponseFormat f;
  const std::string_view type = t->as_string();
  if (type == "text") {
    f.type = ResponseFormat::Type::kText;
  } else if (type == "json_object") {
    f.type = ResponseFormat::Type::kJsonObject;
  } else if (type == "json_schema") {
    f.type = ResponseFormat::Type::kJsonSchema;
    const auto *js = o.if_contains("json_schema");
    if (!js || !js->is_object())
      return bad("'response_format.json_schema' must be an object", p + ".json_schema");
    for (const auto &[k, val] : js->as_object()) {
      const std::string field = p + ".json_schema." + std::string(k);
      if (k == "name") {
        GANTRY_ASSIGN_OR_RETURN(f.name, string(val, field));
        const bool ok = !f.name.empty() && f.name.size() <= 64 &&
                        std::all_of(f.name.begin(), f.name.end(), [](unsigned char c) {
                          return std::isalnum(c) || c == '_' || c == '-';
                        });
        if (!ok) {
          return bad("'" + field + "' must be 1 to 64 letters, digits, '_' or '-'", field);
        }
      } else if (k == "schema") {
        GANTRY_TRY(schema_into(val, field, f));
      } else if (k == "strict") {
        if (!val.is_null()) {
          GANTRY_ASSIGN_OR_RETURN(f.strict, boolean(val, field));
        }
      } else if (k != "description") {
        return bad("Unrecognized response_format.json_schema field: " + echoed(std::string(k)),
                   p + ".json_schema");
      }
    }
    if (f.name.empty())
      return bad("'response_format.json_schema.name' is required", p + ".json_schema.name");
    if (f.schema.empty()) {
      return bad("'response_format.json_schema.schema' is required", p + ".json_schema.schema");
    }
  } else {
    return bad("response_format type '" + echoed(std::string(type)) +
                   "' is not one of text, json_object, json_schema",
               p + ".type");
  }
  r.response_format = std::move(f);
  return Ok();
}

// One entry of `tools`: {"type": "function", "function": {"name", "description", "parameters",
// "strict"}}.
Status parse_tool(const json::value &v, const std::string &p, InferenceRequest &r) {
  if (!v.is_object())
    return bad("'" + p + "' must be an object", p);
  const json::value *type = member(v, "type");
  if (!type || !type->is_string() || type->as_string() != "function")
    return bad("'" + p + ".type' must be 'function'", p + ".type");
  const json::value *fn = member(v, "function");
  if (!fn || !fn->is_object())
    return bad("'" + p + ".function' must be an object", p + ".function");
  for (const auto &[k, val] : v.as_object()) {
    if (k != "type" && k != "function")
      return bad("Unrecognized tool field: " + echoed(k), p + "." + echoed(k));
  }
  FunctionTool tool;
  const std::string fp = p + ".function";
  bool have_name = false;
  for (const auto &[k, val] : fn->as_object()) {
    if (k == "name") {
      if (!val.is_string() || !valid_tool_name(val.as_string())) {
        return bad("'" + fp + ".name' must be 1 to 64 letters, digits, '_' or '-'", fp + ".name");
      }
      tool.name = std::string(val.as_string());
      have_name = true;
    } else if (k == "description") {
      if (!val.is_null()) {
        GANTRY_ASSIGN_OR_RETURN(tool.description, string(val, fp + ".description"));
      }
    } else if (k == "parameters") {
      if (val.is_null())
        continue;
      if (!val.is_object())
        return bad("'" + fp + ".parameters' must be a JSON Schema object", fp + ".parameters");
      if (const json::value *t = val.as_object().if_contains("type");
          t && !t->is_string() && !t->is_array()) {
        return bad("'" + fp + ".parameters.type' must be a string or an array of strings",
                   fp + ".parameters");
      }
      tool.parameters = json::serialize(val);
      if (tool.parameters.size() > kMaxToolSchemaBytes) {
        return bad("'" + fp + ".parameters' is larger than " + std::to_string(kMaxToolSchemaBytes) +
                       " bytes",
                   fp + ".parameters");
      }
      // Malformed even where nothing enforces it (tool_choice auto): OpenAI rejects it too.
      if (auto st = check_json_schema(tool.parameters); !st)
        return bad(fp + ".parameters: " + st.error().message, fp + ".parameters");
    } else if (k == "strict") {
      if (!val.is_null()) {
        GANTRY_ASSIGN_OR_RETURN(tool.strict, boolean(val, fp + ".strict"));
      }
    } else {
      return bad("Unrecognized function field: " + echoed(k), fp + "." + echoed(k));
    }
  }
  if (!have_name)
    return bad("'" + fp + ".name' is required", fp + ".name");
  for (const auto &t : r.tools) {
    if (t.name == tool.name)
      return bad("two tools are named '" + tool.name + "'", fp + ".name");
  }
  r.tools.push_back(std::move(tool));
  return Ok();
}

Status parse_tools(const json::value &v, InferenceRequest &r) {
  if (!v.is_array())
    return bad("'tools' must be an array", "tools");
  if (v.as_array().size() > kMaxTools)
    return bad("'tools' accepts at most " + std::to_string(kMaxTools) + " tools", "tools");
  for (size_t i = 0; i < v.as_array().size(); ++i)
    GANTRY_TRY(parse_tool(v.as_array()[i], "tools[" + std::to_string(i) + "]", r));
  return Ok();
}

// "auto" | "none" | "required" | {"type": "function", "function": {"name": ...}}.
Status parse_tool_choice(const json::value &v, InferenceRequest &r) {
  if (v.is_string()) {
    const std::string_view s = v.as_string();
    if (s == "auto")
      r.tool_choice.mode = ToolChoice::Mode::kAuto;
    else if (s == "none")
      r.tool_choice.mode = ToolChoice::Mode::kNone;
    else if (s == "required")
      r.tool_choice.mode = ToolChoice::Mode::kRequired;
    else
      return bad("'tool_choice' must be 'auto', 'none', 'required' or a function", "tool_choice");
    return Ok();
  }
  const json::value *type = member(v, "type");
  if (!type || !type->is_string() || type->as_string() != "function")
    return bad("'tool_choice.type' must be 'function'", "tool_choice.type");
  const json::value *fn = member(v, "function");
  const json::value *name = fn ? member(*fn, "name") : nullptr;
  if (!name || !name->is_string())
    return bad("'tool_choice.function.name' must be a string", "tool_choice.function.name");
  r.tool_choice.mode = ToolChoice::Mode::kFunction;
  r.tool_choice.function = std::string(name->as_string());
  return Ok();
}

Status check_tool_choice(const InferenceRequest &r) {
  using Mode = ToolChoice::Mode;
  if (r.tools.empty() &&
      (r.tool_choice.mode == Mode::kRequired || r.tool_choice.mode == Mode::kFunction)) {
    return bad("'tool_choice' is only allowed when 'tools' are specified", "tool_choice");
  }
  if (r.tool_choice.mode == Mode::kFunction) {
    for (const auto &t : r.tools) {
      if (t.name == r.tool_choice.function)
        return Ok();
    }
    return bad("'tool_choice' names the function '" + echoed(r.tool_choice.function) +
                   "', which is not in 'tools'",
               "tool_choice.function.name");
  }
  return Ok();
}

} // namespace

Result<CacheOption> parse_cache_option(const json::value &v) {
  CacheOption c;
  if (v.is_bool()) {
    c.enabled = v.as_bool();
    return c;
  }
  if (!v.is_object())
    return bad("'cache' must be a boolean or an object like {\"ttl\": 60}", "cache");
  for (const auto &[k, val] : v.as_object()) {
    if (k != "ttl")
      return bad("Unrecognized cache option: " + std::string(k), "cache." + std::string(k));
    GANTRY_ASSIGN_OR_RETURN(int64_t ttl, integer(val, "cache.ttl"));
    if (ttl < 0 || ttl > kMaxCacheTtlS) {
      return bad("'cache.ttl' must be between 0 and " + std::to_string(kMaxCacheTtlS) + " seconds",
                 "cache.ttl");
    }
    c.ttl_s = ttl;
  }
  return c;
}

namespace {

// Fields accepted and ignored: they do not change generation here.
bool ignored_field(std::string_view k) {
  return k == "store" || k == "metadata" || k == "service_tier" || k == "prediction" ||
         k == "reasoning_effort" || k == "modalities" || k == "name";
}

} // namespace

Result<InferenceRequest> parse_inference_request(Endpoint endpoint, std::string_view body) {
  // The document lives only while the typed request is read out of it (every field is copied):
  // its nodes come from a stack buffer, the heap only past it, instead of one allocation each
  // (about 50 allocations and frees for a small chat request).
  alignas(16) unsigned char scratch[8192];
  json::monotonic_resource mr(scratch, sizeof scratch);
  GANTRY_ASSIGN_OR_RETURN(json::object o, parse_object_body(body, &mr));
  InferenceRequest r;
  r.endpoint = endpoint;
  const bool chat = endpoint == Endpoint::kChatCompletions;
  bool have_model = false, have_input = false, have_top_logprobs = false;
  std::optional<int64_t> best_of;

  for (const auto &[key_sv, v] : o) {
    const std::string key(key_sv);
    if (v.is_null() && key != "messages" && key != "prompt" && key != "model")
      continue;
    if (key == "model") {
      GANTRY_ASSIGN_OR_RETURN(r.model, string(v, key));
      have_model = true;
    } else if (chat && key == "messages") {
      GANTRY_TRY(parse_messages(v, r));
      have_input = true;
    } else if (!chat && key == "prompt") {
      GANTRY_TRY(parse_prompt(v, r));
      have_input = true;
    } else if (key == "max_tokens" || (chat && key == "max_completion_tokens")) {
      GANTRY_ASSIGN_OR_RETURN(int64_t n, integer(v, key));
      if (n < 1)
        return bad("'" + key + "' must be at least 1", key);
      r.max_tokens = static_cast<int>(std::min<int64_t>(n, INT32_MAX));
    } else if (key == "temperature") {
      GANTRY_ASSIGN_OR_RETURN(r.sampling.temperature, ranged(v, key, 0, 2));
    } else if (key == "top_p") {
      GANTRY_ASSIGN_OR_RETURN(r.sampling.top_p, ranged(v, key, 0, 1));
      if (r.sampling.top_p <= 0)
        return bad("'top_p' must be greater than 0", key);
    } else if (key == "min_p") {
      GANTRY_ASSIGN_OR_RETURN(r.sampling.min_p, ranged(v, key, 0, 1));
    } else if (key == "top_k") {
      GANTRY_ASSIGN_OR_RETURN(int64_t k, integer(v, key));
      if (k < -1)
        return bad("'top_k' must be -1 or 0 (disabled) or positive", key);
      r.sampling.top_k = k <= 0 ? 0 : static_cast<int>(std::min<int64_t>(k, INT32_MAX));
    } else if (key == "presence_penalty") {
      GANTRY_ASSIGN_OR_RETURN(r.sampling.presence_penalty, ranged(v, key, -2, 2));
    } else if (key == "frequency_penalty") {
      GANTRY_ASSIGN_OR_RETURN(r.sampling.frequency_penalty, ranged(v, key, -2, 2));
    } else if (key == "repetition_penalty") {
      GANTRY_ASSIGN_OR_RETURN(r.sampling.repetition_penalty, ranged(v, key, 0.01, 10));
    } else if (key == "seed") {
      GANTRY_ASSIGN_OR_RETURN(int64_t s, integer(v, key));
      r.sampling.seed = static_cast<uint64_t>(s);
    } else if (key == "n") {
      GANTRY_ASSIGN_OR_RETURN(int64_t n, integer(v, key));
      if (n < 1 || n > kMaxChoices) {
        return bad("'n' must be between 1 and " + std::to_string(kMaxChoices), key);
      }
      r.n = static_cast<int>(n);
    } else if (key == "stream") {
      GANTRY_ASSIGN_OR_RETURN(r.stream, boolean(v, key));
    } else if (key == "stream_options") {
      if (!v.is_object())
        return bad("'stream_options' must be an object", key);
      for (const auto &[k2, v2] : v.as_object()) {
        if (k2 == "include_usage") {
          GANTRY_ASSIGN_OR_RETURN(r.include_usage, boolean(v2, "stream_options.include_usage"));
        } else if (k2 != "continuous_usage_stats" && k2 != "include_obfuscation") {
          return bad("Unrecognized stream option: " + std::string(k2),
                     "stream_options." + std::string(k2));
        }
      }
    } else if (key == "stop") {
      GANTRY_TRY(parse_stop(v, r));
    } else if (key == "user") {
      GANTRY_ASSIGN_OR_RETURN(r.user, string(v, key));
    } else if (key == "cache") {
      GANTRY_ASSIGN_OR_RETURN(r.cache, parse_cache_option(v));
    } else if (key == "ignore_eos") {
      GANTRY_ASSIGN_OR_RETURN(r.ignore_eos, boolean(v, key));
    } else if (!chat && key == "echo") {
      GANTRY_ASSIGN_OR_RETURN(r.echo, boolean(v, key));
    } else if (!chat && key == "best_of") {
      GANTRY_ASSIGN_OR_RETURN(int64_t b, integer(v, key));
      best_of = b;
    } else if (!chat && key == "suffix") {
      return bad("'suffix' is not supported", key);
    } else if (chat && key == "logprobs") {
      GANTRY_ASSIGN_OR_RETURN(r.logprobs, boolean(v, key));
    } else if (chat && key == "top_logprobs") {
      GANTRY_ASSIGN_OR_RETURN(int64_t t, integer(v, key));
      if (t < 0 || t > kMaxTopLogprobs) {
        return bad("'top_logprobs' must be between 0 and " + std::to_string(kMaxTopLogprobs) +
                       ", got " + std::to_string(t),
                   key);
      }
      r.top_logprobs = static_cast<int>(t);
      have_top_logprobs = true;
    } else if (!chat && key == "logprobs") {
      // The legacy form: how many alternatives per token (false: none asked).
      if (v.is_bool() && !v.as_bool())
        continue;
      GANTRY_ASSIGN_OR_RETURN(int64_t t, integer(v, key));
      if (t < 0 || t > kMaxTopLogprobs) {
        return bad("'logprobs' must be between 0 and " + std::to_string(kMaxTopLogprobs) +
                       ", got " + std::to_string(t),
                   key);
      }
      r.logprobs = true;
      r.top_logprobs = static_cast<int>(t);
    } else if (key == "logit_bias") {
      GANTRY_TRY(parse_logit_bias(v, r));
    } else if (key == "response_format") {
      GANTRY_TRY(parse_response_format(v, r));
    } else if (key == "grammar" || key == "guided_grammar") {
      // llama.cpp's (and vLLM's) GBNF grammar extension.
      GANTRY_ASSIGN_OR_RETURN(r.grammar, string(v, key));
      if (r.grammar.empty())
        return bad("'" + key + "' must not be empty", key);
    } else if (key == "guided_json" || key == "json_schema") {
      // vLLM's guided_json and llama.cpp's json_schema: a schema without the envelope.
      GANTRY_TRY(schema_into(v, key, r.response_format));
      r.response_format.type = ResponseFormat::Type::kJsonSchema;
    } else if (chat && key == "tools") {
      GANTRY_TRY(parse_tools(v, r));
    } else if (chat && key == "tool_choice") {
      GANTRY_TRY(parse_tool_choice(v, r));
    } else if (chat && key == "parallel_tool_calls") {
      GANTRY_ASSIGN_OR_RETURN(r.parallel_tool_calls, boolean(v, key));
    } else if (chat && key == "functions") {
      // The deprecated form answers with message.function_call, a shape Gantry does not write;
      // refusing it says so instead of answering in a shape the client does not read.
      if (!v.is_array())
        return bad("'functions' must be an array", key);
      if (!v.as_array().empty()) {
        return bad("the deprecated 'functions' is not supported; send the same definitions as "
                   "'tools': [{\"type\": \"function\", \"function\": {...}}]",
                   key);
      }
    } else if (chat && key == "function_call") {
      if (!(v.is_string() && (v.as_string() == "none" || v.as_string() == "auto"))) {
        return bad("the deprecated 'function_call' is not supported; use 'tool_choice'", key);
      }
    } else if (ignored_field(key)) {
      // accepted for compatibility; no effect
    } else {
      return bad("Unrecognized request argument supplied: " + echoed(key), echoed(key));
    }
  }
  if (!have_model)
    return bad("you must provide a model parameter", "model");
  if (!have_input) {
    return chat ? bad("'messages' is a required property", "messages")
                : bad("'prompt' is a required property", "prompt");
  }
  GANTRY_TRY(check_tool_choice(r));
  if (best_of && *best_of != r.n)
    return bad("'best_of' must equal 'n' if given", "best_of");
  if (!r.grammar.empty() && r.response_format.type != ResponseFormat::Type::kText) {
    return bad("'grammar' cannot be combined with a JSON response_format", "grammar");
  }
  if (have_top_logprobs && !r.logprobs)
    return bad("'logprobs' must be set to true if 'top_logprobs' is used", "top_logprobs");
  if (r.prompts.size() * static_cast<size_t>(r.n) > static_cast<size_t>(kMaxTotalChoices)) {
    return bad("prompts × n must be at most " + std::to_string(kMaxTotalChoices) + ", got " +
                   std::to_string(r.prompts.size()) + " prompts × " + std::to_string(r.n),
               "n");
  }
  if (r.include_usage && !r.stream) {
    return bad("'stream_options' is only allowed when 'stream' is true", "stream_options");
  }
  GANTRY_TRY(r.sampling.validate());
  return r;
}

std::string id_prefix(Endpoint endpoint) {
  return endpoint == Endpoint::kChatCompletions ? "chatcmpl-" : "cmpl-";
}

namespace {

json::array tool_calls_json(const std::vector<ToolCall> &calls) {
  json::array out;
  for (const auto &c : calls) {
    out.push_back({{"id", c.id},
                   {"type", "function"},
                   {"function", {{"name", c.name}, {"arguments", c.arguments}}}});
  }
  return out;
}

// OpenAI's delta.tool_calls: the first fragment of a call carries id, type and name.
json::array tool_call_deltas_json(const std::vector<ToolCallDelta> &deltas) {
  json::array out;
  for (const auto &d : deltas) {
    json::object o;
    o["index"] = d.index;
    json::object fn;
    if (!d.id.empty()) {
      o["id"] = d.id;
      o["type"] = "function";
    }
    if (!d.name.empty())
      fn["name"] = d.name;
    fn["arguments"] = d.arguments;
    o["function"] = std::move(fn);
    out.push_back(std::move(o));
  }
  return out;
}

// JSON has no -Infinity; OpenAI reports an impossible token as -9999.
double finite_logprob(double lp) { return std::isfinite(lp) ? lp : -9999.0; }

json::array bytes_json(std::string_view b) {
  json::array a;
  a.reserve(b.size());
  for (unsigned char c : b)
    a.push_back(static_cast<int64_t>(c));
  return a;
}

// chat: {"content": [{token, logprob, bytes, top_logprobs: [{token, logprob, bytes}]}],
// "refusal": null}.
json::object chat_logprobs(const std::vector<TokenLogprob> &lps) {
  json::array content;
  content.reserve(lps.size());
  for (const auto &t : lps) {
    json::array top;
    for (const auto &a : t.top) {
      top.push_back(json::object{{"token", a.token},
                                 {"logprob", finite_logprob(a.logprob)},
                                 {"bytes", bytes_json(a.bytes)}});
    }
    content.push_back(json::object{{"token", t.token},
                                   {"logprob", finite_logprob(t.logprob)},
                                   {"bytes", bytes_json(t.bytes)},
                                   {"top_logprobs", std::move(top)}});
  }
  return {{"content", std::move(content)}, {"refusal", nullptr}};
}

// completions (the legacy form): parallel arrays, the alternatives as {token: logprob} maps
// (two alternatives with the same text keep the more likely one, listed first).
json::object completion_logprobs(const std::vector<TokenLogprob> &lps) {
  json::array tokens, token_logprobs, top_logprobs, text_offset;
  for (const auto &t : lps) {
    tokens.push_back(json::string(t.token));
    token_logprobs.push_back(finite_logprob(t.logprob));
    json::object top;
    for (const auto &a : t.top)
      top.emplace(a.token, finite_logprob(a.logprob));
    top_logprobs.push_back(std::move(top));
    text_offset.push_back(t.text_offset);
  }
  return {{"tokens", std::move(tokens)},
          {"token_logprobs", std::move(token_logprobs)},
          {"top_logprobs", std::move(top_logprobs)},
          {"text_offset", std::move(text_offset)}};
}

json::value logprobs_value(Endpoint endpoint, const std::vector<TokenLogprob> *lps) {
  if (!lps)
    return nullptr;
  return endpoint == Endpoint::kChatCompletions ? chat_logprobs(*lps) : completion_logprobs(*lps);
}

} // namespace

namespace {

// The fields before "choices": id, object, created, model, system_fingerprint.
void append_envelope(std::string &o, Endpoint endpoint, const ResponseMeta &meta, bool chunk) {
  o += "{\"id\":";
  append_json_string(o, meta.id);
  o += endpoint != Endpoint::kChatCompletions ? ",\"object\":\"text_completion\",\"created\":"
       : chunk                                ? ",\"object\":\"chat.completion.chunk\",\"created\":"
                                              : ",\"object\":\"chat.completion\",\"created\":";
  append_json_int(o, meta.created);
  o += ",\"model\":";
  append_json_string(o, meta.model);
  o += ",\"system_fingerprint\":\"gantry\"";
}

// The usage object as OpenAI orders it, cached tokens under prompt_tokens_details.
void append_usage(std::string &o, const Usage &usage) {
  o += "{\"prompt_tokens\":";
  append_json_int(o, usage.prompt_tokens);
  o += ",\"completion_tokens\":";
  append_json_int(o, usage.completion_tokens);
  o += ",\"total_tokens\":";
  append_json_int(o, int64_t{usage.prompt_tokens} + usage.completion_tokens);
  o += ",\"prompt_tokens_details\":{\"cached_tokens\":";
  append_json_int(o, usage.cached_tokens);
  o += "}}";
}

void append_finish(std::string &o, std::string_view finish_reason) {
  if (finish_reason.empty())
    o += "null";
  else
    append_json_string(o, finish_reason);
}

} // namespace

// By hand like the chunks below (byte-identical to Boost.JSON's rendering of the same object,
// which its test checks); tool calls and logprobs through Boost.JSON.
std::string render_response(Endpoint endpoint, const ResponseMeta &meta,
                            const std::vector<Choice> &choices, const Usage &usage) {
  const bool chat = endpoint == Endpoint::kChatCompletions;
  std::size_t text = 0;
  for (const auto &c : choices)
    text += c.text.size();
  std::string o;
  o.reserve(320 + meta.id.size() + meta.model.size() + text + 96 * choices.size());
  append_envelope(o, endpoint, meta, false);
  o += ",\"choices\":[";
  for (std::size_t i = 0; i < choices.size(); ++i) {
    const Choice &c = choices[i];
    o += i ? ",{\"index\":" : "{\"index\":";
    append_json_int(o, c.index);
    if (chat) {
      o += ",\"message\":{\"role\":\"assistant\",\"content\":";
      if (!c.tool_calls.empty() && c.text.empty())
        o += "null"; // OpenAI's shape for a reply that is only calls
      else
        append_json_string(o, c.text);
      o += ",\"refusal\":null";
      if (!c.tool_calls.empty()) {
        o += ",\"tool_calls\":";
        o += json::serialize(tool_calls_json(c.tool_calls));
      }
      o += '}';
    } else {
      o += ",\"text\":";
      append_json_string(o, c.text);
    }
    o += ",\"logprobs\":";
    if (c.logprobs)
      o += json::serialize(logprobs_value(endpoint, &*c.logprobs));
    else
      o += "null";
    o += ",\"finish_reason\":";
    append_finish(o, c.finish_reason);
    o += '}';
  }
  o += "],\"usage\":";
  append_usage(o, usage);
  o += '}';
  return o;
}

// Written by hand rather than through a json::object: every streamed token goes through here,
// and building and serializing the object cost about five times as much (render_chunk's test
// checks the bytes against the Boost.JSON rendering).
std::string render_chunk(Endpoint endpoint, const ResponseMeta &meta, const ChoiceDelta &d,
                         bool include_usage) {
  const bool chat = endpoint == Endpoint::kChatCompletions;
  std::string o;
  o.reserve(160 + meta.id.size() + meta.model.size() + d.text.size());
  append_envelope(o, endpoint, meta, true);
  o += ",\"choices\":[{\"index\":";
  append_json_int(o, d.index);
  if (chat) {
    o += ",\"delta\":{";
    bool first = true;
    if (d.role) {
      o += "\"role\":\"assistant\"";
      first = false;
    }
    if (!d.text.empty() || d.role) {
      o += first ? "\"content\":" : ",\"content\":";
      append_json_string(o, d.text);
      first = false;
    }
    if (d.tool_calls && !d.tool_calls->empty()) {
      o += first ? "\"tool_calls\":" : ",\"tool_calls\":";
      o += json::serialize(tool_call_deltas_json(*d.tool_calls));
    }
    o += '}';
  } else {
    o += ",\"text\":";
    append_json_string(o, d.text);
  }
  o += ",\"logprobs\":";
  if (d.logprobs)
    o += json::serialize(logprobs_value(endpoint, d.logprobs));
  else
    o += "null";
  o += ",\"finish_reason\":";
  append_finish(o, d.finish_reason);
  o += "}]";
  if (include_usage)
    o += ",\"usage\":null";
  o += '}';
  return o;
}

std::string render_usage_chunk(Endpoint endpoint, const ResponseMeta &meta, const Usage &usage,
                               std::optional<double> cost_usd) {
  // By hand like render_chunk; the cost through Boost.JSON, whose rendering of a double is
  // the one clients already parse.
  std::string o;
  o.reserve(256 + meta.id.size() + meta.model.size());
  append_envelope(o, endpoint, meta, true);
  o += ",\"choices\":[],\"usage\":";
  append_usage(o, usage);
  if (cost_usd) {
    o.pop_back(); // the cost goes inside the usage object
    o += ",\"cost_usd\":";
    o += json::serialize(json::value(*cost_usd));
    o += '}';
  }
  o += '}';
  return o;
}

std::string render_model(const ModelCard &m) {
  json::object o{{"id", m.id}, {"object", "model"}, {"created", m.created}, {"owned_by", "gantry"}};
  if (m.context_length > 0)
    o["context_length"] = m.context_length;
  if (!m.status.empty())
    o["status"] = json::object{{"value", m.status}};
  return json::serialize(o);
}

std::string render_model_list(const std::vector<ModelCard> &models) {
  json::array data;
  for (const auto &m : models)
    data.push_back(json::parse(render_model(m)));
  return json::serialize(json::object{{"object", "list"}, {"data", std::move(data)}});
}

} // namespace gantry::api
