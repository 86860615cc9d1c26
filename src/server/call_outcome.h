// CallOutcome: how one API call went — who called, which model, what it used and cost, how it
// ended, where the time went. Filled in one place (InferenceService for completions, the
// embeddings route for embeddings, the route prologue for calls refused before either), then
// read by everything that reports on the call: the response headers, the request log and the
// request metrics (CallRecorder), the job executor. No layer parses a body or a header to learn
// any of it.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

#include "control/rate_limiter.h"
#include "core/result.h"

namespace gantry::server {

struct CallOutcome {
  // Who and what (known when the call arrives, before it is parsed).
  std::chrono::steady_clock::time_point arrived{};
  int64_t arrived_unix_ms = 0;
  std::string request_id; // the client-visible x-request-id
  std::string endpoint;   // the route path
  std::string model, project, key_id;
  bool stream = false;

  // How it ended.
  int status = 0;
  std::optional<Error> error; // set when status >= 400 or a stream failed after its start
  std::string finish_reason;  // of choice 0; "error" when a call that ran failed
  int64_t input_tokens = 0, output_tokens = 0, cached_tokens = 0;
  double cost_usd = 0;
  bool cached = false;      // answered from the response (or embedding) cache
  std::string served_by;    // the backend / worker that served it
  std::string served_model; // the fallback model that answered; empty: `model` did
  std::string cache;        // x-gantry-cache: "hit" | "miss" | "bypass"; empty = no header
  bool priced = false;      // settled after it ran (or hit the cache): x-gantry-cost-usd is sent
  std::optional<control::RateSnapshot> rate; // x-ratelimit-* (the admission's or the refusal's)

  // Where the time went (ms; -1 = not measured).
  double ttft_ms = -1, queue_ms = -1, prefill_ms = -1, decode_ms = -1, engine_ms = 0;
  double latency_ms = 0;     // arrival → response complete (set by whoever completes it)
  double cold_start_ms = -1; // held while a replica started (issue 14); -1 = not held
  bool client_gone = false;

  bool failed() const { return status >= 400 || error.has_value(); }
};

} // namespace gantry::server
