// The backends of one remote model and the policy over them: which backend takes the next
// request (least outstanding requests over power-of-two choices, weighted; optional prefix
// affinity with bounded load), per-backend concurrency limits with a bounded wait queue,
// outlier ejection with exponential back-off and half-open trials, Retry-After cool-downs, and
// the retry budget that keeps retries from multiplying an outage. No I/O: the caller reports
// each attempt's outcome and the pool decides.
//
// Membership may change while calls run (worker nodes appearing and disappearing, issue 13):
// add_endpoint() and remove_endpoint() keep every index stable — a removed backend's slot stays
// (out of rotation, its in-flight calls finish and release normally) and is reused by a later
// add_endpoint() once nothing is in flight on it.
//
// Thread-safe: every method takes the pool's mutex; acquire() may block (the wait queue).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "core/clock.h"
#include "core/result.h"

namespace gantry::backend::remote {

struct EndpointSpec {
  std::string name; // shown in metrics, /readyz and the request log ("worker")
  int weight = 1;
  int max_concurrent = 0; // 0 = unbounded
};

struct PoolOptions {
  bool prefix_affinity = false;      // routing = "prefix"
  double affinity_load_factor = 1.5; // a backend takes an affine request below c × mean load + 1
  int max_queue = 64;                // requests waiting for a free slot; beyond: 429
  std::chrono::milliseconds max_queue_wait{5'000};
  // Outlier detection: this many consecutive failures (connect errors, 5xx) eject a backend for
  // base × 2^(ejections-1), capped; then one trial request decides.
  int eject_after = 3;
  std::chrono::milliseconds eject_base{1'000};
  std::chrono::milliseconds eject_max{60'000};
  // Retry budget: retries allowed in a window: max(min_retries, ratio × requests).
  double retry_ratio = 0.2;
  int min_retries = 5;
  std::chrono::milliseconds budget_window{10'000};
};

// How one attempt on a backend ended.
enum class Outcome {
  kSuccess,    // a usable answer (any 2xx, or a client error the backend rightly gave)
  kFailure,    // connect error, reset, timeout, 5xx: counts towards ejection
  kOverloaded, // 429: a cool-down of Retry-After, no ejection
  kNeutral,    // cancelled by the client: says nothing about the backend
};

// Error kinds counted per backend (metrics: errors by kind).
enum class ErrorKind { kConnect, kTimeout, kStatus5xx, kStatus429, kBadResponse, kOther, kCount };
std::string_view error_kind_name(ErrorKind kind);

struct EndpointStats {
  std::string name;
  int in_flight = 0;
  bool ejected = false;  // out of rotation now (ejected and not yet due for a trial)
  bool healthy = true;   // the last active probe (true before the first)
  uint64_t requests = 0; // attempts sent
  uint64_t errors[static_cast<int>(ErrorKind::kCount)] = {};
  bool removed = false;   // no longer a member (its slot waits for reuse); skipped by renderers
  uint64_t ejections = 0; // times ejected
  double latency_seconds_sum = 0; // of successful attempts, start to end
  uint64_t latency_count = 0;
};

struct PoolStats {
  std::vector<EndpointStats> endpoints;
  uint64_t retries = 0;         // attempts after the first
  uint64_t retries_refused = 0; // retries the budget refused
  uint64_t queue_rejected = 0;  // 429s for a full wait queue
  int queued = 0;
};

class Pool {
public:
  Pool(std::vector<EndpointSpec> endpoints, PoolOptions options, const Clock &clock,
       uint64_t seed = 0x9e3779b97f4a7c15ull);

  struct Lease {
    int index = -1;
    bool trial = false; // the half-open trial of an ejected backend
  };

  // Chooses a backend not in `exclude` for one attempt and counts it in flight. With prefix
  // affinity, requests with the same `affinity_key` go to the same backend while its load
  // stays bounded. Waits (up to max_queue_wait) while every usable backend is at its
  // max_concurrent; kQueueFull (429, Retry-After) when the queue is full or the wait ran out;
  // kUnavailable when every backend is ejected or cooling down (retry_after_ms says when one
  // is back). `cancelled` is checked while waiting.
  Result<Lease> acquire(const std::vector<int> &exclude, std::optional<uint64_t> affinity_key,
                        const std::function<bool()> &cancelled = {});
  // Wakes queued acquire() calls so they re-check `cancelled` (a client went away).
  void wake_waiters();

  // acquire() for callers that must not block (asynchronous calls): a lease, std::nullopt when
  // every usable backend is at its max_concurrent (the caller waits in the queue below and asks
  // again when a slot frees: after a release() or probe_result()), or acquire()'s kUnavailable.
  Result<std::optional<Lease>> try_acquire(const std::vector<int> &exclude,
                                           std::optional<uint64_t> affinity_key);
  // The wait queue of try_acquire()'s callers, bounded by max_queue like acquire()'s:
  // enter_queue() is kQueueFull (counted) when it is full; leave_queue() ends a wait.
  // queue_timeout() is the kQueueFull (counted) of a wait that outlasted max_queue_wait.
  Status enter_queue();
  void leave_queue();
  Error queue_timeout();
  std::chrono::milliseconds max_queue_wait() const { return options_.max_queue_wait; }
  // Ends an attempt. `retry_after_ms` > 0 (with kOverloaded or kFailure) keeps the backend out
  // of rotation that long. `latency` is recorded for successes.
  void release(const Lease &lease, Outcome outcome, std::optional<ErrorKind> error = std::nullopt,
               int64_t retry_after_ms = 0, std::chrono::duration<double> latency = {});

  // The retry budget: count each client request once, then ask before every retry.
  void record_request();
  bool allow_retry();

  // Active health probes: a failed probe ejects, a passing one brings an ejected backend back.
  void probe_result(int index, bool ok);

  // Adds a member and returns its index: a removed slot with nothing in flight is reused, else
  // the slot table grows. Callers bound the number of members.
  int add_endpoint(EndpointSpec spec);
  // Takes a member out of rotation for good (its slot may be reused by add_endpoint()).
  void remove_endpoint(int index);
  // Placement (issue 14): while any preferred member is usable, only preferred members take
  // requests; the others are the fallback (a worker that would first have to load the model).
  // Members are preferred when added.
  void set_preferred(int index, bool preferred);

  // Ready while any backend is in rotation (or due for a trial).
  bool ready() const;
  int size() const;    // slots, removed ones included: indexes are < size()
  int members() const; // slots not removed
  std::string name(int index) const;
  PoolStats stats() const;

  // A jittered exponential back-off for retry `attempt` (1, 2, ...) honouring the upstream's
  // retry-after: max(retry_after_ms, base × 2^(attempt-1) × [0.5, 1)), at most `cap`.
  std::chrono::milliseconds backoff(int attempt, int64_t retry_after_ms,
                                    std::chrono::milliseconds base, std::chrono::milliseconds cap);

private:
  struct Endpoint {
    EndpointSpec spec;
    int in_flight = 0;
    int consecutive_failures = 0;
    int ejection_count = 0; // consecutive ejections without a success in between
    std::chrono::steady_clock::time_point out_until{}; // ejected or cooling down until
    bool ejected = false; // needs a successful trial (or probe) to return
    bool trial_in_flight = false;
    bool probe_ok = true;
    bool removed = false;
    bool preferred = true;
    EndpointStats stats;
  };

  enum class Usable { kYes, kTrial, kFull, kOut, kRemoved };
  Usable usable(const Endpoint &e, std::chrono::steady_clock::time_point now) const;
  Result<std::optional<Lease>> take_locked(const std::vector<int> &exclude,
                                           std::optional<uint64_t> affinity_key);
  Error queue_full_locked(const char *why);
  std::optional<Lease> choose(const std::vector<int> &exclude, std::optional<uint64_t> key,
                              bool &any_full, int64_t &out_ms);
  void eject(Endpoint &e, std::chrono::steady_clock::time_point now);

  const PoolOptions options_;
  const Clock &clock_;
  mutable std::mutex mu_;
  std::condition_variable slot_freed_;
  std::vector<Endpoint> eps_;
  std::mt19937_64 rng_;
  int queued_ = 0;
  // Retry budget window.
  std::chrono::steady_clock::time_point window_start_{};
  uint64_t window_requests_ = 0, window_retries_ = 0;
  uint64_t retries_ = 0, retries_refused_ = 0, queue_rejected_ = 0;
};

// A stable 64-bit hash of a prompt's first `max_bytes` (the affinity key of routing = "prefix").
uint64_t prefix_key(std::string_view prompt, std::size_t max_bytes = 2048);

} // namespace gantry::backend::remote
