// The ModelBackend port: everything that serves a model — the local engine worker, a remote
// OpenAI-compatible engine (vLLM, SGLang, another Gantry), a hosted API — looks like this to
// the InferenceService above it. The service owns admission, caching, settlement and the wire
// format; a backend owns only "turn this typed request into tokens and tell me what it cost".
//
// One call, in two steps:
//   1. prepare(request) → PreparedCall: everything admission needs BEFORE anything is spent
//      (prompt tokens per choice — exact for the local engine, an estimate flagged as such for a
//      remote one and settled later on the backend's real usage —, max output tokens, the echo
//      text, the bytes that identify the output for the response cache) plus adapter-private
//      state (token ids; an upstream body). Input errors (bad template, token id outside the
//      vocabulary, context exceeded) are returned here as values: a plain 400 before any stream.
//      prepare() may be CPU-heavy (templating, tokenizing): callers run it off I/O threads.
//   2. start(prepared, sink) → CallHandle: the generation runs; the sink receives ChoiceEvents
//      and then exactly one CallSummary. cancel() on the handle stops it (a summary still
//      follows, with an error).
//
// Embeddings go through the same port: prepare_embeddings() (token counts and per-input cache
// material, for admission and the embedding cache), then embed() for the inputs the cache did
// not answer.
//
// Threading: every method is thread-safe. The sink's and the done callbacks' methods may run on
// any thread (the engine thread, a remote adapter's I/O thread) but never inside the call that
// started them (start(), embed()), so a caller may hold its own lock across start().
// Events of one call are delivered one at a time, in order; on_done is the last call.
//
// Core module: depends on core/, api/ (the typed request) and the engine's sampling types only —
// never Beast, Asio, SQLite or server/.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "api/embeddings.h"
#include "api/openai.h"
#include "core/result.h"

namespace gantry::backend {

// What a backend is, for /v1/models, /readyz, metrics and the request log.
struct BackendInfo {
  std::string name;       // the served model name clients send as "model"
  std::string kind;       // "local", "openai-compatible", "openai", "anthropic", ...
  int context_length = 0; // tokens per sequence; 0 when unknown (remote without metadata)
  int64_t created = 0;    // unix seconds (the /v1/models "created" field)
  int embedding_dims = 0; // 0 when unknown or not an embedding model
  // Identifies the weights behind the name (the local file's digest; a remote's model id and
  // URL) so a cache entry of one model is never served for another under the same name.
  std::string identity;
};

// Server-wide settings that shape a request during prepare().
struct PrepareOptions {
  int default_max_tokens = 4096; // when the request names no max_tokens (capped by the context)
  // The caller's cache scope (its project, or "" where projects share caches; audit M2): the
  // local engine roots its prefix-cache chain in it, so one project's prompts never warm (or
  // reveal through timing) another's.
  std::string cache_scope;
  // False when the response cache will not look the call up (off, or the request's policy
  // neither reads nor writes): a backend may then skip building the call's cache material.
  bool wants_cache_material = true;
};

// The result of prepare(): what admission and the response cache need, and the adapter's state.
struct PreparedCall {
  api::Endpoint endpoint = api::Endpoint::kChatCompletions;
  int n = 1;                  // choices in all: prompts × the request's n
  int choices_per_prompt = 1; // the request's n; choice i answers prompt i / choices_per_prompt
  // All prompts together, each counted once for its choices.
  int64_t prompt_tokens = 0;
  bool prompt_tokens_estimated = false; // true: settle on the backend's reported usage
  int64_t max_output_tokens = 0;        // per choice (the largest when prompts differ)
  // Completions' echo=true: one text per prompt, prepended to that prompt's choices; empty: none.
  std::vector<std::string> echo;
  bool logprobs = false; // the choices' events carry TokenLogprobs
  // Bytes that identify the generated output (model identity, prompt, every sampling field);
  // empty when the output is not reproducible (sampled without a seed) and must not be cached.
  std::string cache_material;
  std::shared_ptr<void> state; // adapter-private (token ids for local; the upstream body remote)

  const std::string &echo_of(int choice) const {
    static const std::string none;
    const size_t prompt = static_cast<size_t>(choice / std::max(choices_per_prompt, 1));
    return prompt < echo.size() ? echo[prompt] : none;
  }
};

// One piece of one choice's output.
struct ChoiceEvent {
  int choice = 0;
  std::string text;          // text released by this event (UTF-8 complete); may be empty
  int tokens = 0;            // tokens generated by this event (a token whose text is held back
                             // for a stop string or an incomplete UTF-8 sequence still counts)
  std::string finish_reason; // non-empty on the choice's last event: "stop" | "length" | ...
  // The tokens of this event with their log-probabilities (when the request asked for them).
  std::vector<api::TokenLogprob> logprobs;
  // Tool-call fragments parsed out of the output (local) or relayed from upstream (remote).
  std::vector<api::ToolCallDelta> tool_calls;
};

struct BackendUsage {
  int64_t prompt_tokens = 0;     // as the backend counted them (exact, even when prepare guessed)
  int64_t completion_tokens = 0; // all choices
  int64_t cached_tokens = 0;     // prompt tokens served from a prefix cache (best choice)
};

// Where the time of a call went, measured by the backend (-1 = unknown).
struct BackendTimings {
  double queue_ms = -1;      // submitted → first engine step (or upstream request sent)
  double prefill_ms = -1;    // first engine step → first token
  double decode_ms = -1;     // first token → last token
  double engine_seconds = 0; // this call's share of engine time (per-hour pricing)
};

struct BackendError {
  Error error;
  // True when nothing of the call reached the sink before the failure: a pool may retry it on
  // another backend or fall back to another model without the client seeing anything.
  bool before_output = true;
};

// Exactly one per started call, after the last ChoiceEvent.
struct CallSummary {
  BackendUsage usage;
  BackendTimings timings;
  std::string finish_reason; // of choice 0; empty when it did not finish
  std::string served_by;     // the backend or worker that served it (the request log's worker)
  // The model that answered when a fallback took over (empty: the model asked for). The call is
  // priced at this model's price: the fallback's backend is what the tokens cost.
  std::string served_model;
  // What a Gantry worker that served the call charged for it (its x-gantry-cost-usd header or
  // usage.cost_usd), read only from members a gateway trusts to price (WorkerPools' workers).
  std::optional<double> reported_cost_usd;
  std::optional<BackendError> error; // set when the call failed or was cancelled
  // How long the call was held waiting for a replica to start (a cold start, issue 14); -1 when
  // it was not held.
  double cold_start_ms = -1;
};

class CallSink {
public:
  virtual ~CallSink() = default;
  virtual void on_event(const ChoiceEvent &event) = 0;
  virtual void on_done(const CallSummary &summary) = 0;
  // A sign of life before the first event while the call waits for a replica to start (issue
  // 14): "loading model 63%". A stream relays it as an SSE comment line; others ignore it.
  virtual void on_progress(std::string_view comment) { (void)comment; }
};

class CallHandle {
public:
  virtual ~CallHandle() = default;
  // Stops the call as soon as the backend can (the engine's next step; closing the upstream
  // connection). Idempotent; on_done still follows.
  virtual void cancel() = 0;
};

// Embeddings: the inputs' token counts (for admission) and what identifies each input's vector.
struct PreparedEmbeddings {
  std::vector<int64_t> input_tokens;       // per input
  bool tokens_estimated = false;           // remote without a tokenizer: settle on reported usage
  std::vector<std::string> cache_material; // per input; empty strings = not cacheable
  std::shared_ptr<void> state;             // adapter-private
  int64_t total_tokens() const {
    int64_t t = 0;
    for (int64_t n : input_tokens)
      t += n;
    return t;
  }
};

struct EmbedResult {
  std::vector<std::vector<float>> vectors; // one per requested input, in the order asked
  int64_t prompt_tokens = 0;               // of the computed inputs, as the backend counted them
  std::string served_by;
  double engine_seconds = 0; // engine time of the computation (per-hour pricing); 0 = unknown
};
// Called exactly once, never inside embed(). Errors naming an input ("input[i]") use the
// request's own input index.
using EmbedDone = std::function<void(Result<EmbedResult>)>;

// One readiness probe: a tiny real generation (local) or the upstream's health/models endpoint.
struct ProbeResult {
  bool ok = false;
  std::string error;
  double latency_ms = 0;
};
using ProbeDone = std::function<void(ProbeResult)>;

// Load and counters for /metrics and /readyz. Engine-only fields stay 0 for remote backends.
struct BackendStats {
  int in_flight = 0;       // started and not finished
  int running = 0;         // generating now
  int waiting = 0;         // admitted, waiting for the engine / an upstream slot
  int queued_requests = 0; // accepted but not yet generating
  int64_t queued_tokens = 0;
  int kv_blocks_used = 0, kv_blocks_total = 0, kv_blocks_cached = 0;
  uint64_t steps = 0, prompt_tokens = 0, generated_tokens = 0;
  uint64_t prefix_queried_tokens = 0, prefix_hit_tokens = 0;
  uint64_t rejected_queue_full = 0, cancelled = 0;
};

class ModelBackend {
public:
  virtual ~ModelBackend() = default;

  virtual const BackendInfo &info() const = 0;

  // Validates and prepares a completion or chat request (see the file comment). Errors are
  // OpenAI-shaped values: kInvalidArgument, kContextLengthExceeded, kNotFound, kUnsupported.
  virtual Result<PreparedCall> prepare(const api::InferenceRequest &request,
                                       const PrepareOptions &options) = 0;
  // Starts the call. On error (kQueueFull, kUnavailable, ...) nothing runs and the sink is never
  // called. The backend keeps the sink until on_done.
  virtual Result<std::unique_ptr<CallHandle>> start(const PreparedCall &prepared,
                                                    std::shared_ptr<CallSink> sink) = 0;

  // Tokenizes / validates the inputs of an embedding request (errors name "input" or "input[i]").
  virtual Result<PreparedEmbeddings> prepare_embeddings(const api::EmbeddingRequest &request) = 0;
  // Computes the embeddings of the inputs at `indices` (of the prepared request); on error
  // (kQueueFull, kUnavailable) `done` is never called.
  virtual Status embed(const PreparedEmbeddings &prepared, std::vector<size_t> indices,
                       EmbedDone done) = 0;

  // One readiness probe; `done` runs once (inside probe() only when the probe cannot start).
  virtual void probe(ProbeDone done) = 0;
  virtual BackendStats stats() const = 0;

  // Graceful shutdown: refuse new calls; wait for the running ones; cut off what is left.
  virtual void stop_accepting() = 0;
  virtual bool wait_idle(std::chrono::milliseconds timeout) = 0;
  virtual void cancel_all() = 0;
};

} // namespace gantry::backend
