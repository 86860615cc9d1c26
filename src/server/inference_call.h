// One /v1/chat/completions or /v1/completions request in flight: turns engine events into the
// OpenAI response (one JSON body, or SSE chunks as tokens arrive).
//
// Threading: created on an I/O thread, which submits its sequences while holding mu_; engine
// events then arrive on the model's engine thread (on_event), and a client disconnect arrives on
// an I/O thread (cancel). mu_ orders them.
#pragma once

#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "api/openai.h"
#include "http/response_writer.h"
#include "server/model_worker.h"
#include "server/response_cache.h"

namespace gantry::server {

class InferenceCall final : public TokenSink, public std::enable_shared_from_this<InferenceCall> {
public:
  InferenceCall(api::Endpoint endpoint, api::ResponseMeta meta, bool stream, bool include_usage,
                std::string echo_prefix, int prompt_tokens,
                std::shared_ptr<http::ResponseWriter> writer, ModelWorker &worker);

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

private:
  struct ChoiceState {
    Ticket ticket = 0;
    std::string text;
    std::string finish;
    int generated = 0;
    int cached = 0; // prompt tokens served from the prefix cache
    bool done = false;
    std::vector<std::string> pieces; // each event's text, kept only for the response cache
  };
  int index_of(Ticket t) const;
  void finish_if_done();
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
};

} // namespace gantry::server
