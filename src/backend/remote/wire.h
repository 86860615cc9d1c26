// The wire formats Gantry speaks to a remote engine, one codec per backend kind:
// `openai-compatible` and `openai` (the OpenAI API: vLLM, SGLang, TGI, llama.cpp server, another
// Gantry, or OpenAI itself) and `anthropic` (the Messages API, translated to and from the OpenAI
// shape). A codec turns Gantry's typed request into the upstream body and the upstream's answer
// (one JSON body, or SSE events) into typed results; it does no I/O, so it is tested on bytes.
//
// Upstream text is never trusted: invalid UTF-8 is repaired (U+FFFD), malformed JSON is an
// error, and error messages are cut to a bound and scrubbed of credentials before a client sees
// them (see scrub_upstream_message).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "api/openai.h"
#include "backend/remote/sse_parser.h"
#include "core/result.h"

namespace gantry::backend::remote {

enum class BackendKind { kOpenAICompatible, kOpenAI, kAnthropic };
Result<BackendKind> backend_kind_from_name(std::string_view name);
std::string_view backend_kind_name(BackendKind kind);

struct UpstreamUsage {
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  int64_t cached_tokens = 0;
  // Gantry's extension (usage.cost_usd, or the x-gantry-cost-usd header of a whole response):
  // what the upstream charged; kept only from members trusted to price (reports_cost).
  std::optional<double> cost_usd;
};

// A reported cost in USD (usage.cost_usd, x-gantry-cost-usd): nullopt unless a finite number in
// [0, 1e6] — one call never costs more, and a junk value must not reach a ledger.
std::optional<double> plausible_cost(double usd);
std::optional<double> parse_cost(std::string_view text);

struct UpstreamChoice {
  int index = 0;
  std::string text;
  std::string finish_reason; // OpenAI's words: "stop" | "length" | "content_filter" | ...
  // Tool calls: whole calls (a response body: one fragment each with id, name and arguments) or
  // streamed fragments, numbered per choice.
  std::vector<api::ToolCallDelta> tool_calls;
  std::vector<api::TokenLogprob> logprobs; // the upstream's, when the request asked for them
};

struct UpstreamResult {
  std::vector<UpstreamChoice> choices;
  std::optional<UpstreamUsage> usage;
};

// What one upstream event means.
struct StreamStep {
  std::vector<UpstreamChoice> deltas; // text pieces, and a finish_reason when a choice ends
  std::optional<UpstreamUsage> usage; // the usage chunk (stream_options.include_usage)
  bool done = false;                  // the stream's own end marker ([DONE], message_stop)
};

// A header the codec adds (authentication, API version).
struct WireHeader {
  std::string name;
  std::string value;
};

// The state of one streamed response. Owned by the thread reading it.
class StreamDecoder {
public:
  virtual ~StreamDecoder() = default;
  // An upstream error inside the stream (an `error` event) is returned as an Error.
  virtual Result<StreamStep> on_event(const SseEvent &event) = 0;
};

class WireCodec {
public:
  virtual ~WireCodec() = default;
  virtual BackendKind kind() const = 0;
  // The path below the backend's base URL (".../v1") for `endpoint`; kUnsupported when the
  // kind has none (Anthropic has no legacy completions).
  virtual Result<std::string> path(api::Endpoint endpoint) const = 0;
  // `max_tokens` is the request's, or the server's default when it gave none.
  virtual Result<std::string> request_body(const api::InferenceRequest &request,
                                           std::string_view upstream_model, bool stream,
                                           int default_max_tokens) const = 0;
  // The errors request_body would return for `request`, found before admission. The default
  // builds a body and drops it; a codec that knows its few refusals checks just those.
  virtual Status check_request(const api::InferenceRequest &request) const {
    GANTRY_TRY(request_body(request, "m", false, 16));
    return Ok();
  }
  virtual std::vector<WireHeader> auth_headers(const std::string &api_key) const = 0;
  virtual Result<UpstreamResult> parse_response(std::string_view body) const = 0;
  virtual std::unique_ptr<StreamDecoder> stream_decoder() const = 0;
  // A non-2xx answer, normalised to Gantry's error codes (hence OpenAI's shape on the wire).
  virtual Error error_from(int status, std::string_view body) const = 0;
};

std::unique_ptr<WireCodec> make_codec(BackendKind kind);

// The model ids of a /v1/models body (OpenAI's list shape).
Result<std::vector<std::string>> parse_model_list(std::string_view body);

// The upstream model to call: the configured one, else the only one /v1/models lists; an
// ambiguous or empty list is a start-up error naming the backend and the choices.
Result<std::string> choose_upstream_model(std::string_view configured,
                                          const std::vector<std::string> &listed,
                                          std::string_view backend_label);

// Removes what must never reach a client from upstream text: URL user-info
// ("https://user:secret@host" → "https://***@host"), bearer tokens, "sk-..."-style keys and the
// given secrets (the backend's own API key). Cut to `max_bytes`, valid UTF-8.
std::string scrub_upstream_message(std::string_view text, const std::vector<std::string> &secrets,
                                   std::size_t max_bytes = 512);

// Retry-After (delta-seconds) or retry-after-ms of an upstream answer, in milliseconds; 0 when
// absent or unparsable. HTTP-dates are not honoured (treated as absent).
int64_t retry_after_ms(std::optional<std::string_view> retry_after,
                       std::optional<std::string_view> retry_after_ms_header);

namespace detail {
// The OpenAI stream chunk decoder's two paths (exposed for the test that compares them): the
// common text chunk without a JSON document (nullopt for any other shape), and the DOM decoder,
// which takes every chunk.
std::optional<StreamStep> decode_common_chunk(std::string_view data);
Result<StreamStep> decode_chunk_dom(std::string_view data);
// The OpenAI request body's two builders (exposed for the test that compares them): written by
// hand for plain text requests (nullopt when the request has tools, tool history, logprobs,
// logit_bias, a response format, a grammar or token-id prompts), and through a Boost.JSON
// document for every request. Where the first answers, its bytes are the second's.
std::optional<std::string> openai_body_plain(const api::InferenceRequest &request,
                                             std::string_view model, bool stream,
                                             int default_max_tokens, BackendKind kind);
Result<std::string> openai_body_dom(const api::InferenceRequest &request, std::string_view model,
                                    bool stream, int default_max_tokens, BackendKind kind);
} // namespace detail

} // namespace gantry::backend::remote
