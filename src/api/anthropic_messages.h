// Anthropic's Messages API inbound (POST /v1/messages, /v1/messages/count_tokens): a Messages
// body parsed into the typed chat request (system → a system message; text blocks joined;
// tool_use blocks → assistant tool_calls; tool_result blocks → tool messages; input_schema tools
// → FunctionTool; tool_choice auto|any|tool|none → ToolChoice), the call's result rendered back
// as a `message` object or as Anthropic's event stream, and errors in Anthropic's shape.
//
// The stop-reason mapping is shared with the outbound translation
// (backend/remote/anthropic_wire.cpp), which reads Anthropic's answers back into chat's shape.
#pragma once

#include <boost/json/object.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "api/openai.h"
#include "api/tools.h"
#include "api/typed_event.h"
#include "core/result.h"

namespace gantry::api {

// end_turn / stop_sequence / max_tokens / tool_use / refusal → chat's finish reasons.
std::string finish_reason_from_stop_reason(std::string_view stop_reason);
// Chat's finish reasons → Anthropic's stop_reason. Gantry's engine does not report which stop
// string ended a choice, so a natural stop is always "end_turn".
std::string_view stop_reason_from_finish_reason(std::string_view finish_reason);

// Errors name the field in `param`, Anthropic's dotted way ("messages.0.content.1.type").
Result<InferenceRequest> parse_messages_request(std::string_view body);
// The count_tokens body: a Messages body without max_tokens (and nothing about sampling).
Result<InferenceRequest> parse_count_tokens_request(std::string_view body);

struct MessagesMeta {
  std::string id; // "msg_<id>"; tool_use ids without one derive from it
  std::string model;
};

struct MessagesResult {
  std::string text;
  std::vector<ToolCall> tool_calls;
  std::string finish_reason;
  Usage usage;
};

std::string render_message(const MessagesMeta &meta, const MessagesResult &result);
std::string render_count_tokens(int64_t input_tokens);

// Anthropic's error shape: {"type":"error","error":{"type":...,"message":...}} with the status
// Anthropic uses for it (overloads are 529 overloaded_error, limits 429 rate_limit_error).
int anthropic_status(ErrorCode code);
std::string_view anthropic_error_type(ErrorCode code);
std::string render_anthropic_error(const Error &error);
// An error of the shared inference path with its param in this API's field names (a tool's
// schema is tools.i.input_schema here), leading the message as Anthropic's do.
void to_anthropic_param(Error &error);

// The events of one streamed message, in Anthropic's order: message_start, ping; per content
// block content_block_start, content_block_delta (text_delta | input_json_delta)...,
// content_block_stop; message_delta (stop_reason, output usage), message_stop. A failure after the
// start is one `error` event. Not thread-safe (one call's events arrive one at a time).
class MessagesStream {
public:
  explicit MessagesStream(MessagesMeta meta) : meta_(std::move(meta)) {}

  TypedEvents start(const Usage &prompt);
  TypedEvents text(std::string_view delta);
  TypedEvents tool_call(const ToolCallDelta &delta);
  TypedEvents finish(std::string_view finish_reason, const Usage &usage);
  TypedEvents fail(const Error &error);

private:
  void close_open(TypedEvents &out);

  MessagesMeta meta_;
  int blocks_ = 0;          // content blocks started
  std::optional<int> open_; // the block receiving deltas
  bool open_is_text_ = false;
  std::vector<std::pair<int, int>> tools_; // tool-call index -> block
};

} // namespace gantry::api
