// The cold-start front door of an autoscaled worker-hosted model (issue 14 item 3,
// docs/AUTOSCALING.md): a ModelBackend decorator around the gateway's pool of the model's
// workers. While the pool has a ready replica, calls go straight through. While it has none
// (scaled to zero, or every replica still starting), a call is held — up to max_held calls, each
// at most `timeout` — counted as waiting demand (so the policy scales from zero at once), and
// started on the pool the moment a replica is live. Beyond either bound the call gets 503 with
// Retry-After. A held call's sink receives a progress comment every `progress_every`
// ("loading model 63%": the time held over the last measured cold start, capped at 99), and the
// cold start's length rides on its summary (CallSummary::cold_start_ms) and, for a stream, as a
// comment before its first event ("x-gantry-cold-start-ms 1234").
//
// Threading: start(), set_ready() and the accessors from any thread. Everything the gate itself
// delivers to a held call's sink (progress, the timeout or cancellation error, the start on the
// pool) happens in tick(), on the gate's own ticker thread (or the test's), never inside start()
// or cancel(): a caller may hold its own lock across both.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "backend/model_backend.h"
#include "core/clock.h"

namespace gantry::server {

struct ColdStartOptions {
  int max_held = 256;                                 // calls held at once; beyond, 503
  std::chrono::milliseconds timeout{300'000};         // a held call's longest wait
  std::chrono::milliseconds progress_every{1000};     // a progress comment this often
  std::chrono::milliseconds initial_estimate{30'000}; // the cold start until one was measured
  std::chrono::milliseconds retry_after{5'000};       // on the 503s
};

class ColdStartGate final : public backend::ModelBackend {
public:
  // `on_hold` runs (outside any lock) each time a call is held: the gateway wakes its autoscaler,
  // so a model at zero gets its replica without waiting for the next evaluation.
  ColdStartGate(std::unique_ptr<backend::ModelBackend> inner, ColdStartOptions options,
                const Clock &clock, std::function<void()> on_hold = nullptr);
  ~ColdStartGate() override; // stops the ticker; held calls must have been cancelled (shutdown)

  void start_ticker(); // tick() every progress_every, and at once on a release or a cancel
  // The pool's live replicas now (WorkerPools' membership callback). Above 0, held calls are
  // started on the pool at the next tick (at once with the ticker running).
  void set_ready(int ready);
  // Releases, progress, timeouts and cancellations (see the file comment).
  void tick();

  int held() const;
  int ready() const;
  // For gantry:cold_start_held_requests and gantry:cold_start_requests_total{outcome}.
  struct Counts {
    int held = 0;
    uint64_t held_total = 0, released = 0, refused = 0, timed_out = 0, cancelled = 0;
  };
  Counts counts() const;

  const backend::BackendInfo &info() const override { return info_; }
  Result<backend::PreparedCall> prepare(const api::InferenceRequest &request,
                                        const backend::PrepareOptions &options) override {
    return inner_->prepare(request, options);
  }
  Result<std::unique_ptr<backend::CallHandle>>
  start(const backend::PreparedCall &prepared, std::shared_ptr<backend::CallSink> sink) override;
  Result<backend::PreparedEmbeddings>
  prepare_embeddings(const api::EmbeddingRequest &request) override {
    return inner_->prepare_embeddings(request);
  }
  // Embeddings are held like calls (the same bound and wait, counted together) and started on
  // the pool at the release; they have no progress comments (one JSON answer) and no handle, so
  // a client that leaves while held still holds its slot until the release or the timeout.
  Status embed(const backend::PreparedEmbeddings &prepared, std::vector<size_t> indices,
               backend::EmbedDone done) override;
  // Ready at zero replicas: requests are held, not refused, so the gateway is not taken out of
  // its load balancer while its model sleeps.
  void probe(backend::ProbeDone done) override;
  backend::BackendStats stats() const override; // the pool's, plus held calls as waiting
  void stop_accepting() override;
  bool wait_idle(std::chrono::milliseconds timeout) override;
  void cancel_all() override;

  // One held call (shared with its handle); public for the handle, not for callers.
  struct Held;

private:
  class Handle;
  class TimedSink;
  void cancel(const std::shared_ptr<Held> &h);
  void run_ticker();
  int held_locked() const { return static_cast<int>(held_.size() + held_embeds_.size()); }
  Error full_error() const;
  Error timeout_error() const;
  int percent(std::chrono::steady_clock::time_point since,
              std::chrono::steady_clock::time_point now) const;

  std::unique_ptr<backend::ModelBackend> inner_;
  const ColdStartOptions options_;
  const Clock &clock_;
  const std::function<void()> on_hold_;
  backend::BackendInfo info_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<Held>> held_; // with held_embeds_, bounded by max_held
  struct HeldEmbed {
    backend::PreparedEmbeddings prepared;
    std::vector<size_t> indices;
    backend::EmbedDone done;
    std::chrono::steady_clock::time_point since;
    Error error; // once doomed
  };
  std::deque<HeldEmbed> held_embeds_;
  std::vector<HeldEmbed> doomed_embeds_;      // shutdown: their error at the next tick
  std::vector<std::shared_ptr<Held>> doomed_; // cancelled or refused: error at the next tick
  int ready_ = 0;
  bool accepting_ = true;
  bool stop_ = false;
  bool wake_ = false;
  std::chrono::milliseconds estimate_;
  std::optional<std::chrono::steady_clock::time_point> cold_since_; // this cold start's first hold
  uint64_t held_total_ = 0, released_ = 0, refused_ = 0, timed_out_ = 0, cancelled_ = 0;
  std::thread ticker_;
};

} // namespace gantry::server
