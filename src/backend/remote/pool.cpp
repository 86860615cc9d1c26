#include "backend/remote/pool.h"

#include <algorithm>
#include <cmath>

namespace gantry::backend::remote {

std::string_view error_kind_name(ErrorKind kind) {
  switch (kind) {
  case ErrorKind::kConnect: return "connect";
  case ErrorKind::kTimeout: return "timeout";
  case ErrorKind::kStatus5xx: return "status_5xx";
  case ErrorKind::kStatus429: return "status_429";
  case ErrorKind::kBadResponse: return "bad_response";
  case ErrorKind::kOther:
  case ErrorKind::kCount: break;
  }
  return "other";
}

uint64_t prefix_key(std::string_view prompt, std::size_t max_bytes) {
  uint64_t h = 1469598103934665603ull; // FNV-1a
  for (unsigned char c : prompt.substr(0, max_bytes)) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

namespace {
uint64_t mix(uint64_t x) { // splitmix64 finaliser: rendezvous scores
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}
} // namespace

Pool::Pool(std::vector<EndpointSpec> endpoints, PoolOptions options, const Clock &clock,
           uint64_t seed)
    : options_(options), clock_(clock), rng_(seed) {
  for (auto &spec : endpoints) {
    Endpoint e;
    spec.weight = std::max(1, spec.weight);
    e.stats.name = spec.name;
    e.spec = std::move(spec);
    eps_.push_back(std::move(e));
  }
  window_start_ = clock_.now();
}

Pool::Usable Pool::usable(const Endpoint &e, std::chrono::steady_clock::time_point now) const {
  if (e.removed)
    return Usable::kRemoved;
  if (now < e.out_until)
    return Usable::kOut;
  if (e.ejected)
    return e.trial_in_flight ? Usable::kOut : Usable::kTrial;
  if (e.spec.max_concurrent > 0 && e.in_flight >= e.spec.max_concurrent)
    return Usable::kFull;
  return Usable::kYes;
}

std::optional<Pool::Lease> Pool::choose(const std::vector<int> &exclude,
                                        std::optional<uint64_t> key, bool &any_full,
                                        int64_t &out_ms) {
  const auto now = clock_.now();
  std::vector<int> ready;
  int trial = -1;
  any_full = false;
  out_ms = -1;
  for (int i = 0; i < static_cast<int>(eps_.size()); ++i) {
    if (std::find(exclude.begin(), exclude.end(), i) != exclude.end())
      continue;
    switch (usable(eps_[i], now)) {
    case Usable::kYes: ready.push_back(i); break;
    case Usable::kTrial:
      if (trial < 0)
        trial = i;
      break;
    case Usable::kFull: any_full = true; break;
    case Usable::kRemoved: break;
    case Usable::kOut: {
      const int64_t ms =
          std::chrono::duration_cast<std::chrono::milliseconds>(eps_[i].out_until - now).count();
      if (ms > 0 && (out_ms < 0 || ms < out_ms))
        out_ms = ms;
      break;
    }
    }
  }
  // A backend due for its half-open trial gets the next request: one request decides.
  if (trial >= 0) {
    eps_[trial].trial_in_flight = true;
    return Lease{trial, true};
  }
  if (ready.empty())
    return std::nullopt;
  if (std::any_of(ready.begin(), ready.end(), [&](int i) { return eps_[i].preferred; }))
    std::erase_if(ready, [&](int i) { return !eps_[i].preferred; });
  int pick = ready.front();
  if (key && options_.prefix_affinity && ready.size() > 1) {
    // Rendezvous hashing (weighted) with bounded load: the key's preferred backend unless it
    // carries more than c × the mean load (+1), then the next in the key's order.
    int total = 0;
    for (int i : ready)
      total += eps_[i].in_flight;
    const double bound =
        std::ceil(options_.affinity_load_factor * (total + 1) / static_cast<double>(ready.size()));
    std::vector<std::pair<double, int>> order;
    for (int i : ready) {
      const double u = (static_cast<double>(mix(*key ^ mix(static_cast<uint64_t>(i))) >> 11) + 1) /
                       9007199254740993.0;
      order.push_back({-std::log(u) / eps_[i].spec.weight, i}); // smallest wins
    }
    std::sort(order.begin(), order.end());
    pick = -1;
    for (const auto &[score, i] : order) {
      if (eps_[i].in_flight + 1 <= bound) {
        pick = i;
        break;
      }
    }
    if (pick >= 0)
      return Lease{pick, false};
    pick = ready.front();
  }
  if (ready.size() > 1) {
    // Power of two choices, drawn by weight; the one with fewer outstanding requests per unit
    // of weight wins.
    auto draw = [&](int skip) {
      uint64_t sum = 0;
      for (int i : ready)
        if (i != skip)
          sum += static_cast<uint64_t>(eps_[i].spec.weight);
      uint64_t r = std::uniform_int_distribution<uint64_t>(0, sum - 1)(rng_);
      for (int i : ready) {
        if (i == skip)
          continue;
        const auto w = static_cast<uint64_t>(eps_[i].spec.weight);
        if (r < w)
          return i;
        r -= w;
      }
      return ready.back();
    };
    const int a = draw(-1);
    const int b = draw(a);
    auto load = [&](int i) {
      return (eps_[i].in_flight + 1) / static_cast<double>(eps_[i].spec.weight);
    };
    pick = load(b) < load(a) ? b : a;
  }
  return Lease{pick, false};
}

// Under mu_: a lease (counted), std::nullopt when every usable backend is at its
// max_concurrent, or kUnavailable (with how long until one is back).
Result<std::optional<Pool::Lease>> Pool::take_locked(const std::vector<int> &exclude,
                                                     std::optional<uint64_t> affinity_key) {
  bool any_full = false;
  int64_t out_ms = -1;
  if (auto lease = choose(exclude, affinity_key, any_full, out_ms)) {
    Endpoint &e = eps_[lease->index];
    ++e.in_flight;
    ++e.stats.requests;
    return std::optional<Lease>(*lease);
  }
  if (any_full)
    return std::optional<Lease>();
  Error err{ErrorCode::kUnavailable, "no backend of this model is available", {}};
  err.retry_after_ms = out_ms > 0 ? out_ms : 1000;
  return Err(std::move(err));
}

// Under mu_: the counted kQueueFull of a full or timed-out wait queue.
Error Pool::queue_full_locked(const char *why) {
  ++queue_rejected_;
  Error err{ErrorCode::kQueueFull, why, {}};
  err.retry_after_ms = 1000;
  return err;
}

constexpr const char *kQueueIsFull = "every backend of this model is at its max_concurrent";
constexpr const char *kQueueWaitTimedOut = "timed out waiting for a free backend slot";

Result<Pool::Lease> Pool::acquire(const std::vector<int> &exclude,
                                  std::optional<uint64_t> affinity_key,
                                  const std::function<bool()> &cancelled) {
  std::unique_lock<std::mutex> lk(mu_);
  const auto deadline = clock_.now() + options_.max_queue_wait;
  bool queued = false;
  while (true) {
    GANTRY_ASSIGN_OR_RETURN(auto lease, take_locked(exclude, affinity_key));
    if (lease)
      return *lease;
    if (cancelled && cancelled())
      return Err(Error{ErrorCode::kCancelled, "cancelled while queued", {}});
    if (!queued && queued_ >= options_.max_queue)
      return Err(queue_full_locked(kQueueIsFull));
    queued = true;
    const auto left = deadline - clock_.now();
    if (left <= std::chrono::steady_clock::duration::zero())
      return Err(queue_full_locked(kQueueWaitTimedOut));
    ++queued_;
    const auto status = slot_freed_.wait_for(lk, left);
    --queued_;
    if (status == std::cv_status::timeout)
      return Err(queue_full_locked(kQueueWaitTimedOut));
  }
}

void Pool::wake_waiters() { slot_freed_.notify_all(); }

Result<std::optional<Pool::Lease>> Pool::try_acquire(const std::vector<int> &exclude,
                                                     std::optional<uint64_t> affinity_key) {
  std::lock_guard<std::mutex> lk(mu_);
  return take_locked(exclude, affinity_key);
}

Status Pool::enter_queue() {
  std::lock_guard<std::mutex> lk(mu_);
  if (queued_ >= options_.max_queue)
    return Err(queue_full_locked(kQueueIsFull));
  ++queued_;
  return Ok();
}

void Pool::leave_queue() {
  std::lock_guard<std::mutex> lk(mu_);
  --queued_;
}

Error Pool::queue_timeout() {
  std::lock_guard<std::mutex> lk(mu_);
  return queue_full_locked(kQueueWaitTimedOut);
}

void Pool::eject(Endpoint &e, std::chrono::steady_clock::time_point now) {
  e.ejected = true;
  ++e.ejection_count;
  ++e.stats.ejections;
  const int shift = std::min(e.ejection_count - 1, 16);
  auto d = options_.eject_base * (int64_t{1} << shift);
  if (d > options_.eject_max)
    d = options_.eject_max;
  e.out_until = now + d;
}

void Pool::release(const Lease &lease, Outcome outcome, std::optional<ErrorKind> error,
                   int64_t retry_after_ms, std::chrono::duration<double> latency) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    Endpoint &e = eps_[lease.index];
    --e.in_flight;
    if (lease.trial)
      e.trial_in_flight = false;
    if (error)
      ++e.stats.errors[static_cast<int>(*error)];
    const auto now = clock_.now();
    switch (outcome) {
    case Outcome::kSuccess:
      e.consecutive_failures = 0;
      if (e.ejected && (lease.trial || now >= e.out_until)) {
        e.ejected = false;
        e.ejection_count = 0;
      }
      e.stats.latency_seconds_sum += latency.count();
      ++e.stats.latency_count;
      break;
    case Outcome::kFailure:
      ++e.consecutive_failures;
      if (lease.trial || (!e.ejected && e.consecutive_failures >= options_.eject_after))
        eject(e, now);
      if (retry_after_ms > 0)
        e.out_until = std::max(e.out_until, now + std::chrono::milliseconds(retry_after_ms));
      break;
    case Outcome::kOverloaded:
      if (retry_after_ms > 0)
        e.out_until = std::max(e.out_until, now + std::chrono::milliseconds(retry_after_ms));
      break;
    case Outcome::kNeutral: break;
    }
  }
  slot_freed_.notify_all();
}

void Pool::record_request() {
  std::lock_guard<std::mutex> lk(mu_);
  const auto now = clock_.now();
  if (now - window_start_ >= options_.budget_window) {
    window_start_ = now;
    window_requests_ = 0;
    window_retries_ = 0;
  }
  ++window_requests_;
}

bool Pool::allow_retry() {
  std::lock_guard<std::mutex> lk(mu_);
  const double allowed = std::max<double>(
      options_.min_retries, options_.retry_ratio * static_cast<double>(window_requests_));
  if (static_cast<double>(window_retries_) + 1 > allowed) {
    ++retries_refused_;
    return false;
  }
  ++window_retries_;
  ++retries_;
  return true;
}

void Pool::probe_result(int index, bool ok) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    Endpoint &e = eps_[index];
    e.probe_ok = ok;
    const auto now = clock_.now();
    if (ok) {
      if (e.ejected) {
        e.ejected = false;
        e.ejection_count = 0;
        e.consecutive_failures = 0;
        e.out_until = now;
      }
    } else if (!e.ejected) {
      eject(e, now);
    }
  }
  slot_freed_.notify_all();
}

int Pool::add_endpoint(EndpointSpec spec) {
  int index = -1;
  {
    std::lock_guard<std::mutex> lk(mu_);
    spec.weight = std::max(1, spec.weight);
    // A slot of the same name first (a worker coming back keeps its counters), then any free.
    for (int pass = 0; pass < 2 && index < 0; ++pass)
      for (int i = 0; i < static_cast<int>(eps_.size()); ++i)
        if (eps_[i].removed && eps_[i].in_flight == 0 &&
            (pass == 1 || eps_[i].spec.name == spec.name)) {
          index = i;
          break;
        }
    Endpoint e;
    e.stats.name = spec.name;
    if (index >= 0 && eps_[index].spec.name == spec.name)
      e.stats = eps_[index].stats; // counters are monotonic per name for /metrics
    e.stats.removed = false;
    e.spec = std::move(spec);
    if (index >= 0) {
      eps_[index] = std::move(e);
    } else {
      index = static_cast<int>(eps_.size());
      eps_.push_back(std::move(e));
    }
  }
  slot_freed_.notify_all(); // queued calls may use the new member
  return index;
}

void Pool::set_preferred(int index, bool preferred) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (index < 0 || index >= static_cast<int>(eps_.size()))
      return;
    eps_[index].preferred = preferred;
  }
  slot_freed_.notify_all(); // a queued call may now go elsewhere
}

void Pool::remove_endpoint(int index) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (index < 0 || index >= static_cast<int>(eps_.size()))
      return;
    eps_[index].removed = true;
    eps_[index].stats.removed = true;
  }
  slot_freed_.notify_all(); // queued calls re-check: maybe nothing is left to wait for
}

int Pool::size() const {
  std::lock_guard<std::mutex> lk(mu_);
  return static_cast<int>(eps_.size());
}

int Pool::members() const {
  std::lock_guard<std::mutex> lk(mu_);
  return static_cast<int>(
      std::count_if(eps_.begin(), eps_.end(), [](const Endpoint &e) { return !e.removed; }));
}

std::string Pool::name(int index) const {
  std::lock_guard<std::mutex> lk(mu_);
  return eps_[index].spec.name;
}

bool Pool::ready() const {
  std::lock_guard<std::mutex> lk(mu_);
  const auto now = clock_.now();
  for (const auto &e : eps_)
    if (!e.removed && (!e.ejected || now >= e.out_until))
      return true;
  return false;
}

PoolStats Pool::stats() const {
  std::lock_guard<std::mutex> lk(mu_);
  PoolStats s;
  const auto now = clock_.now();
  for (const auto &e : eps_) {
    EndpointStats es = e.stats;
    es.in_flight = e.in_flight;
    es.ejected = e.ejected && now < e.out_until;
    es.healthy = e.probe_ok;
    s.endpoints.push_back(std::move(es));
  }
  s.retries = retries_;
  s.retries_refused = retries_refused_;
  s.queue_rejected = queue_rejected_;
  s.queued = queued_;
  return s;
}

std::chrono::milliseconds Pool::backoff(int attempt, int64_t retry_after_ms,
                                        std::chrono::milliseconds base,
                                        std::chrono::milliseconds cap) {
  double jitter;
  {
    std::lock_guard<std::mutex> lk(mu_);
    jitter = std::uniform_real_distribution<double>(0.5, 1.0)(rng_);
  }
  const int shift = std::clamp(attempt - 1, 0, 16);
  const auto exp = std::chrono::milliseconds(
      static_cast<int64_t>(static_cast<double>(base.count() * (int64_t{1} << shift)) * jitter));
  auto d = std::max(exp, std::chrono::milliseconds(retry_after_ms));
  return std::min(d, cap);
}

} // namespace gantry::backend::remote
