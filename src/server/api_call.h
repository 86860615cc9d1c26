// The prologue every metered API route shares (/v1/chat/completions, /v1/completions,
// /v1/embeddings): a server-owned call id, the call's CallOutcome and the ObservedWriter that
// records it exactly once, the shutdown check, authentication, and the one way an error is
// answered (typed into the outcome, rendered by the HTTP edge).
//
// Threading: everything here runs on the I/O thread that received the request.
#pragma once

#include <atomic>
#include <memory>
#include <optional>
#include <string>

#include "control/control_plane.h"
#include "core/clock.h"
#include "http/request.h"
#include "http/response.h"
#include "http/response_writer.h"
#include "server/auth_outcome.h"
#include "server/call_outcome.h"
#include "server/call_recorder.h"

namespace gantry::server {

// Appends x-ratelimit-* for a rate snapshot (only the limits that apply).
void append_rate_headers(const control::RateSnapshot &s, http::Headers &headers);
// The headers a CallOutcome puts on its response: x-ratelimit-*, x-gantry-cache and, for a
// non-streamed call that ran, x-gantry-cost-usd.
void add_outcome_headers(const CallOutcome &outcome, http::Headers &headers);
// The error response of a call (its Retry-After and the outcome's headers included).
http::Response outcome_error_response(const CallOutcome &outcome);

// Which headers carry a route's API key. Anthropic's clients send `x-api-key`; the Messages
// routes accept it when no Authorization header is present (the same keys, the same checks).
enum class KeyHeaders { kBearer, kBearerOrXApiKey };
// The credentials in Authorization's form ("Bearer <key>"), or nullopt when none was sent.
std::optional<std::string> request_credentials(const http::Request &req, KeyHeaders which);

class ApiCalls {
public:
  ApiCalls(control::ControlPlane &control, const Clock &clock, CallRecorder &recorder,
           const std::atomic<bool> &shutting_down)
      : control_(control), clock_(clock), recorder_(recorder), shutting_down_(shutting_down) {}

  // Starts the record of a call: fills who/what and wraps `w` so the record is written when
  // the response ends. Gives `req` a call id when an in-process caller named none.
  std::shared_ptr<CallOutcome> begin(http::Request &req, std::shared_ptr<http::ResponseWriter> &w);
  // A fresh outcome for an in-process caller (a job), recorded by the caller via record().
  CallOutcome outcome(const std::string &request_id, const std::string &endpoint) const;
  void record(CallOutcome &outcome) { recorder_.record(outcome); }

  // False when shutting down (answered 503).
  bool open(http::ResponseWriter &w, CallOutcome &rec);
  // Authenticates the call; a refusal is answered (401 + WWW-Authenticate) and recorded.
  AuthOutcome authenticate(const http::Request &req, http::ResponseWriter &w, CallOutcome *rec,
                           KeyHeaders which = KeyHeaders::kBearer);
  // Answers `error` and types it into the record.
  void fail(http::ResponseWriter &w, CallOutcome &rec, Error error);

  // A worker node (roles, issue 13): every API call must carry this internal token (the gateways
  // send it); keys are not consulted, and the call runs without a principal (the gateway admitted
  // and bills it). Set once at start-up, before serving.
  void require_internal_token(std::string token) { internal_token_ = std::move(token); }
  bool internal_only() const { return !internal_token_.empty(); }
  // Whether `credentials` ("Bearer ...") carry the internal token (constant time).
  bool internal_token_ok(const std::optional<std::string> &credentials) const;

  control::ControlPlane &control() { return control_; }
  const Clock &clock() const { return clock_; }
  bool shutting_down() const { return shutting_down_.load(); }

private:
  control::ControlPlane &control_;
  const Clock &clock_;
  CallRecorder &recorder_;
  const std::atomic<bool> &shutting_down_;
  std::string internal_token_; // never logged
};

} // namespace gantry::server
