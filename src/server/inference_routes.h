// POST /v1/chat/completions and /v1/completions over HTTP: the route prologue (ApiCalls),
// Idempotency-Key handling, parsing the body into a typed request, then InferenceService::run
// with a sink that renders the call through the api/ renderers — one JSON body, or SSE chunks
// as the backend's events arrive.
//
// Threading: handle() runs on an I/O thread; the sink runs where the service calls it (the
// prepare pool, the engine thread).
#pragma once

#include <memory>

#include "api/openai.h"
#include "http/request.h"
#include "http/response_writer.h"
#include "server/api_call.h"
#include "server/inference_service.h"

namespace gantry::server {

class InferenceRoutes {
public:
  InferenceRoutes(ApiCalls &calls, InferenceService &service) : calls_(calls), service_(service) {}

  void handle(api::Endpoint endpoint, http::Request &&req, std::shared_ptr<http::ResponseWriter> w);

private:
  // False when the Idempotency-Key answered the call itself (replay, conflict, mismatch);
  // otherwise `w` may now record the response for later replays.
  bool idempotency(const http::Request &req, const std::optional<control::Principal> &principal,
                   std::shared_ptr<http::ResponseWriter> &w, std::shared_ptr<CallOutcome> rec);

  ApiCalls &calls_;
  InferenceService &service_;
};

// Renders a call's head, events and outcome onto a ResponseWriter (exposed for tests).
std::shared_ptr<InferenceSink> http_inference_sink(std::shared_ptr<http::ResponseWriter> writer,
                                                   std::shared_ptr<CallOutcome> record);

} // namespace gantry::server
