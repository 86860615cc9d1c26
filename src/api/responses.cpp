#include "api/responses.h"

#include <boost/json.hpp>

#include "api/cache_option.h"
#include "api/json_body.h"
#include "api/json_fields.h"
#include "core/utf8.h"

namespace gantry::api {
namespace json = boost::json;
using fields::bad;

namespace {

// OpenAI's own bounds on these lists.
constexpr size_t kMaxTools = 128;
constexpr size_t kMaxMetadata = 16;

std::string at(const std::string &base, size_t i) { return base + "[" + std::to_string(i) + "]"; }

// A message's content: a string, or input_text / output_text / refusal parts (joined).
Result<std::string> item_content(const json::value &v, const std::string &name) {
  if (v.is_string())
    return std::string(v.as_string());
  GANTRY_ASSIGN_OR_RETURN(const json::array *parts, fields::array(v, name));
  std::string out;
  for (size_t i = 0; i < parts->size(); ++i) {
    const std::string p = at(name, i);
    GANTRY_ASSIGN_OR_RETURN(const json::object *part, fields::object((*parts)[i], p));
    const json::value *type = part->if_contains("type");
    if (!type || !type->is_string())
      return bad("'" + p + ".type' must be a string", p + ".type");
    const std::string_view t = type->as_string();
    const char *field = t == "refusal" ? "refusal" : "text";
    if (t != "input_text" && t != "output_text" && t != "refusal") {
      return bad("content part type '" + echoed(t) +
                     "' is not supported; only input_text, output_text and refusal are",
                 p + ".type");
    }
    const json::value *text = part->if_contains(field);
    if (!text || !text->is_string())
      return bad("'" + p + "." + field + "' must be a string", p + "." + field);
    out += text->as_string();
  }
  return out;
}

Result<std::string> required_string(const json::object &o, const char *key, const std::string &p) {
  const json::value *v = o.if_contains(key);
  if (!v)
    return bad("'" + p + "." + key + "' is required", p + "." + key);
  return fields::string(*v, p + "." + key);
}

// One input item appended to `msgs`: a message, a function call (joined to the assistant turn
// before it) or a function call's output (a tool message).
Status input_item(const json::value &v, const std::string &p, std::vector<ChatMessage> &msgs) {
  GANTRY_ASSIGN_OR_RETURN(const json::object *o, fields::object(v, p));
  std::string type = "message";
  if (const json::value *t = o->if_contains("type")) {
    GANTRY_ASSIGN_OR_RETURN(type, fields::string(*t, p + ".type"));
  }
  if (type == "message") {
    ChatMessage m;
    GANTRY_ASSIGN_OR_RETURN(m.role, required_string(*o, "role", p));
    if (m.role != "user" && m.role != "system" && m.role != "developer" && m.role != "assistant")
      return bad("'" + echoed(m.role) +
                     "' is not a valid role (user, system, developer, assistant)",
                 p + ".role");
    const json::value *c = o->if_contains("content");
    if (!c)
      return bad("'" + p + ".content' is required", p + ".content");
    GANTRY_ASSIGN_OR_RETURN(m.content, item_content(*c, p + ".content"));
    msgs.push_back(std::move(m));
    return Ok();
  }
  if (type == "function_call") {
    ToolCall call;
    GANTRY_ASSIGN_OR_RETURN(call.id, required_string(*o, "call_id", p));
    GANTRY_ASSIGN_OR_RETURN(call.name, required_string(*o, "name", p));
    GANTRY_ASSIGN_OR_RETURN(call.arguments, required_string(*o, "arguments", p));
    if (msgs.empty() || msgs.back().role != "assistant")
      msgs.emplace_back("assistant", "");
    msgs.back().tool_calls.push_back(std::move(call));
    return Ok();
  }
  if (type == "function_call_output") {
    ChatMessage m("tool", "");
    GANTRY_ASSIGN_OR_RETURN(m.tool_call_id, required_string(*o, "call_id", p));
    const json::value *out = o->if_contains("output");
    if (!out)
      return bad("'" + p + ".output' is required", p + ".output");
    GANTRY_ASSIGN_OR_RETURN(m.content, item_content(*out, p + ".output"));
    // The function's name, for templates that print it: from the call this output answers.
    for (auto it = msgs.rbegin(); it != msgs.rend() && m.name.empty(); ++it)
      for (const auto &c : it->tool_calls)
        if (c.id == m.tool_call_id)
          m.name = c.name;
    msgs.push_back(std::move(m));
    return Ok();
  }
  if (type == "item_reference")
    return bad("item references need stored responses, which Gantry does not keep; send the item "
               "itself",
               p + ".type");
  return bad("input item type '" + echoed(type) +
                 "' is not supported; use message, function_call or function_call_output",
             p + ".type");
}

Status parse_input(const json::value &v, std::vector<ChatMessage> &msgs) {
  if (v.is_string()) {
    msgs.emplace_back("user", std::string(v.as_string()));
    return Ok();
  }
  if (!v.is_array())
    return bad("'input' must be a string or an array of input items", "input");
  if (v.as_array().empty())
    return bad("'input' must contain at least one item", "input");
  for (size_t i = 0; i < v.as_array().size(); ++i)
    GANTRY_TRY(input_item(v.as_array()[i], at("input", i), msgs));
  return Ok();
}

bool valid_function_name(std::string_view n) {
  if (n.empty() || n.size() > 64)
    return false;
  for (char c : n)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-'))
      return false;
  return true;
}

Status parse_tools(const json::value &v, ResponsesRequest &out) {
  GANTRY_ASSIGN_OR_RETURN(const json::array *a, fields::array(v, "tools"));
  if (a->size() > kMaxTools)
    return bad("'tools' accepts at most " + std::to_string(kMaxTools) + " tools", "tools");
  json::array echo;
  for (size_t i = 0; i < a->size(); ++i) {
    const std::string p = at("tools", i);
    GANTRY_ASSIGN_OR_RETURN(const json::object *o, fields::object((*a)[i], p));
    GANTRY_ASSIGN_OR_RETURN(std::string type, required_string(*o, "type", p));
    if (type != "function")
      return bad("tool type '" + echoed(type) + "' is not supported; only function tools are",
                 p + ".type");
    FunctionTool t;
    t.strict = true; // the Responses API's default
    json::object e{{"type", "function"}};
    for (const auto &[k, fv] : *o) {
      const std::string f = p + "." + std::string(k);
      if (k == "type") {
        continue;
      } else if (k == "name") {
        GANTRY_ASSIGN_OR_RETURN(t.name, fields::string(fv, f));
        if (!valid_function_name(t.name))
          return bad("'" + f + "' must be 1 to 64 characters of a-z, A-Z, 0-9, _ and -", f);
      } else if (k == "description") {
        if (!fv.is_null()) {
          GANTRY_ASSIGN_OR_RETURN(t.description, fields::string(fv, f));
        }
      } else if (k == "parameters") {
        if (!fv.is_null()) {
          GANTRY_ASSIGN_OR_RETURN(t.parameters, fields::tool_schema_text(fv, f));
        }
      } else if (k == "strict") {
        if (!fv.is_null()) {
          GANTRY_ASSIGN_OR_RETURN(t.strict, fields::boolean(fv, f));
        }
      } else {
        return bad("Unrecognized tool field: " + echoed(k), echoed(f));
      }
    }
    if (t.name.empty())
      return bad("'" + p + ".name' is required", p + ".name");
    e["name"] = t.name;
    e["description"] = t.description.empty() ? json::value(nullptr) : json::value(t.description);
    e["parameters"] = t.parameters.empty() ? json::value(nullptr) : json::parse(t.parameters);
    e["strict"] = t.strict;
    echo.push_back(std::move(e));
    out.request.tools.push_back(std::move(t));
  }
  out.settings.tools_json = json::serialize(echo);
  return Ok();
}

Status parse_tool_choice(const json::value &v, ResponsesRequest &out) {
  ToolChoice &tc = out.request.tool_choice;
  if (v.is_string()) {
    const std::string_view s = v.as_string();
    if (s == "auto")
      tc.mode = ToolChoice::Mode::kAuto;
    else if (s == "none")
      tc.mode = ToolChoice::Mode::kNone;
    else if (s == "required")
      tc.mode = ToolChoice::Mode::kRequired;
    else
      return bad("'tool_choice' must be none, auto, required or {\"type\":\"function\",...}",
                 "tool_choice");
  } else {
    GANTRY_ASSIGN_OR_RETURN(const json::object *o, fields::object(v, "tool_choice"));
    GANTRY_ASSIGN_OR_RETURN(std::string type, required_string(*o, "type", "tool_choice"));
    if (type != "function")
      return bad("tool_choice type '" + echoed(type) + "' is not supported; use function",
                 "tool_choice.type");
    tc.mode = ToolChoice::Mode::kFunction;
    GANTRY_ASSIGN_OR_RETURN(tc.function, required_string(*o, "name", "tool_choice"));
  }
  out.settings.tool_choice_json = json::serialize(v);
  return Ok();
}

// text: {"format": {...}, "verbosity": ...}.
Status parse_text(const json::value &v, ResponsesRequest &out) {
  GANTRY_ASSIGN_OR_RETURN(const json::object *o, fields::object(v, "text"));
  for (const auto &[k, fv] : *o) {
    if (k == "verbosity" || fv.is_null())
      continue;
    if (k != "format")
      return bad("Unrecognized text option: " + echoed(k), "text." + echoed(k));
    GANTRY_ASSIGN_OR_RETURN(const json::object *f, fields::object(fv, "text.format"));
    GANTRY_ASSIGN_OR_RETURN(std::string type, required_string(*f, "type", "text.format"));
    ResponseFormat &rf = out.request.response_format;
    json::object echo{{"type", type}};
    if (type == "text") {
      rf.type = ResponseFormat::Type::kText;
    } else if (type == "json_object") {
      rf.type = ResponseFormat::Type::kJsonObject;
    } else if (type == "json_schema") {
      rf.type = ResponseFormat::Type::kJsonSchema;
      GANTRY_ASSIGN_OR_RETURN(rf.name, required_string(*f, "name", "text.format"));
      const json::value *schema = f->if_contains("schema");
      if (!schema)
        return bad("'text.format.schema' is required", "text.format.schema");
      GANTRY_ASSIGN_OR_RETURN(rf.schema, fields::schema_text(*schema, "text.format.schema"));
      if (const json::value *s = f->if_contains("strict"); s && !s->is_null()) {
        GANTRY_ASSIGN_OR_RETURN(rf.strict, fields::boolean(*s, "text.format.strict"));
      }
      echo["name"] = rf.name;
      echo["schema"] = *schema;
      echo["strict"] = rf.strict;
      if (const json::value *d = f->if_contains("description"); d && d->is_string())
        echo["description"] = *d;
    } else {
      return bad("text.format type '" + echoed(type) +
                     "' is not supported; use text, json_object or json_schema",
                 "text.format.type");
    }
    out.settings.text_format_json = json::serialize(echo);
  }
  return Ok();
}

Status parse_metadata(const json::value &v, ResponsesRequest &out) {
  GANTRY_ASSIGN_OR_RETURN(const json::object *o, fields::object(v, "metadata"));
  if (o->size() > kMaxMetadata)
    return bad("'metadata' accepts at most 16 pairs", "metadata");
  for (const auto &[k, fv] : *o) {
    if (k.size() > 64 || !fv.is_string() || fv.as_string().size() > 512)
      return bad("'metadata' keys are strings of at most 64 characters and values strings of at "
                 "most 512",
                 "metadata." + echoed(k));
  }
  out.settings.metadata_json = json::serialize(v);
  return Ok();
}

} // namespace

Result<ResponsesRequest> parse_responses_request(std::string_view body) {
  GANTRY_ASSIGN_OR_RETURN(json::object o, parse_object_body(body));
  ResponsesRequest out;
  InferenceRequest &r = out.request;
  r.endpoint = Endpoint::kChatCompletions;
  bool have_model = false;
  std::vector<ChatMessage> input;
  bool have_input = false;
  for (const auto &[key_sv, v] : o) {
    const std::string key(key_sv);
    if (v.is_null() && key != "model" && key != "input")
      continue;
    if (key == "model") {
      GANTRY_ASSIGN_OR_RETURN(r.model, fields::string(v, key));
      have_model = true;
    } else if (key == "input") {
      GANTRY_TRY(parse_input(v, input));
      have_input = true;
    } else if (key == "instructions") {
      GANTRY_ASSIGN_OR_RETURN(std::string s, fields::string(v, key));
      out.settings.instructions = std::move(s);
    } else if (key == "max_output_tokens") {
      GANTRY_ASSIGN_OR_RETURN(int64_t n, fields::integer(v, key));
      if (n < 1)
        return bad("'max_output_tokens' must be at least 1", key);
      r.max_tokens = static_cast<int>(std::min<int64_t>(n, INT32_MAX));
      out.settings.max_output_tokens = r.max_tokens;
    } else if (key == "temperature") {
      GANTRY_ASSIGN_OR_RETURN(r.sampling.temperature, fields::ranged(v, key, 0, 2));
      out.settings.temperature = v.is_double() ? v.as_double() : r.sampling.temperature;
    } else if (key == "top_p") {
      GANTRY_ASSIGN_OR_RETURN(r.sampling.top_p, fields::ranged(v, key, 0, 1));
      if (r.sampling.top_p <= 0)
        return bad("'top_p' must be greater than 0", key);
      out.settings.top_p = v.is_double() ? v.as_double() : r.sampling.top_p;
    } else if (key == "text") {
      GANTRY_TRY(parse_text(v, out));
    } else if (key == "tools") {
      GANTRY_TRY(parse_tools(v, out));
    } else if (key == "tool_choice") {
      GANTRY_TRY(parse_tool_choice(v, out));
    } else if (key == "parallel_tool_calls") {
      GANTRY_ASSIGN_OR_RETURN(r.parallel_tool_calls, fields::boolean(v, key));
      out.settings.parallel_tool_calls = r.parallel_tool_calls;
    } else if (key == "stream") {
      GANTRY_ASSIGN_OR_RETURN(r.stream, fields::boolean(v, key));
    } else if (key == "store") {
      GANTRY_ASSIGN_OR_RETURN(bool store, fields::boolean(v, key));
      (void)store; // nothing is stored either way; responses say "store": false
    } else if (key == "metadata") {
      GANTRY_TRY(parse_metadata(v, out));
    } else if (key == "user" || key == "safety_identifier" || key == "prompt_cache_key") {
      GANTRY_ASSIGN_OR_RETURN(std::string s, fields::string(v, key));
      if (key == "user") {
        r.user = s;
        out.settings.user = std::move(s);
      }
    } else if (key == "cache") {
      GANTRY_ASSIGN_OR_RETURN(r.cache, parse_cache_option(v));
    } else if (key == "previous_response_id" || key == "conversation" || key == "prompt") {
      return bad("'" + key +
                     "' needs server-side response state, which Gantry does not keep; send the "
                     "whole conversation in 'input'",
                 key);
    } else if (key == "background") {
      GANTRY_ASSIGN_OR_RETURN(bool bg, fields::boolean(v, key));
      if (bg)
        return bad("background responses are not supported; use POST /v1/jobs for async work", key);
    } else if (key == "include") {
      GANTRY_ASSIGN_OR_RETURN(const json::array *a, fields::array(v, key));
      if (!a->empty())
        return bad("'include' values are not supported", key);
    } else if (key == "truncation") {
      if (!v.is_string() || v.as_string() != "disabled")
        return bad("only 'truncation': 'disabled' is supported (an input over the context is an "
                   "error)",
                   key);
    } else if (key == "top_logprobs") {
      GANTRY_ASSIGN_OR_RETURN(int64_t n, fields::integer(v, key));
      if (n != 0)
        return bad("logprobs are not supported on /v1/responses; use /v1/chat/completions", key);
    } else if (key == "reasoning" || key == "service_tier" || key == "stream_options") {
      // accepted for compatibility; no effect on these models
    } else {
      return bad("Unrecognized request argument supplied: " + echoed(key), echoed(key));
    }
  }
  if (!have_model)
    return bad("you must provide a model parameter", "model");
  if (!have_input)
    return bad("'input' is a required property", "input");
  if (out.settings.instructions)
    r.messages.emplace_back("system", *out.settings.instructions);
  for (auto &m : input)
    r.messages.push_back(std::move(m));
  if (r.tool_choice.mode == ToolChoice::Mode::kFunction) {
    bool found = false;
    for (const auto &t : r.tools)
      found = found || t.name == r.tool_choice.function;
    if (!found)
      return bad("tool_choice names '" + echoed(r.tool_choice.function) +
                     "', which is not among 'tools'",
                 "tool_choice.name");
  }
  GANTRY_TRY(r.sampling.validate());
  return out;
}

namespace {

json::value parse_or_null(const std::string &text) {
  json::error_code ec;
  json::value v = json::parse(text, ec);
  return ec ? json::value(nullptr) : v;
}

json::object usage_json(const Usage &u) {
  return {{"input_tokens", u.prompt_tokens},
          {"input_tokens_details", {{"cached_tokens", u.cached_tokens}}},
          {"output_tokens", u.completion_tokens},
          {"output_tokens_details", {{"reasoning_tokens", 0}}},
          {"total_tokens", u.prompt_tokens + u.completion_tokens}};
}

// The response object around `output`; `usage` null while in progress.
json::object response_json(const ResponsesMeta &m, const ResponsesSettings &s,
                           std::string_view status, json::array output, const Usage *usage,
                           const Error *error) {
  json::object o;
  o["id"] = m.id;
  o["object"] = "response";
  o["created_at"] = m.created_at;
  o["status"] = status;
  o["background"] = false;
  o["error"] = nullptr;
  if (error) {
    o["error"] = {{"code", error_code_name(error->code)}, {"message", error->message}};
  }
  o["incomplete_details"] = nullptr;
  if (status == "incomplete")
    o["incomplete_details"] = {{"reason", "max_output_tokens"}};
  o["instructions"] = s.instructions ? json::value(*s.instructions) : json::value(nullptr);
  o["max_output_tokens"] =
      s.max_output_tokens ? json::value(*s.max_output_tokens) : json::value(nullptr);
  o["metadata"] = parse_or_null(s.metadata_json);
  o["model"] = m.model;
  o["output"] = std::move(output);
  o["parallel_tool_calls"] = s.parallel_tool_calls;
  o["previous_response_id"] = nullptr;
  o["reasoning"] = {{"effort", nullptr}, {"summary", nullptr}};
  o["service_tier"] = "default";
  o["store"] = false;
  o["temperature"] = s.temperature;
  o["text"] = {{"format", parse_or_null(s.text_format_json)}};
  o["tool_choice"] = parse_or_null(s.tool_choice_json);
  o["tools"] = parse_or_null(s.tools_json);
  o["top_p"] = s.top_p;
  o["truncation"] = "disabled";
  o["usage"] = usage ? json::value(usage_json(*usage)) : json::value(nullptr);
  o["user"] = s.user ? json::value(*s.user) : json::value(nullptr);
  return o;
}

json::object text_part(std::string_view text) {
  return {{"type", "output_text"},
          {"text", text},
          {"annotations", json::array()},
          {"logprobs", json::array()}};
}

json::object message_item(std::string_view id, std::string_view status, std::string_view text,
                          bool with_part) {
  json::array content;
  if (with_part)
    content.push_back(text_part(text));
  return {{"id", id},
          {"type", "message"},
          {"status", status},
          {"role", "assistant"},
          {"content", std::move(content)}};
}

json::object call_item(std::string_view id, std::string_view call_id, std::string_view name,
                       std::string_view arguments, std::string_view status) {
  return {{"id", id},     {"type", "function_call"}, {"status", status}, {"call_id", call_id},
          {"name", name}, {"arguments", arguments}};
}

// The id after "resp_": output item ids derive from it.
std::string_view base_id(std::string_view id) {
  return id.starts_with("resp_") ? id.substr(5) : id;
}

std::string_view end_status(std::string_view finish_reason) {
  return finish_reason == "length" ? "incomplete" : "completed";
}

} // namespace

std::string render_responses_object(const ResponsesMeta &meta, const ResponsesSettings &settings,
                                    const ResponsesResult &result) {
  const std::string_view status = end_status(result.finish_reason);
  const std::string base(base_id(meta.id));
  json::array output;
  // A turn that only calls tools has no message item (as OpenAI answers it).
  if (!result.text.empty() || result.tool_calls.empty())
    output.push_back(message_item("msg_" + base, status, result.text, true));
  for (size_t i = 0; i < result.tool_calls.size(); ++i) {
    const ToolCall &c = result.tool_calls[i];
    const std::string n = std::to_string(i);
    output.push_back(call_item("fc_" + base + "_" + n,
                               c.id.empty() ? "call_" + base + "_" + n : c.id, c.name, c.arguments,
                               "completed"));
  }
  return json::serialize(
      response_json(meta, settings, status, std::move(output), &result.usage, nullptr));
}

ResponsesStream::ResponsesStream(ResponsesMeta meta, ResponsesSettings settings)
    : meta_(std::move(meta)), settings_(std::move(settings)) {}

TypedEvent ResponsesStream::event(std::string type, json::object body) {
  json::object o;
  o["type"] = type;
  o["sequence_number"] = seq_++;
  for (auto &kv : body)
    o[kv.key()] = std::move(kv.value());
  return {std::move(type), json::serialize(o)};
}

TypedEvents ResponsesStream::start() {
  TypedEvents out;
  out.push_back(
      event("response.created",
            {{"response", response_json(meta_, settings_, "in_progress", {}, nullptr, nullptr)}}));
  out.push_back(
      event("response.in_progress",
            {{"response", response_json(meta_, settings_, "in_progress", {}, nullptr, nullptr)}}));
  return out;
}

void ResponsesStream::open_message(TypedEvents &out) {
  close_open(out, true);
  Item it;
  it.id = "msg_" + std::string(base_id(meta_.id));
  if (!items_.empty()) // a message after a tool call gets an id of its own
    it.id += "_" + std::to_string(items_.size());
  items_.push_back(std::move(it));
  open_ = items_.size() - 1;
  const int64_t index = static_cast<int64_t>(*open_);
  out.push_back(event("response.output_item.added",
                      {{"output_index", index},
                       {"item", message_item(items_[*open_].id, "in_progress", "", false)}}));
  out.push_back(event("response.content_part.added", {{"item_id", items_[*open_].id},
                                                      {"output_index", index},
                                                      {"content_index", 0},
                                                      {"part", text_part("")}}));
}

TypedEvents ResponsesStream::text(std::string_view delta) {
  TypedEvents out;
  if (delta.empty())
    return out;
  if (!open_ || items_[*open_].function)
    open_message(out);
  Item &it = items_[*open_];
  it.text += delta;
  out.push_back(event("response.output_text.delta", {{"item_id", it.id},
                                                     {"output_index", static_cast<int64_t>(*open_)},
                                                     {"content_index", 0},
                                                     {"delta", delta},
                                                     {"logprobs", json::array()}}));
  return out;
}

TypedEvents ResponsesStream::tool_call(const ToolCallDelta &d) {
  TypedEvents out;
  size_t item = items_.size();
  for (const auto &[index, i] : tool_items_)
    if (index == d.index)
      item = i;
  if (item == items_.size()) {
    close_open(out, true);
    const std::string base(base_id(meta_.id));
    const std::string n = std::to_string(tool_items_.size());
    Item it;
    it.function = true;
    it.id = "fc_" + base + "_" + n;
    it.call_id = d.id.empty() ? "call_" + base + "_" + n : d.id;
    it.name = d.name;
    items_.push_back(std::move(it));
    tool_items_.push_back({d.index, item});
    open_ = item;
    out.push_back(event(
        "response.output_item.added",
        {{"output_index", static_cast<int64_t>(item)},
         {"item", call_item(items_[item].id, items_[item].call_id, d.name, "", "in_progress")}}));
  }
  Item &it = items_[item];
  if (!d.arguments.empty()) {
    it.text += d.arguments;
    out.push_back(event("response.function_call_arguments.delta",
                        {{"item_id", it.id},
                         {"output_index", static_cast<int64_t>(item)},
                         {"delta", d.arguments}}));
  }
  return out;
}

// Ends the item receiving deltas (a message's text part and the item, or a call's arguments).
void ResponsesStream::close_open(TypedEvents &out, bool complete) {
  if (!open_)
    return;
  Item &it = items_[*open_];
  const int64_t index = static_cast<int64_t>(*open_);
  open_.reset();
  const std::string_view status = complete ? "completed" : "incomplete";
  if (it.function) {
    out.push_back(event(
        "response.function_call_arguments.done",
        {{"item_id", it.id}, {"output_index", index}, {"name", it.name}, {"arguments", it.text}}));
    out.push_back(event("response.output_item.done",
                        {{"output_index", index},
                         {"item", call_item(it.id, it.call_id, it.name, it.text, "completed")}}));
    return;
  }
  out.push_back(event("response.output_text.done", {{"item_id", it.id},
                                                    {"output_index", index},
                                                    {"content_index", 0},
                                                    {"text", it.text},
                                                    {"logprobs", json::array()}}));
  out.push_back(event("response.content_part.done", {{"item_id", it.id},
                                                     {"output_index", index},
                                                     {"content_index", 0},
                                                     {"part", text_part(it.text)}}));
  out.push_back(
      event("response.output_item.done",
            {{"output_index", index}, {"item", message_item(it.id, status, it.text, true)}}));
}

TypedEvents ResponsesStream::end(std::string type, std::string_view status, const Usage *usage,
                                 const Error *error, bool complete) {
  TypedEvents out;
  // A response with no output at all still carries one (empty) message, as a live one would.
  if (items_.empty() && !error)
    open_message(out);
  close_open(out, complete);
  json::array output;
  for (const Item &it : items_) {
    output.push_back(
        it.function ? call_item(it.id, it.call_id, it.name, it.text, "completed")
                    : message_item(it.id, complete ? "completed" : "incomplete", it.text, true));
  }
  out.push_back(event(
      std::move(type),
      {{"response", response_json(meta_, settings_, status, std::move(output), usage, error)}}));
  return out;
}

TypedEvents ResponsesStream::finish(std::string_view finish_reason, const Usage &usage) {
  const std::string_view status = end_status(finish_reason);
  return end(status == "incomplete" ? "response.incomplete" : "response.completed", status, &usage,
             nullptr, status == "completed");
}

TypedEvents ResponsesStream::fail(const Error &error) {
  return end("response.failed", "failed", nullptr, &error, false);
}

std::string responses_param(std::string_view p) {
  const auto starts = [&p](std::string_view prefix) {
    return p.substr(0, prefix.size()) == prefix;
  };
  if (starts("response_format.json_schema."))
    return "text.format." +
           std::string(p.substr(std::string_view("response_format.json_schema.").size()));
  if (starts("response_format"))
    return "text.format" + std::string(p.substr(std::string_view("response_format").size()));
  // Chat messages do not map one to one onto input items (instructions come first, calls
  // merge into one turn): the error names the input, not a message index that may be wrong.
  if (starts("messages"))
    return "input";
  if (p == "max_tokens")
    return "max_output_tokens";
  // A forced call's grammar names a tool's schema the chat way.
  if (auto i = fields::chat_tool_schema_index(p))
    return "tools[" + std::to_string(*i) + "].parameters";
  return std::string(p);
}

} // namespace gantry::api
