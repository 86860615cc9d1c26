// OpenAI's Responses API (POST /v1/responses) over the typed chat request: the body parsed into
// an InferenceRequest (input items → chat messages, function_call / function_call_output items →
// assistant tool_calls / tool messages, text.format → response_format, flat function tools →
// FunctionTool), and the call's result rendered back as a `response` object or as the typed
// stream (response.created ... response.completed) with sequence numbers.
//
// Gantry keeps no response state: `store` is accepted either way and every response reports
// "store": false (the official clients read nothing from it); `previous_response_id`,
// `conversation`, `prompt` and `background` need stored state and are refused naming the field.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <boost/json/object.hpp>

#include "api/openai.h"
#include "api/tools.h"
#include "api/typed_event.h"
#include "core/result.h"

namespace gantry::api {

// The settings a response object echoes back, as the request gave them (normalised).
struct ResponsesSettings {
  std::optional<std::string> instructions;
  std::optional<int> max_output_tokens;
  double temperature = 1.0;
  double top_p = 1.0;
  bool parallel_tool_calls = true;
  std::string tools_json = "[]";                       // the function tools, flat shape
  std::string tool_choice_json = "\"auto\"";           // as given
  std::string text_format_json = R"({"type":"text"})"; // text.format, as given
  std::string metadata_json = "{}";
  std::optional<std::string> user;
};

struct ResponsesRequest {
  InferenceRequest request; // endpoint kChatCompletions, n = 1
  ResponsesSettings settings;
};

// Errors name the field in `param` ("input[1].content[0].type", "text.format.schema").
Result<ResponsesRequest> parse_responses_request(std::string_view body);

// A field of the chat request the Responses body was translated into, named as the client
// wrote it: errors found after parsing (a schema the grammar compiler refuses, a prompt over
// the context) must name the Responses field ("response_format.json_schema.schema" →
// "text.format.schema", "messages[i]" → "input", "max_tokens" → "max_output_tokens").
std::string responses_param(std::string_view chat_param);

struct ResponsesMeta {
  std::string id; // "resp_<id>"; output item ids derive from it
  std::string model;
  int64_t created_at = 0; // unix seconds
};

// A finished call's output (choice 0).
struct ResponsesResult {
  std::string text;
  std::vector<ToolCall> tool_calls;
  std::string finish_reason; // "stop" | "length" | "tool_calls" | ...
  Usage usage;
};

// The non-streamed body: status "completed", or "incomplete" with incomplete_details.reason
// "max_output_tokens" when the output was cut at the limit.
std::string render_responses_object(const ResponsesMeta &meta, const ResponsesSettings &settings,
                                    const ResponsesResult &result);

// The typed events of one streamed response, in OpenAI's order: response.created and
// response.in_progress; per output item output_item.added, (content_part.added,
// output_text.delta..., output_text.done, content_part.done) or (function_call_arguments.delta...,
// function_call_arguments.done), output_item.done; then response.completed (or
// response.incomplete / response.failed). A message item opens at the first text; a tool call's
// first fragment closes the open message and opens a function_call item.
// Not thread-safe: one call's events arrive one at a time (InferenceSink's contract).
class ResponsesStream {
public:
  ResponsesStream(ResponsesMeta meta, ResponsesSettings settings);

  TypedEvents start();
  TypedEvents text(std::string_view delta);
  TypedEvents tool_call(const ToolCallDelta &delta);
  TypedEvents finish(std::string_view finish_reason, const Usage &usage);
  TypedEvents fail(const Error &error);

private:
  struct Item {
    bool function = false;
    std::string id, call_id, name, text; // text: the message's text or the call's arguments
  };
  TypedEvent event(std::string type, boost::json::object body);
  void open_message(TypedEvents &out);
  void close_open(TypedEvents &out, bool complete);
  TypedEvents end(std::string type, std::string_view status, const Usage *usage, const Error *error,
                  bool complete);

  ResponsesMeta meta_;
  ResponsesSettings settings_;
  int64_t seq_ = 0;
  std::vector<Item> items_;
  std::optional<size_t> open_;                     // the item receiving deltas
  std::vector<std::pair<int, size_t>> tool_items_; // tool-call index -> item
};

} // namespace gantry::api
