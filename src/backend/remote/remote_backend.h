// RemoteBackend: the ModelBackend adapter for a model served elsewhere — one or more upstream
// engines speaking the OpenAI API (vLLM, SGLang, TGI, llama.cpp server, another Gantry), the
// hosted OpenAI API, or Anthropic's Messages API. It joins the wire codecs (wire.h), the pool
// policy (pool.h) and the upstream transport (http/upstream.h):
//
//   start() → the pool chooses a backend (or the call waits in its bounded queue) → request on
//   a kept-alive connection → the response (JSON body, or SSE read piece by piece) becomes
//   ChoiceEvents → one CallSummary with the upstream's real usage and the backend's name
//   (served_by). Chat and completions calls are asynchronous (remote_call.h): they hold no
//   thread while they wait. A call started on an HTTP server I/O thread (a request handler:
//   http::IoLoop::current()) runs on that thread, next to its client's connection; others
//   (jobs, batches, the prepare pool) on the backend's own few I/O threads (io_threads).
//
// Failures before any output reached the sink (connect errors, resets, 429, 5xx) are retried on
// another backend of the pool, with back-off honouring Retry-After, inside the pool's retry
// budget; a failure after output began is never retried (the summary says before_output=false).
// cancel() closes the upstream request at once.
//
// Membership may change at run time (add_endpoint/remove_endpoint: a gateway's pool of worker
// nodes, issue 13); a call holds its backend's connection pool until it ends, so removing a
// member never cuts a call short.
//
// Threading: thread-safe. Chat and completions calls run as callbacks on the starting HTTP
// I/O thread or the backend's I/O threads; embeddings run on call threads (grown on demand up
// to max_threads), blocking on their own connection; a prober thread runs the active health
// checks. Sinks are called on those threads, never inside start()/embed()/probe(): a sink must
// not block for long (it may share its thread with other clients' connections).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "backend/model_backend.h"
#include "backend/remote/pool.h"
#include "backend/remote/wire.h"
#include "core/clock.h"

namespace gantry::http {
class IoLoop;
class UpstreamClient;
} // namespace gantry::http

namespace gantry::backend::remote {

struct RemoteEndpointConfig {
  std::string url;   // http(s)://host[:port]/.../v1
  std::string model; // the upstream model id; empty = the only one /v1/models lists
  int weight = 1;
  int max_concurrent = 0;
  std::string api_key; // resolved from api_key_env / api_key_file by the config, never inline
  BackendKind kind = BackendKind::kOpenAICompatible;
  std::string tls_ca_file;
  // A Gantry worker of this gateway (roles): the cost it reports for each call (its
  // x-gantry-cost-usd header, or usage.cost_usd in a stream) becomes the call's
  // CallSummary::reported_cost_usd. Never set for other backends: their word is not a price.
  bool reports_cost = false;
};

struct RemoteModelConfig {
  std::string name; // the served model name
  std::vector<RemoteEndpointConfig> endpoints;
  PoolOptions pool;
  std::chrono::milliseconds connect_timeout{5'000};
  std::chrono::milliseconds first_byte_timeout{120'000};
  std::chrono::milliseconds idle_timeout{60'000};
  std::chrono::milliseconds total_timeout{600'000};
  int max_attempts = 3;                            // per call, across the pool
  std::chrono::milliseconds retry_backoff{50};     // base of the jittered exponential back-off
  std::chrono::milliseconds max_retry_wait{2'000}; // longest Retry-After a call waits out
  std::string probe_path = "/models";              // below the base URL; "" = no active probes
  std::chrono::milliseconds probe_interval{5'000};
  std::size_t max_response_bytes = 8 << 20; // a non-streamed body; beyond: an error
  SseLimits sse;                            // a streamed line / event
  int io_threads = 2;                       // run every chat and completions call
  int max_threads = 512;                    // embedding call threads; beyond, calls queue
  // Beyond max_threads + max_queued_calls calls in flight (or embedding calls queued): 429.
  int max_queued_calls = 4096;
  int max_endpoints = 256; // members at once (add_endpoint beyond: an error)
  // A gateway's pool for an autoscaled worker-hosted model starts with no member (scaled to
  // zero, issue 14): calls fail as unavailable until add_endpoint gives it one.
  bool allow_no_endpoints = false;
  // Admission needs a prompt's token count before the upstream has counted it. With the upstream
  // model's tokenizer known here (`tokenizer = "model.gguf"`), it is counted exactly; otherwise
  // it is estimated at this many bytes a token (plus 4 per chat message). Either way the call is
  // settled on the upstream's reported usage.
  std::function<int64_t(std::string_view)> tokenizer;
  double estimate_bytes_per_token = 4.0;
};

class RemoteBackend final : public ModelBackend {
public:
  // Resolves each endpoint's upstream model (asking /v1/models when none is named) and starts
  // the prober. Start-up errors name the model and the endpoint.
  static Result<std::unique_ptr<RemoteBackend>> create(RemoteModelConfig config,
                                                       const Clock &clock);
  ~RemoteBackend() override;

  const BackendInfo &info() const override { return info_; }
  Result<PreparedCall> prepare(const api::InferenceRequest &request,
                               const PrepareOptions &options) override;
  Result<std::unique_ptr<CallHandle>> start(const PreparedCall &prepared,
                                            std::shared_ptr<CallSink> sink) override;
  Result<PreparedEmbeddings> prepare_embeddings(const api::EmbeddingRequest &request) override;
  Status embed(const PreparedEmbeddings &prepared, std::vector<size_t> indices,
               EmbedDone done) override;
  void probe(ProbeDone done) override;
  BackendStats stats() const override;
  void stop_accepting() override;
  bool wait_idle(std::chrono::milliseconds timeout) override;
  void cancel_all() override;

  // Membership at run time. add_endpoint: the member's index (the existing one when `url` is
  // already a member); the upstream model must be named (no /models lookup on this path).
  Result<int> add_endpoint(const RemoteEndpointConfig &endpoint);
  // False when `url` is not a member.
  bool remove_endpoint(std::string_view url);
  // Pool::set_preferred for the live member at `url`; false when there is none.
  bool set_endpoint_preferred(std::string_view url, bool preferred);

  // Per-backend state for /metrics and /readyz (removed members are flagged in the stats).
  PoolStats pool_stats() const { return pool_->stats(); }
  bool ready() const { return pool_->ready(); }
  std::string endpoint_name(int i) const { return pool_->name(i); }
  int endpoint_count() const; // current members

  struct Endpoint; // remote_backend.cpp
  struct Call;

private:
  RemoteBackend(RemoteModelConfig config, const Clock &clock);
  Result<std::shared_ptr<Endpoint>> make_endpoint(const RemoteEndpointConfig &ec,
                                                  bool resolve_model);
  std::shared_ptr<Endpoint> endpoint(int index) const;
  std::vector<std::string> secrets() const;
  // Runs `task` on a call thread; kQueueFull beyond max_queued_calls, kUnavailable when stopped.
  Status post(std::function<void()> task);
  void call_thread();
  void prober();
  // Calls waiting in the pool's queue ask again after a slot was freed.
  void wake_waiters();
  void call_ended();
  // The tokenizer's count, or the bytes-per-token estimate (never 0 for non-empty text).
  int64_t count_tokens(std::string_view text) const;
  void run_embed(const PreparedEmbeddings &prepared, const std::vector<size_t> &indices,
                 const EmbedDone &done);

  RemoteModelConfig config_;
  const Clock &clock_;
  BackendInfo info_;
  std::unique_ptr<http::IoLoop> loop_; // declared before the endpoints: their clients use it
  std::unique_ptr<WireCodec> codec_;   // the pool's kind (prepare, embeddings)
  mutable std::mutex ep_mu_;           // guards the three below
  // Slot i is the pool's index i; a call copies its shared_ptr, so a replaced slot's connection
  // pool lives until its calls end.
  std::vector<std::shared_ptr<Endpoint>> endpoints_;
  std::vector<bool> live_;           // slot i is a member
  std::vector<std::string> secrets_; // API keys: scrubbed from any upstream text
  std::unique_ptr<Pool> pool_;

  std::mutex waiters_mu_;
  std::vector<std::shared_ptr<Call>> waiters_; // in the pool's queue: bounded by max_queue
  std::atomic<uint64_t> slot_generation_{0};   // wake_waiters() calls

  mutable std::mutex mu_;
  std::condition_variable work_cv_, idle_cv_, prober_cv_;
  std::deque<std::function<void()>> tasks_; // bounded by max_queued_calls
  std::vector<std::thread> threads_;
  int idle_threads_ = 0;
  bool stopping_ = false;
  std::atomic<bool> accepting_{true};
  int in_flight_ = 0;
  std::vector<std::weak_ptr<Call>> calls_; // for cancel_all; pruned as calls end
  std::atomic<uint64_t> cancelled_{0}, rejected_{0};
  std::thread prober_;
};

} // namespace gantry::backend::remote
