#include "autoscale_sim/simulation.h"

#include <algorithm>
#include <cmath>
#include <deque>
#include <limits>
#include <numbers>
#include <queue>
#include <stdexcept>

#include "autoscale/policy.h"
#include "support/fake_clock.h"

namespace gantry::autoscale::sim {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// splitmix64: a fixed generator, so the numbers do not depend on the standard library's
// distributions.
class Rng {
public:
  explicit Rng(uint64_t seed) : s_(seed) {}
  double uniform() { // [0, 1)
    return static_cast<double>(next() >> 11) * 0x1.0p-53;
  }
  double exponential(double mean) { return -std::log1p(-uniform()) * mean; }

private:
  uint64_t next() {
    uint64_t z = (s_ += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  uint64_t s_;
};

struct Request {
  double arrival = 0, service = 0;
  double start = -1;
};

double day_seconds(const Traffic &t) { return t.day_hours * 3600; }

// Arrivals by thinning a Poisson process at the profile's highest rate.
std::vector<Request> make_requests(const Options &o) {
  const Traffic &t = o.traffic;
  const double max_rate = t.peak_rps * std::max(1.0, t.spike_factor);
  std::vector<Request> out;
  if (max_rate <= 0)
    return out;
  Rng arrivals(o.seed), service(o.seed * 7919 + 1);
  const double end = day_seconds(t);
  for (double now = arrivals.exponential(1 / max_rate); now < end;
       now += arrivals.exponential(1 / max_rate)) {
    if (arrivals.uniform() * max_rate < rate_at(t, now)) {
      Request r;
      r.arrival = now;
      r.service = service.exponential(o.replica.mean_service_s);
      out.push_back(r);
    }
  }
  return out;
}

// The replicas and the queue, advanced event by event.
class World {
public:
  World(const Options &o, std::vector<Request> &requests)
      : model_(o.replica), day_end_(day_seconds(o.traffic)), requests_(requests) {}

  void add_ready(int n) {
    for (int i = 0; i < n; ++i)
      replicas_.push_back({State::kReady, 0, 0});
    peak_ = std::max(peak_, alive());
  }

  // Processes every event before `until`.
  void run_until(double until) {
    while (true) {
      const double t_arrival = next_ < requests_.size() ? requests_[next_].arrival : kInf;
      const double t_done = done_.empty() ? kInf : done_.top().first;
      double t_ready = kInf;
      for (const auto &r : replicas_)
        if (r.state == State::kStarting)
          t_ready = std::min(t_ready, r.ready_at);
      const double t = std::min({t_arrival, t_done, t_ready});
      if (t >= until)
        break;
      advance(t);
      if (t == t_ready) {
        for (auto &r : replicas_)
          if (r.state == State::kStarting && r.ready_at <= t)
            r.state = State::kReady;
      } else if (t == t_done) {
        const size_t i = done_.top().second;
        done_.pop();
        Replica &r = replicas_[i];
        --r.busy;
        if (r.state == State::kDraining && r.busy == 0)
          r.state = State::kGone;
      } else {
        queue_.push_back(next_++);
      }
      dispatch();
    }
    advance(until);
  }

  // Carries out a desired count: revives draining replicas first (they are warm), then starts
  // new ones; gives back starting ones first (no work lost), then the least busy ready ones.
  void apply(int desired) {
    int active = 0;
    for (const auto &r : replicas_)
      active += r.state == State::kStarting || r.state == State::kReady;
    while (active < desired) {
      Replica *revive = nullptr;
      for (auto &r : replicas_)
        if (r.state == State::kDraining && (!revive || r.busy > revive->busy))
          revive = &r;
      if (revive) {
        revive->state = State::kReady;
      } else {
        Replica fresh{State::kStarting, now_ + model_.cold_start_s, 0};
        auto gone = std::find_if(replicas_.begin(), replicas_.end(),
                                 [](const Replica &r) { return r.state == State::kGone; });
        if (gone != replicas_.end())
          *gone = fresh;
        else
          replicas_.push_back(fresh);
      }
      ++active;
    }
    while (active > desired) {
      Replica *victim = nullptr;
      for (auto &r : replicas_)
        if (r.state == State::kStarting && (!victim || r.ready_at > victim->ready_at))
          victim = &r;
      if (!victim)
        for (auto &r : replicas_)
          if (r.state == State::kReady && (!victim || r.busy < victim->busy))
            victim = &r;
      victim->state = victim->busy == 0 ? State::kGone : State::kDraining;
      --active;
    }
    peak_ = std::max(peak_, alive());
    dispatch();
  }

  Signals signals() const {
    Signals s;
    for (const auto &r : replicas_) {
      s.running_requests += r.busy;
      s.replicas.starting += r.state == State::kStarting;
      s.replicas.ready += r.state == State::kReady;
      s.replicas.draining += r.state == State::kDraining;
    }
    s.waiting_requests = static_cast<int64_t>(queue_.size());
    s.oldest_wait_s = queue_.empty() ? 0 : now_ - requests_[queue_.front()].arrival;
    return s;
  }

  bool finished() const { return next_ == requests_.size() && queue_.empty() && done_.empty(); }
  double replica_seconds() const { return replica_seconds_; }
  int peak() const { return peak_; }

private:
  enum class State { kStarting, kReady, kDraining, kGone };
  struct Replica {
    State state;
    double ready_at;
    int busy;
  };

  int alive() const {
    int n = 0;
    for (const auto &r : replicas_)
      n += r.state != State::kGone;
    return n;
  }

  // Moves the clock, charging the replicas that exist for the time within the day.
  void advance(double t) {
    const double from = std::min(now_, day_end_), to = std::min(t, day_end_);
    if (to > from)
      replica_seconds_ += alive() * (to - from);
    now_ = std::max(now_, t);
  }

  void dispatch() {
    while (!queue_.empty()) {
      Replica *best = nullptr;
      size_t best_i = 0;
      for (size_t i = 0; i < replicas_.size(); ++i) {
        Replica &r = replicas_[i];
        if (r.state == State::kReady && r.busy < model_.slots && (!best || r.busy < best->busy)) {
          best = &r;
          best_i = i;
        }
      }
      if (!best)
        return;
      Request &req = requests_[queue_.front()];
      queue_.pop_front();
      req.start = now_;
      ++best->busy;
      done_.push({now_ + req.service, best_i});
    }
  }

  const ReplicaModel model_;
  const double day_end_;
  std::vector<Request> &requests_;
  size_t next_ = 0; // the next request to arrive
  std::deque<size_t> queue_;
  using Done = std::pair<double, size_t>; // (time, replica)
  std::priority_queue<Done, std::vector<Done>, std::greater<>> done_;
  std::vector<Replica> replicas_;
  double now_ = 0;
  double replica_seconds_ = 0;
  int peak_ = 0;
};

double percentile(std::vector<double> v, double p) {
  if (v.empty())
    return 0;
  std::sort(v.begin(), v.end());
  const size_t rank = static_cast<size_t>(std::ceil(p * static_cast<double>(v.size())));
  return v[std::max<size_t>(rank, 1) - 1];
}

Result summarize(std::string name, const std::vector<Request> &requests, const World &w,
                 const Options &o) {
  Result r;
  r.name = std::move(name);
  r.replica_hours = w.replica_seconds() / 3600;
  r.requests = static_cast<int64_t>(requests.size());
  r.peak_replicas = w.peak();
  std::vector<double> waits, latencies;
  waits.reserve(requests.size());
  latencies.reserve(requests.size());
  for (const auto &q : requests) {
    const double wait = q.start - q.arrival;
    waits.push_back(wait);
    latencies.push_back(wait + q.service);
    r.late += wait > o.wait_target_s;
    r.max_wait_s = std::max(r.max_wait_s, wait);
  }
  r.late_share = r.requests ? static_cast<double>(r.late) / static_cast<double>(r.requests) : 0;
  r.p50_wait_s = percentile(waits, 0.50);
  r.p99_wait_s = percentile(waits, 0.99);
  r.p99_latency_s = percentile(latencies, 0.99);
  return r;
}

// Past the day's end only the backlog is served; a day later something is wrong with the model.
constexpr double kDrainLimitS = 86400;

} // namespace

double rate_at(const Traffic &t, double t_s) {
  const double f = t.day_hours / 24;
  const double day = day_seconds(t), night = t.night_end_h * 3600 * f;
  if (t_s < night || t_s >= day)
    return 0;
  const double base = t.peak_rps * std::sin(std::numbers::pi * (t_s - night) / (day - night));
  const double s0 = t.spike_start_h * 3600 * f, len = t.spike_minutes * 60 * f;
  const double ramp = t.spike_ramp_s * f;
  if (t_s < s0 || t_s > s0 + len)
    return base;
  const double in = ramp > 0 ? std::min(1.0, (t_s - s0) / ramp) : 1;
  const double out = ramp > 0 ? std::min(1.0, (s0 + len - t_s) / ramp) : 1;
  return base * (1 + (t.spike_factor - 1) * std::min(in, out));
}

Result run_fixed(int replicas, const Options &o) {
  std::vector<Request> requests = make_requests(o);
  World w(o, requests);
  w.add_ready(replicas);
  const double end = day_seconds(o.traffic);
  w.run_until(end);
  for (double t = end; !w.finished() && t < end + kDrainLimitS;) {
    t += 60;
    w.run_until(t);
  }
  if (!w.finished())
    throw std::runtime_error("fixed baseline did not drain its queue a day after the day");
  return summarize("fixed " + std::to_string(replicas), requests, w, o);
}

Result run_policy(const PolicyConfig &config, const Options &o) {
  std::vector<Request> requests = make_requests(o);
  World w(o, requests);
  FakeClock clock;
  Policy policy(config, clock);
  int64_t changes = 0;
  const double end = day_seconds(o.traffic);
  for (int64_t s = 1;; ++s) {
    w.run_until(static_cast<double>(s));
    clock.advance(std::chrono::seconds(1));
    const Decision d = policy.evaluate(w.signals());
    changes += d.changed();
    w.apply(d.desired);
    if (static_cast<double>(s) >= end && w.finished())
      break;
    if (static_cast<double>(s) >= end + kDrainLimitS)
      throw std::runtime_error("policy run did not drain its queue a day after the day");
  }
  Result r = summarize("autoscale", requests, w, o);
  r.scale_changes = changes;
  return r;
}

} // namespace gantry::autoscale::sim

namespace gantry::autoscale::sim {

bool meets_goal(const Result &policy, const Result &fixed_max) {
  return policy.replica_hours < 0.5 * fixed_max.replica_hours &&
         policy.p99_latency_s <= 1.1 * fixed_max.p99_latency_s;
}

} // namespace gantry::autoscale::sim
