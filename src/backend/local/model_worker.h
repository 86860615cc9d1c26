// A ModelWorker owns one model, its Engine and the engine thread that steps it: the continuous
// batching scheduler between HTTP connections and the engine.
//
// Threading: submit(), cancel() and stats() are thread-safe (called from I/O threads). They post
// into an inbox guarded by a mutex and wake the engine thread through a condition variable — no
// polling. Everything else (the Engine, the sinks' callbacks) runs on the engine thread.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "core/clock.h"
#include "core/result.h"
#include "engine/batch/engine.h"

namespace gantry::backend {

using Ticket = uint64_t;

// Receives one request's events. Called on the engine thread only; keep it quick (render a
// chunk, hand it to the connection).
class TokenSink {
public:
  virtual ~TokenSink() = default;
  virtual void on_event(Ticket ticket, const engine::TokenEvent &event) = 0;
  // The engine refused the request when it reached it (e.g. context too long).
  virtual void on_rejected(Ticket ticket, const Error &error) = 0;
  // Just before the final event: where the request's time went.
  virtual void on_timing(Ticket, const struct SeqTiming & /*timing*/) {}
};

struct SeqTiming {
  std::chrono::steady_clock::time_point submitted{}; // entered the worker's inbox
  std::chrono::steady_clock::time_point scheduled{}; // first engine step that included it
  std::chrono::steady_clock::time_point first_token{};
  std::chrono::steady_clock::time_point finished{};
  // Its share of engine time: each step's duration split between the sequences in it by their
  // tokens in the step (per-hour pricing).
  double engine_seconds = 0;
};

// Receives the vectors of one embed() call, in input order, or why it failed. Called once, on
// the engine thread.
// `engine_seconds` is the engine time the call took (its inputs ran alone between steps, so all
// of it is theirs), for per-hour pricing.
using WorkerEmbedDone =
    std::function<void(Result<std::vector<std::vector<float>>>, double engine_seconds)>;

struct WorkerConfig {
  std::string name;
  engine::EngineConfig engine;
  int max_queued_requests = 256;       // requests admitted but not yet generating
  int64_t max_queued_tokens = 1 << 20; // their prompt tokens
};

struct WorkerStats {
  int running = 0;
  int waiting = 0;
  int queued_requests = 0;
  int64_t queued_tokens = 0;
  int kv_blocks_used = 0;
  int kv_blocks_total = 0;
  uint64_t steps = 0;
  uint64_t prompt_tokens = 0;
  uint64_t generated_tokens = 0;
  uint64_t prefix_queried_tokens = 0;
  uint64_t prefix_hit_tokens = 0;
  int kv_blocks_cached = 0;
  uint64_t rejected_queue_full = 0;
  uint64_t cancelled = 0;
  int in_flight = 0; // submitted and not finished
};

class ModelWorker {
public:
  ModelWorker(std::unique_ptr<engine::Model> model, WorkerConfig config, const Clock &clock);
  ~ModelWorker(); // cancels everything and joins the engine thread

  const engine::Model &model() const { return *model_; }
  const std::string &name() const { return config_.name; }
  int n_ctx() const { return n_ctx_; }

  // Queues a request. kQueueFull when the waiting queue is over its bounds, kUnavailable after
  // stop(). The sink is kept until the request's final event.
  Result<Ticket> submit(engine::GenerationRequest request, std::shared_ptr<TokenSink> sink);
  // Queues embeddings of `inputs` (token ids), computed between engine steps one input at a
  // time, so generation keeps running. Counts as one waiting request for the queue bounds;
  // kQueueFull / kUnavailable like submit(). Input errors (too long, bad ids) arrive in `done`
  // naming "input" or "input[i]".
  Status embed(std::vector<std::vector<int32_t>> inputs, WorkerEmbedDone done);
  // The request finishes with kCancelled at the engine's next step. Safe for unknown tickets.
  void cancel(Ticket ticket);
  void cancel_all();
  WorkerStats stats() const;
  // Refuses new submissions; running ones continue.
  void stop_accepting() { accepting_.store(false); }
  bool accepting() const { return accepting_.load(); } // false once the replica drains
  // Blocks until no request is in flight or the timeout passes; true when idle.
  bool wait_idle(std::chrono::milliseconds timeout);

private:
  struct Pending {
    Ticket ticket;
    engine::GenerationRequest request;
    std::shared_ptr<TokenSink> sink;
    std::chrono::steady_clock::time_point submitted;
  };
  struct EmbedJob {
    std::vector<std::vector<int32_t>> inputs;
    WorkerEmbedDone done;
    int64_t tokens = 0;
    std::vector<std::vector<float>> out;
    double engine_seconds = 0;
  };
  struct Active {
    Ticket ticket = 0;
    std::shared_ptr<TokenSink> sink;
    int64_t prompt_tokens = 0;
    bool started = false;
    SeqTiming timing;
  };

  void run();
  void account_started(Active &a);
  void finished_one();                                // a submitted request ended (any way)
  Result<int64_t> reserve_queue_slot(int64_t tokens); // tokens reserved, or kQueueFull
  // Runs the next input of the first job; false when it must wait for KV blocks.
  bool embed_next(engine::Engine &eng, std::deque<EmbedJob> &jobs);
  void finish_job(std::deque<EmbedJob> &jobs, Result<std::vector<std::vector<float>>> result);

  std::unique_ptr<engine::Model> model_;
  WorkerConfig config_;
  const Clock &clock_;
  int n_ctx_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::condition_variable idle_cv_; // in_flight_ reached 0
  std::deque<Pending> inbox_;
  std::deque<EmbedJob> embed_inbox_;
  std::vector<Ticket> cancels_;
  bool cancel_all_ = false;
  bool stop_ = false;

  std::atomic<bool> accepting_{true};
  std::atomic<Ticket> next_ticket_{1};
  std::atomic<int> queued_requests_{0};
  std::atomic<int64_t> queued_tokens_{0};
  std::atomic<int> in_flight_{0};
  std::atomic<uint64_t> rejected_queue_full_{0};
  std::atomic<uint64_t> cancelled_{0};
  // Published by the engine thread after each step.
  std::atomic<int> running_{0}, waiting_{0}, kv_used_{0}, kv_total_{0};
  std::atomic<uint64_t> steps_{0}, prompt_tokens_{0}, generated_tokens_{0};
  std::atomic<uint64_t> prefix_queried_{0}, prefix_hits_{0};
  std::atomic<int> kv_cached_{0};

  std::thread thread_; // last: starts after every member above exists
};

} // namespace gantry::backend
