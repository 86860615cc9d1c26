// The Anthropic Messages API (kind `anthropic`): chat completions translated to a Messages
// request and its answer back to OpenAI's shape, streaming included (message_start /
// content_block_delta / message_delta / message_stop become OpenAI chunks). Usage, stop reasons
// and errors are mapped; Anthropic has no legacy completions and no `n`.
#include <boost/json.hpp>

#include <map>

#include "api/anthropic_messages.h"
#include "backend/remote/wire.h"
#include "core/utf8.h"

namespace gantry::backend::remote {
namespace json = boost::json;

namespace {

constexpr std::string_view kApiVersion = "2023-06-01";

json::parse_options lenient() {
  json::parse_options po;
  po.allow_invalid_utf8 = true;
  po.max_depth = 64;
  return po;
}

std::string text_of(const json::value *v) {
  if (!v || !v->is_string())
    return {};
  return utf8_sanitize(std::string_view(v->as_string()));
}

int64_t int_of(const json::object &o, std::string_view key) {
  const json::value *v = o.if_contains(key);
  if (v && v->is_int64())
    return std::max<int64_t>(0, v->as_int64());
  if (v && v->is_uint64())
    return static_cast<int64_t>(std::min<uint64_t>(v->as_uint64(), INT64_MAX));
  return 0;
}

// The stop-reason mapping is the inbound Messages API's too (api/anthropic_messages.h).
std::string finish_of(std::string_view stop_reason) {
  return api::finish_reason_from_stop_reason(stop_reason);
}

// Anthropic counts cache reads and writes apart from input_tokens; OpenAI's prompt_tokens
// includes them, with the reads as cached_tokens.
void add_usage(const json::object &u, UpstreamUsage &out) {
  const int64_t read = int_of(u, "cache_read_input_tokens");
  const int64_t created = int_of(u, "cache_creation_input_tokens");
  if (u.contains("input_tokens"))
    out.prompt_tokens = int_of(u, "input_tokens") + read + created;
  if (u.contains("cache_read_input_tokens"))
    out.cached_tokens = read;
  if (u.contains("output_tokens"))
    out.completion_tokens = int_of(u, "output_tokens");
}

Error normalise(int status, std::string_view type, const std::string &message) {
  const std::string shown = "upstream: " + (message.empty() ? "HTTP " + std::to_string(status)
                                                            : scrub_upstream_message(message, {}));
  if (message.find("prompt is too long") != std::string::npos ||
      message.find("context window") != std::string::npos)
    return Error{ErrorCode::kContextLengthExceeded, shown, {}};
  if (type == "invalid_request_error" || status == 400)
    return Error{ErrorCode::kInvalidArgument, shown, {}};
  if (type == "request_too_large" || status == 413)
    return Error{ErrorCode::kPayloadTooLarge, shown, {}};
  if (type == "rate_limit_error" || status == 429)
    return Error{ErrorCode::kRateLimited, shown, {}};
  // authentication/permission/not_found: Gantry's configuration, not the client's fault;
  // api_error (500) and overloaded_error (529): the upstream is unavailable.
  return Error{ErrorCode::kUnavailable, shown, {}};
}

Error error_object(const json::value *e, int status) {
  if (!e || !e->is_object())
    return normalise(status, "", "");
  const json::object &eo = e->as_object();
  return normalise(status, text_of(eo.if_contains("type")), text_of(eo.if_contains("message")));
}

class AnthropicStreamDecoder final : public StreamDecoder {
public:
  Result<StreamStep> on_event(const SseEvent &event) override {
    StreamStep step;
    json::error_code ec;
    json::value v = json::parse(event.data, ec, {}, lenient());
    if (ec || !v.is_object())
      return Err(Error{ErrorCode::kUnavailable, "upstream sent an invalid stream event", {}});
    const json::object &o = v.as_object();
    const std::string type = text_of(o.if_contains("type"));
    if (type == "error")
      return Err(error_object(o.if_contains("error"), 500));
    if (type == "message_start") {
      if (const json::value *m = o.if_contains("message"); m && m->is_object())
        if (const json::value *u = m->as_object().if_contains("usage"); u && u->is_object())
          add_usage(u->as_object(), usage_);
    } else if (type == "content_block_start") {
      // A tool_use block opens a call: its id and name; the input follows as JSON pieces.
      const json::value *b = o.if_contains("content_block");
      if (b && b->is_object() && text_of(b->as_object().if_contains("type")) == "tool_use" &&
          calls_ < static_cast<int>(api::kMaxTools)) {
        block_call_[block_index(o)] = calls_;
        UpstreamChoice d;
        api::ToolCallDelta call;
        call.index = calls_++;
        call.id = text_of(b->as_object().if_contains("id"));
        call.name = text_of(b->as_object().if_contains("name"));
        d.tool_calls.push_back(std::move(call));
        step.deltas.push_back(std::move(d));
      }
    } else if (type == "content_block_delta") {
      const json::value *d = o.if_contains("delta");
      const std::string dtype =
          d && d->is_object() ? text_of(d->as_object().if_contains("type")) : "";
      if (dtype == "text_delta") {
        std::string t = text_of(d->as_object().if_contains("text"));
        if (!t.empty()) {
          UpstreamChoice d0;
          d0.text = std::move(t);
          step.deltas.push_back(std::move(d0));
        }
      } else if (dtype == "input_json_delta") {
        auto it = block_call_.find(block_index(o));
        std::string part = text_of(d->as_object().if_contains("partial_json"));
        if (it != block_call_.end() && !part.empty()) {
          UpstreamChoice up;
          api::ToolCallDelta call;
          call.index = it->second;
          call.arguments = std::move(part);
          up.tool_calls.push_back(std::move(call));
          step.deltas.push_back(std::move(up));
        }
      }
    } else if (type == "message_delta") {
      if (const json::value *d = o.if_contains("delta"); d && d->is_object()) {
        const json::value *sr = d->as_object().if_contains("stop_reason");
        if (sr && sr->is_string()) {
          UpstreamChoice d0;
          d0.finish_reason = finish_of(text_of(sr));
          step.deltas.push_back(std::move(d0));
        }
      }
      if (const json::value *u = o.if_contains("usage"); u && u->is_object())
        add_usage(u->as_object(), usage_);
    } else if (type == "message_stop") {
      step.usage = usage_;
      step.done = true;
    } // ping, content_block_start/stop and unknown events carry nothing for us
    return step;
  }

private:
  static int64_t block_index(const json::object &o) { return int_of(o, "index"); }

  UpstreamUsage usage_;
  std::map<int64_t, int> block_call_; // content block index -> call index (at most kMaxTools)
  int calls_ = 0;
};

// Adds content blocks as a turn of `role`, joined to the previous turn when it has the same
// role (Anthropic's turns alternate; tool results answering one turn's calls share a message).
void append_blocks(json::array &msgs, const std::string &role, json::array blocks) {
  if (!msgs.empty() && msgs.back().as_object().at("role").as_string() == role) {
    json::value &c = msgs.back().as_object()["content"];
    if (c.is_string()) {
      json::array converted;
      if (!c.as_string().empty())
        converted.push_back(json::object{{"type", "text"}, {"text", c.as_string()}});
      c = std::move(converted);
    }
    for (auto &b : blocks)
      c.as_array().push_back(std::move(b));
    return;
  }
  msgs.push_back(json::object{{"role", role}, {"content", std::move(blocks)}});
}

// OpenAI tools → Anthropic's: {"name", "description", "input_schema"}; tool_choice → {"type":
// "auto" | "any" | "tool" | "none"}, with disable_parallel_tool_use for parallel_tool_calls=false.
void add_tools(const api::InferenceRequest &r, json::object &b) {
  if (r.tools.empty())
    return;
  json::array tools;
  for (const auto &t : r.tools) {
    json::object o{{"name", t.name}};
    if (!t.description.empty())
      o["description"] = t.description;
    json::error_code ec;
    json::value schema = t.parameters.empty() ? json::value() : json::parse(t.parameters, ec);
    if (t.parameters.empty() || ec || !schema.is_object())
      schema = json::object{{"type", "object"}};
    o["input_schema"] = std::move(schema);
    tools.push_back(std::move(o));
  }
  b["tools"] = std::move(tools);
  json::object choice;
  switch (r.tool_choice.mode) {
  case api::ToolChoice::Mode::kAuto: choice["type"] = "auto"; break;
  case api::ToolChoice::Mode::kNone: choice["type"] = "none"; break;
  case api::ToolChoice::Mode::kRequired: choice["type"] = "any"; break;
  case api::ToolChoice::Mode::kFunction:
    choice["type"] = "tool";
    choice["name"] = r.tool_choice.function;
    break;
  }
  if (!r.parallel_tool_calls && r.tool_choice.mode != api::ToolChoice::Mode::kNone)
    choice["disable_parallel_tool_use"] = true;
  b["tool_choice"] = std::move(choice);
}

class AnthropicCodec final : public WireCodec {
public:
  BackendKind kind() const override { return BackendKind::kAnthropic; }

  Result<std::string> path(api::Endpoint endpoint) const override {
    if (endpoint != api::Endpoint::kChatCompletions)
      return Err(Error{ErrorCode::kInvalidArgument,
                       "this model is served by the Anthropic Messages API, which has no "
                       "legacy completions; use /v1/chat/completions",
                       {}});
    return std::string("/messages");
  }

  Result<std::string> request_body(const api::InferenceRequest &r, std::string_view model,
                                   bool stream, int default_max_tokens) const override {
    if (r.endpoint != api::Endpoint::kChatCompletions)
      return Err(path(r.endpoint).error());
    if (r.n != 1)
      return Err(Error::invalid("n > 1 is not supported by this model's backend (Anthropic)", "n"));
    if (r.response_format.type != api::ResponseFormat::Type::kText) {
      return Err(
          Error::invalid("response_format is not supported by this model's backend (Anthropic)",
                         "response_format"));
    }
    if (!r.grammar.empty()) {
      return Err(Error::invalid("'grammar' is not supported by this model's backend (Anthropic)",
                                "grammar"));
    }
    // The Messages API has neither: refused rather than silently dropped.
    if (r.logprobs) {
      return Err(Error::invalid("logprobs are not available from this model's backend (Anthropic)",
                                "logprobs"));
    }
    if (!r.logit_bias.empty()) {
      return Err(Error::invalid("logit_bias is not supported by this model's backend (Anthropic)",
                                "logit_bias"));
    }
    json::object b;
    b["model"] = model;
    b["max_tokens"] = r.max_tokens ? *r.max_tokens : default_max_tokens; // required there
    std::string system;
    json::array msgs;
    for (std::size_t i = 0; i < r.messages.size(); ++i) {
      const auto &m = r.messages[i];
      if (m.role == "system" || m.role == "developer") {
        system += (system.empty() ? "" : "\n\n") + m.content;
        continue;
      }
      const std::string role = m.role == "assistant" ? "assistant" : "user";
      if (m.role == "tool") {
        json::array blocks{json::object{
            {"type", "tool_result"}, {"tool_use_id", m.tool_call_id}, {"content", m.content}}};
        append_blocks(msgs, role, std::move(blocks));
        continue;
      }
      if (!m.tool_calls.empty()) {
        json::array blocks;
        if (!m.content.empty())
          blocks.push_back(json::object{{"type", "text"}, {"text", m.content}});
        for (std::size_t k = 0; k < m.tool_calls.size(); ++k) {
          const auto &c = m.tool_calls[k];
          json::error_code ec;
          json::value input = json::parse(c.arguments, ec);
          if (ec || !input.is_object()) {
            const std::string p = "messages[" + std::to_string(i) + "].tool_calls[" +
                                  std::to_string(k) + "].function.arguments";
            return Err(Error::invalid("'" + p +
                                          "' must be a JSON object for this model's backend "
                                          "(Anthropic)",
                                      p));
          }
          blocks.push_back(json::object{
              {"type", "tool_use"}, {"id", c.id}, {"name", c.name}, {"input", std::move(input)}});
        }
        append_blocks(msgs, role, std::move(blocks));
        continue;
      }
      // Messages must alternate; consecutive turns of one role are joined.
      if (!msgs.empty() && msgs.back().as_object().at("role").as_string() == role) {
        json::value &c = msgs.back().as_object()["content"];
        if (c.is_string()) {
          c.as_string().append("\n\n");
          c.as_string().append(m.content);
        } else if (!m.content.empty()) {
          c.as_array().push_back(json::object{{"type", "text"}, {"text", m.content}});
        }
        continue;
      }
      msgs.push_back(json::object{{"role", role}, {"content", m.content}});
    }
    if (msgs.empty() || msgs.front().as_object().at("role").as_string() != "user")
      msgs.insert(msgs.begin(), json::object{{"role", "user"}, {"content", "(no input)"}});
    add_tools(r, b);
    if (!system.empty())
      b["system"] = system;
    b["messages"] = std::move(msgs);
    const auto &s = r.sampling;
    b["temperature"] = std::min(1.0f, std::max(0.0f, s.temperature)); // Anthropic's range
    if (s.top_p < 1.0f)
      b["top_p"] = s.top_p;
    if (s.top_k > 0)
      b["top_k"] = s.top_k;
    if (!r.stop.empty()) {
      json::array stop;
      for (const auto &x : r.stop)
        stop.push_back(json::string(x));
      b["stop_sequences"] = std::move(stop);
    }
    if (!r.user.empty())
      b["metadata"] = json::object{{"user_id", r.user}};
    if (stream)
      b["stream"] = true;
    return json::serialize(b);
  }

  std::vector<WireHeader> auth_headers(const std::string &api_key) const override {
    std::vector<WireHeader> h{{"anthropic-version", std::string(kApiVersion)}};
    if (!api_key.empty())
      h.push_back({"x-api-key", api_key});
    return h;
  }

  Result<UpstreamResult> parse_response(std::string_view body) const override {
    json::error_code ec;
    json::value v = json::parse(body, ec, {}, lenient());
    if (ec || !v.is_object())
      return Err(Error{ErrorCode::kUnavailable, "upstream sent an invalid JSON response", {}});
    const json::object &o = v.as_object();
    if (text_of(o.if_contains("type")) == "error")
      return Err(error_object(o.if_contains("error"), 500));
    const json::value *content = o.if_contains("content");
    if (!content || !content->is_array())
      return Err(Error{ErrorCode::kUnavailable, "upstream response has no content", {}});
    UpstreamChoice ch;
    for (const json::value &block : content->as_array()) {
      if (!block.is_object())
        continue;
      const json::object &bo = block.as_object();
      const std::string type = text_of(bo.if_contains("type"));
      if (type == "text") {
        ch.text += text_of(bo.if_contains("text"));
      } else if (type == "tool_use" && ch.tool_calls.size() < api::kMaxTools) {
        api::ToolCallDelta call;
        call.index = static_cast<int>(ch.tool_calls.size());
        call.id = text_of(bo.if_contains("id"));
        call.name = text_of(bo.if_contains("name"));
        const json::value *input = bo.if_contains("input");
        call.arguments = input ? utf8_sanitize(json::serialize(*input)) : "{}";
        ch.tool_calls.push_back(std::move(call));
      }
    }
    ch.finish_reason = finish_of(text_of(o.if_contains("stop_reason")));
    UpstreamResult out;
    out.choices.push_back(std::move(ch));
    if (const json::value *u = o.if_contains("usage"); u && u->is_object()) {
      UpstreamUsage usage;
      add_usage(u->as_object(), usage);
      out.usage = usage;
    }
    return out;
  }

  std::unique_ptr<StreamDecoder> stream_decoder() const override {
    return std::make_unique<AnthropicStreamDecoder>();
  }

  Error error_from(int status, std::string_view body) const override {
    json::error_code ec;
    json::value v = json::parse(body.substr(0, 64 * 1024), ec, {}, lenient());
    if (ec || !v.is_object())
      return normalise(status, "", "");
    return error_object(v.as_object().if_contains("error"), status);
  }
};

} // namespace

std::unique_ptr<WireCodec> make_anthropic_codec() { return std::make_unique<AnthropicCodec>(); }

} // namespace gantry::backend::remote
