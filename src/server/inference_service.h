// InferenceService: one typed completion or chat call, from the parsed request to its
// CallOutcome — the pipeline every caller shares (the HTTP routes, the job executor):
//
//   find the model's backend → prepare (template, tokenize, context check — on the prepare
//   pool, never on an I/O thread) → response-cache lookup → admission (ControlPlane: limits,
//   quotas, budgets, breaker) → the backend call (or the cached result, replayed as events) →
//   settlement (cost, ledger) and the cache write → ONE CallOutcome.
//
// The caller hands in an InferenceSink: on_head() once the call is admitted and running, the
// backend's ChoiceEvents, then exactly one on_complete() with the outcome (also for refusals and
// errors, which never call on_head). The sink decides the wire format: JSON body or SSE for HTTP
// (server/inference_routes), a typed result for a job.
//
// Threading: run() is called on any thread and returns quickly (the CPU-heavy prepare step is
// posted to the bounded prepare pool). Sink methods run on the pool's thread, the backend's
// event thread (the engine thread) or the caller's, one at a time and in order.
#pragma once

#include <algorithm>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "api/openai.h"
#include "backend/model_backend.h"
#include "control/control_plane.h"
#include "core/clock.h"
#include "server/call_outcome.h"
#include "server/model_registry.h"
#include "server/prepare_pool.h"
#include "server/response_cache.h"
#include "telemetry/metrics.h"

namespace gantry::server {

struct InferenceInput {
  api::InferenceRequest request;
  std::optional<control::Principal> principal; // nullopt when auth is off
  std::string call_id;                         // server-generated: the ledger's unique key
  // The response's "id" after its prefix: server-chosen, never the client's X-Request-Id
  // (audit I; http::response_id). Empty: the call id.
  std::string response_id;
  std::optional<std::string> cache_control; // the request's Cache-Control header
};

// What a sink needs before the first event to start its response.
struct CallHead {
  api::ResponseMeta meta;
  api::Endpoint endpoint = api::Endpoint::kChatCompletions;
  int n = 1;                     // choices in all (prompts × the request's n)
  int choices_per_prompt = 1;    // choice i answers prompt i / choices_per_prompt
  std::vector<std::string> echo; // completions' echo text per prompt (empty: none)
  bool stream = false;
  bool include_usage = false;
  bool logprobs = false; // choices carry logprobs (an empty list still renders as one)

  const std::string &echo_of(int choice) const {
    static const std::string none;
    const size_t prompt = static_cast<size_t>(choice / std::max(choices_per_prompt, 1));
    return prompt < echo.size() ? echo[prompt] : none;
  }
  int64_t prompt_tokens = 0; // as prepared (an estimate for a remote backend): a stream's start
  // A remote model's stream whose sink opens it at the first event or progress comment (see
  // InferenceSink::opens_on_first_event) instead of at on_head.
  bool open_on_first_event = false;
};

// The generated choices (non-streamed calls only; a stream already delivered them as events).
struct CallOutput {
  std::vector<api::Choice> choices;
};

class InferenceSink {
public:
  virtual ~InferenceSink() = default;
  // The call runs (admitted and started, or answered from the cache). `cancel` stops it (a
  // client that went away); the outcome still follows.
  virtual void on_head(const CallHead &head, const CallOutcome &so_far,
                       std::function<void()> cancel) = 0;
  virtual void on_event(const CallHead &head, const backend::ChoiceEvent &event) = 0;
  // A comment before the first event while the call waits for a replica (issue 14's cold start):
  // a stream relays it as an SSE comment; the default ignores it.
  virtual void on_progress(const CallHead &head, std::string_view comment) {
    (void)head;
    (void)comment;
  }
  // Exactly once. `head` is null when the call never started (a refusal or a bad request).
  virtual void on_complete(const CallHead *head, CallOutcome &outcome,
                           const CallOutput &output) = 0;
  // True when the sink can hold a remote stream's head until something came from upstream (the
  // first event or progress comment), and answer a call that failed before that with its HTTP
  // status instead of an opened stream's error event: clients and their SDKs' retries see the
  // 429/5xx, as they do for the same call unstreamed. The call then sets
  // CallHead::open_on_first_event.
  virtual bool opens_on_first_event() const { return false; }
};

struct InferenceServiceConfig {
  backend::PrepareOptions prepare;
  bool metrics = true; // observe inter-token gaps
  // `[cache] share_across_projects`: one cache scope for every project (audit M2 opt-in).
  bool share_cache_across_projects = false;
};

class InferenceService {
public:
  InferenceService(ModelRegistry &models, control::ControlPlane &control, ResponseCache &cache,
                   PreparePool &pool, telemetry::Registry &metrics, const Clock &clock,
                   InferenceServiceConfig config);

  // `outcome` arrives with who/what already filled (arrival, request id, endpoint, key,
  // project); the service fills the rest and hands it to sink->on_complete.
  void run(InferenceInput input, CallOutcome outcome, std::shared_ptr<InferenceSink> sink);
  // The prompt tokens `input.request` would cost on its model, from the backend's prepare()
  // (exact for local models; an estimate for remote ones): nothing is admitted, charged or run.
  // The key's model allow-list applies (403). `done` runs once, on this thread or the prepare
  // pool's.
  void count_tokens(InferenceInput input, std::function<void(Result<int64_t>)> done);
  // Whether `model` is served here, local or remote (jobs and batches check at submission).
  bool serves(std::string_view model) const { return models_.find(model) != nullptr; }

private:
  class Call;
  // The model's inter-token latency histogram, looked up in the registry once per model: the
  // lookup (name, help, label and bucket copies, the registry's lock) cost 2.5K instructions a
  // call, 2 % of a proxied request.
  telemetry::Histogram &inter_token_histogram(const std::string &model);
  ModelRegistry &models_;
  control::ControlPlane &control_;
  ResponseCache &cache_;
  PreparePool &pool_;
  telemetry::Registry &metrics_;
  const Clock &clock_;
  const InferenceServiceConfig config_;
  std::mutex inter_token_mu_;
  // Bounded: served model names only, and never more than kMaxCachedHistograms of them.
  std::unordered_map<std::string, telemetry::Histogram *> inter_token_by_model_;
  static constexpr size_t kMaxCachedHistograms = 1024;
};

} // namespace gantry::server
