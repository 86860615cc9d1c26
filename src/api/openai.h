// The OpenAI wire format: JSON request bodies parsed into native request types at the edge, and
// native results rendered back into OpenAI-shaped JSON and SSE chunks. Nothing else in Gantry
// knows the JSON field names.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "api/cache_option.h"
#include "api/chat_template.h"
#include "api/tools.h"
#include "core/result.h"
#include "engine/sampling/sampler.h"

namespace gantry::api {

enum class Endpoint { kChatCompletions, kCompletions };

// Largest `n` we accept: each choice is a sequence in the engine, so n multiplies the cost.
constexpr int kMaxChoices = 16;
// Completions may carry several prompts (each its own n choices; choice index =
// prompt_index * n + j, as OpenAI and vLLM number them): at most this many prompts, and at most
// kMaxTotalChoices sequences for the whole request.
constexpr int kMaxPrompts = 32;
constexpr int kMaxTotalChoices = 64;
// top_logprobs (chat) and logprobs (completions) range over 0..kMaxTopLogprobs.
constexpr int kMaxTopLogprobs = 20;
// logit_bias holds at most this many token ids.
constexpr int kMaxLogitBias = 1024;

// response_format: free text, any JSON object, or JSON matching a schema. Enforced by
// constrained decoding for local models; passed through to remote backends.
struct ResponseFormat {
  enum class Type { kText, kJsonObject, kJsonSchema };
  Type type = Type::kText;
  std::string name;   // json_schema.name
  std::string schema; // json_schema.schema as JSON text
  bool strict = false;
};

// One prompt of a completions request: text, or token ids.
struct Prompt {
  std::string text;
  std::optional<std::vector<int32_t>> ids;
};

struct InferenceRequest {
  Endpoint endpoint = Endpoint::kChatCompletions;
  std::string model;
  std::vector<ChatMessage> messages; // chat
  std::vector<Prompt> prompts;       // completions: one or more (kMaxPrompts), in order
  engine::SamplingParams sampling;
  std::optional<int> max_tokens; // absent: up to the context (capped by the server's default)
  std::vector<std::string> stop;
  bool stream = false;
  bool include_usage = false; // stream_options.include_usage
  int n = 1;
  bool echo = false;       // completions: prepend the prompt to the text
  bool ignore_eos = false; // vLLM extension
  std::string user;
  CacheOption cache;

  // Structured outputs (chat: response_format; both: the llama.cpp-style GBNF `grammar`).
  ResponseFormat response_format;
  std::string grammar;
  // Tool calling (chat).
  std::vector<FunctionTool> tools;
  ToolChoice tool_choice;
  bool parallel_tool_calls = true;
  // Log-probabilities: chat's logprobs=true (+ top_logprobs 0..20); completions' logprobs=N sets
  // logprobs=true and top_logprobs=N.
  bool logprobs = false;
  int top_logprobs = 0;
  // logit_bias: token id -> bias added to its logit before sampling (-100..100).
  std::vector<std::pair<int32_t, float>> logit_bias;
};

// Parses and validates a body. Errors carry the offending field in `param` and a message in
// OpenAI's style; unknown fields are rejected (as the OpenAI API does) so that typos surface.
Result<InferenceRequest> parse_inference_request(Endpoint endpoint, std::string_view body);

struct Usage {
  int prompt_tokens = 0;
  int completion_tokens = 0;
  int cached_tokens = 0;
};

// The log-probability of one generated token, and the most likely alternatives at its step.
struct TopLogprob {
  std::string token; // the token's text (may be an incomplete UTF-8 piece)
  std::string bytes; // the token's raw bytes (OpenAI's "bytes" array)
  double logprob = 0;
};
struct TokenLogprob {
  std::string token;
  std::string bytes;
  double logprob = 0;
  std::vector<TopLogprob> top;
  // Completions' text_offset: where the token's text starts in the choice's text (echo
  // included), in characters; filled by the server as it renders, not by backends.
  int64_t text_offset = 0;
};

struct Choice {
  int index = 0;
  std::string text;
  std::string finish_reason; // "stop" | "length" | "tool_calls" | "content_filter"
  std::optional<std::vector<TokenLogprob>> logprobs; // set when the request asked for them
  std::vector<ToolCall> tool_calls;
};

struct ResponseMeta {
  std::string id; // "chatcmpl-..." / "cmpl-..."
  std::string model;
  int64_t created = 0; // unix seconds
};

std::string render_response(Endpoint endpoint, const ResponseMeta &meta,
                            const std::vector<Choice> &choices, const Usage &usage);

// What one streaming chunk carries for one choice. `role` adds {"role":"assistant"} (the first
// chat chunk); `finish_reason` empty means null; `logprobs` null means "logprobs": null.
struct ChoiceDelta {
  int index = 0;
  std::string_view text;
  bool role = false;
  std::string_view finish_reason;
  const std::vector<TokenLogprob> *logprobs = nullptr;
  const std::vector<ToolCallDelta> *tool_calls = nullptr;
};

// One streaming chunk. include_usage adds "usage":null as OpenAI does.
std::string render_chunk(Endpoint endpoint, const ResponseMeta &meta, const ChoiceDelta &delta,
                         bool include_usage);
// The final usage-only chunk of stream_options.include_usage (empty choices). `cost_usd`, when
// given, is added as usage.cost_usd (a streamed response has no x-gantry-cost-usd header; the
// official clients pass unknown usage fields through).
std::string render_usage_chunk(Endpoint endpoint, const ResponseMeta &meta, const Usage &usage,
                               std::optional<double> cost_usd = std::nullopt);

struct ModelCard {
  std::string id;
  int64_t created = 0;
  int context_length = 0;
  // Placement (issue 14): "loaded" or "unloaded" (loads on the first request), rendered as
  // llama.cpp's router mode does: "status": {"value": ...}. Empty: not shown.
  std::string status;
};
std::string render_model_list(const std::vector<ModelCard> &models);
std::string render_model(const ModelCard &model);

std::string id_prefix(Endpoint endpoint);

} // namespace gantry::api
