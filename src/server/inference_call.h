// One /v1/chat/completions or /v1/completions request in flight: turns engine events into the
// OpenAI response (one JSON body, or SSE chunks as tokens arrive).
//
// Threading: created on an I/O thread, which submits its sequences while holding mu_; engine
// events then arrive on the model's engine thread (on_event), and a client disconnect arrives on
// an I/O thread (cancel). mu_ orders them.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "api/openai.h"
#include "http/response_writer.h"
#include "server/model_worker.h"
#include "server/response_cache.h"
#include "telemetry/metrics.h"

namespace gantry::server {

// How the call ended, for the control plane (cost, ledger, limits).
struct CallResult {
  int status = 200;
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  int64_t cached_tokens = 0;
  double engine_seconds = 0;
  double ttft_ms = 0;
  double latency_ms = 0;
  double queue_ms = 0;       // submitted → first engine step (of the first choice)
  double prefill_ms = 0;     // first engine step → first token
  double decode_ms = 0;      // first token → last token
  std::string finish_reason; // of the first choice; "error" when it failed
};

struct CallHooks {
  http::Headers headers; // added to the response (x-ratelimit-*)
  // Runs once when the call ends, before the response is sent (for a stream, before its last
  // event); may add headers to a non-streamed response (x-gantry-cost-usd).
  std::function<void(const CallResult &, http::Headers &)> on_finish;
  std::chrono::steady_clock::time_point arrived = std::chrono::steady_clock::now();
  telemetry::Histogram *inter_token = nullptr; // observes each gap between a choice's tokens
};

class InferenceCall final : public TokenSink, public std::enable_shared_from_this<InferenceCall> {
public:
  InferenceCall(api::Endpoint endpoint, api::ResponseMeta meta, bool stream, bool include_usage,
                std::string echo_prefix, int prompt_tokens,
                std::shared_ptr<http::ResponseWriter> writer, ModelWorker &worker,
                CallHooks hooks = {});

  // Both before start(). A header added to whichever response is sent (x-gantry-cache).
  void add_header(std::string name, std::string value);
  // Stores the result under `key` once every choice finished with stop or length; a cancelled
  // or failed call stores nothing.
  void store_result_in(ResponseCache &cache, std::string key, std::chrono::seconds ttl);

  // Submits one sequence per choice; on failure nothing stays queued and the error is returned
  // for the caller to send.
  Status start(const std::vector<engine::GenerationRequest> &choices);

  void on_event(Ticket ticket, const engine::TokenEvent &event) override;
  void on_rejected(Ticket ticket, const Error &error) override;
  void on_timing(Ticket ticket, const SeqTiming &timing) override;

private:
  struct ChoiceState {
    Ticket ticket = 0;
    std::string text;
    std::string finish;
    int generated = 0;
    int cached = 0; // prompt tokens served from the prefix cache
    bool done = false;
    std::chrono::steady_clock::time_point last_token{};
    std::vector<std::string> pieces; // each event's text, kept only for the response cache
  };
  int index_of(Ticket t) const;
  void finish_if_done();
  http::Headers run_finish_hook(int status, const api::Usage &usage);
  void cancel_all();
  void store_result();

  const api::Endpoint endpoint_;
  const api::ResponseMeta meta_;
  const bool stream_;
  const bool include_usage_;
  const std::string echo_prefix_;
  const int prompt_tokens_;
  std::shared_ptr<http::ResponseWriter> writer_;
  ModelWorker &worker_;
  http::Headers headers_;
  ResponseCache *cache_ = nullptr;
  std::string cache_key_;
  std::chrono::seconds cache_ttl_{0};

  std::mutex mu_;
  std::vector<ChoiceState> choices_;
  bool responded_ = false;
  std::optional<Error> failure_;
  CallHooks hooks_;
  double engine_seconds_ = 0;
  std::optional<SeqTiming> timing_; // of the first choice to finish
  std::optional<std::chrono::steady_clock::time_point> first_token_;
};

} // namespace gantry::server
