// One chat or completions call of a RemoteBackend, as a chain of asynchronous steps on the
// backend's IoLoop: the pool's choice (or a wait in its bounded queue) → the upstream request
// → the response head → the JSON body, or SSE pieces decoded as they arrive → a retry after a
// back-off, or the summary. No step blocks, and no thread belongs to a call.
//
// Internal to backend/remote: remote_backend.cpp starts calls, remote_call.cpp runs them.
//
// Threading: one step runs at a time — each starts the next asynchronous operation (an
// upstream read, a timer) and returns; its completion runs the next step on a loop thread.
// cancel() may come from any thread. Sinks are called from steps, never inside start().
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "backend/remote/remote_backend.h"
#include "backend/remote/sse_parser.h"
#include "http/async_upstream.h"
#include "http/io_loop.h"
#include "http/upstream.h"

namespace gantry::backend::remote {

struct RemoteBackend::Endpoint {
  std::string url;       // as configured (membership updates find a member by it)
  std::string name;      // host:port (never the URL's credentials)
  std::string base_path; // the URL's path, ".../v1"
  std::string model;     // upstream model id
  std::string api_key;
  bool reports_cost = false; // RemoteEndpointConfig::reports_cost
  std::unique_ptr<WireCodec> codec;
  std::unique_ptr<http::UpstreamClient> client;            // start-up, probes, embeddings
  std::unique_ptr<http::AsyncUpstreamClient> async_client; // chat and completions calls
  std::string served_by;                                   // "model@name": the summary's served_by
  std::string path[2];                  // base_path + the codec's path: chat, completions
  std::vector<http::Header> headers[2]; // JSON + auth; streamed: + Accept
};

struct RemoteBackend::Call : std::enable_shared_from_this<RemoteBackend::Call> {
  struct State {
    api::InferenceRequest request;
    int64_t prompt_estimate = 0;
    int default_max_tokens = 0;
    std::optional<uint64_t> affinity;
  };

  Call(RemoteBackend &backend, std::shared_ptr<const State> state, std::shared_ptr<CallSink> sink);

  void post_begin(); // schedules begin() on the call's loop
  void begin();      // the first step; runs on a loop thread
  void cancel();     // any thread: aborts the pending step; the summary follows
  void wake();       // any thread: a queued call asks the pool again

private:
  void next_attempt();
  void acquire();
  void lease_failed(Error error);
  void send();
  void on_head(Status head);
  void read_stream();
  void on_piece(Result<std::optional<std::string_view>> piece);
  // Decodes and emits events_[from...], then reads on.
  void deliver(std::size_t from);
  void stream_end();
  void drain(int left);
  void on_body(Result<std::string> body);
  void end_attempt();
  void after_attempt(int64_t wait_ms);
  void finish();
  void emit(const UpstreamChoice &d, int tokens = -1);
  void wait(std::chrono::steady_clock::duration d, std::function<void(bool)> then);

  RemoteBackend &b_;
  // Where every step runs: the starting thread's loop when it is an HTTP server I/O thread (the
  // client's connection lives there: no thread hand-off), else the backend's own.
  http::IoLoop *const loop_;
  const std::shared_ptr<const State> state_;
  std::shared_ptr<CallSink> sink_;
  std::atomic<bool> cancelled_{false};
  std::mutex mu_; // guards upstream_ and timer_ against cancel() and wake()
  std::shared_ptr<http::AsyncUpstreamCall> upstream_;
  // Back-off and queue waits, made by the first wait(). Dropped by finish(): a handle may
  // outlive the backend's loop.
  std::unique_ptr<http::Timer> timer_;

  // The whole call.
  CallSummary summary_;
  bool output_started_ = false;
  std::chrono::steady_clock::time_point t_start_;
  std::optional<std::chrono::steady_clock::time_point> first_token_, last_token_, sent_;
  std::vector<bool> finished_;
  std::string text0_; // for a usage estimate when the upstream reports none
  int64_t delta_count_ = 0;
  std::vector<int> exclude_;
  std::optional<UpstreamUsage> usage_;
  std::optional<Error> failure_;
  std::optional<Error> upstream_failure_; // the last answer of an upstream, over pool errors
  int attempt_ = 0;
  bool queued_ = false;
  std::chrono::steady_clock::time_point queue_deadline_{};

  bool served_reports_cost_ = false; // the member that answered last prices its calls

  // The attempt in progress.
  std::optional<Pool::Lease> lease_;
  std::shared_ptr<Endpoint> ep_; // the lease's member, held until the attempt ends
  Outcome outcome_ = Outcome::kSuccess;
  std::optional<ErrorKind> ekind_;
  int64_t retry_after_ = 0;
  bool retry_ = false;
  std::chrono::steady_clock::time_point attempt_start_;
  std::optional<SseParser> parser_;
  std::unique_ptr<StreamDecoder> decoder_;
  std::vector<SseEvent> events_;
  bool done_ = false;
};

// Shared by calls and embeddings.
ErrorKind transport_error_kind(const Error &e);
Error client_transport_error(const Error &transport, std::string_view model);
bool retryable_status(int status);

} // namespace gantry::backend::remote
