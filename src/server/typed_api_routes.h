// POST /v1/responses (OpenAI's Responses API) and POST /v1/messages,
// /v1/messages/count_tokens (Anthropic's Messages API): the same InferenceService call as
// /v1/chat/completions — keys, limits, quotas, budgets, cost, the response cache, the request log
// and metrics (CallOutcome's endpoint is the route path) — with sinks that render the call
// through api/responses.h and api/anthropic_messages.h, streamed as named SSE events.
//
// The Messages routes also take the key from `x-api-key` and answer every error, the prologue's
// 401/429/503 included, in Anthropic's shape (overloads as 529 overloaded_error). Neither API takes
// an Idempotency-Key (their streams are named events, which the idempotency store does not keep);
// jobs and batches accept only the chat and completions bodies.
//
// Threading: the handlers run on an I/O thread; the sinks run where the service calls them (the
// prepare pool, the engine thread), one call at a time.
#pragma once

#include <memory>

#include "api/anthropic_messages.h"
#include "api/responses.h"
#include "http/request.h"
#include "http/response_writer.h"
#include "server/api_call.h"
#include "server/inference_service.h"

namespace gantry::server {

class TypedApiRoutes {
public:
  TypedApiRoutes(ApiCalls &calls, InferenceService &service) : calls_(calls), service_(service) {}

  void responses(http::Request &&req, std::shared_ptr<http::ResponseWriter> w);
  void messages(http::Request &&req, std::shared_ptr<http::ResponseWriter> w);
  void count_tokens(http::Request &&req, std::shared_ptr<http::ResponseWriter> w);

private:
  // The Messages routes' prologue: the record, Anthropic-shaped errors, shutdown and auth (from
  // x-api-key too). Null when it answered the call itself.
  std::shared_ptr<CallOutcome> messages_prologue(http::Request &req,
                                                 std::shared_ptr<http::ResponseWriter> &w,
                                                 std::optional<control::Principal> &principal);

  ApiCalls &calls_;
  InferenceService &service_;
};

// True for the paths whose errors are in Anthropic's shape and whose key may come in x-api-key.
bool is_anthropic_path(std::string_view path);

// A ResponseWriter decorator that answers a call's errors in Anthropic's shape: the body of any
// response with status >= 400 becomes {"type":"error","error":{...}} from the call's typed error,
// with Anthropic's status for it (exposed for tests).
std::shared_ptr<http::ResponseWriter>
anthropic_error_writer(std::shared_ptr<http::ResponseWriter> w,
                       std::shared_ptr<CallOutcome> record);

// The sinks (exposed for tests).
std::shared_ptr<InferenceSink> responses_sink(std::shared_ptr<http::ResponseWriter> writer,
                                              std::shared_ptr<CallOutcome> record,
                                              std::string response_id,
                                              api::ResponsesSettings settings);
std::shared_ptr<InferenceSink> messages_sink(std::shared_ptr<http::ResponseWriter> writer,
                                             std::shared_ptr<CallOutcome> record,
                                             std::string message_id);

} // namespace gantry::server
