#include "server/cold_start_gate.h"

#include <algorithm>
#include <cmath>

#include "core/thread_guard.h"

namespace gantry::server {

using std::chrono::steady_clock;

struct ColdStartGate::Held {
  backend::PreparedCall prepared;
  std::shared_ptr<backend::CallSink> sink; // the caller's
  steady_clock::time_point since;
  std::optional<steady_clock::time_point> last_progress; // the ticker's only
  Error error;                                           // for a doomed call: what its summary says
  std::mutex mu; // guards sink (until released), inner and cancel_requested
  std::unique_ptr<backend::CallHandle> inner; // once started on the pool
  bool cancel_requested = false;
};

// The caller's sink for a call that was held: the cold start's length goes out before the first
// event (a stream's headers already left) and on the summary.
class ColdStartGate::TimedSink final : public backend::CallSink {
public:
  TimedSink(std::shared_ptr<backend::CallSink> inner, double cold_start_ms)
      : inner_(std::move(inner)), ms_(cold_start_ms) {}
  void on_event(const backend::ChoiceEvent &ev) override {
    if (!announced_) {
      announced_ = true;
      inner_->on_progress("x-gantry-cold-start-ms " + std::to_string(std::llround(ms_)));
    }
    inner_->on_event(ev);
  }
  void on_done(const backend::CallSummary &s) override {
    backend::CallSummary out = s;
    out.cold_start_ms = ms_;
    inner_->on_done(out);
  }

private:
  std::shared_ptr<backend::CallSink> inner_;
  const double ms_;
  bool announced_ = false; // events of one call arrive one at a time
};

class ColdStartGate::Handle final : public backend::CallHandle {
public:
  Handle(ColdStartGate &gate, std::shared_ptr<Held> held) : gate_(gate), held_(std::move(held)) {}
  void cancel() override { gate_.cancel(held_); }

private:
  ColdStartGate &gate_;
  std::shared_ptr<Held> held_;
};

ColdStartGate::ColdStartGate(std::unique_ptr<backend::ModelBackend> inner, ColdStartOptions options,
                             const Clock &clock, std::function<void()> on_hold)
    : inner_(std::move(inner)), options_(options), clock_(clock), on_hold_(std::move(on_hold)),
      info_(inner_->info()), estimate_(options.initial_estimate) {
  info_.kind = "workers (autoscaled)";
}

ColdStartGate::~ColdStartGate() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (ticker_.joinable())
    ticker_.join();
}

void ColdStartGate::start_ticker() {
  ticker_ = std::thread([this] {
    guarded_loop(
        "cold_start_gate", [this] { run_ticker(); },
        [this] {
          std::lock_guard<std::mutex> lk(mu_);
          return stop_;
        });
  });
}

void ColdStartGate::run_ticker() {
  std::unique_lock<std::mutex> lk(mu_);
  while (!stop_) {
    cv_.wait_for(lk, options_.progress_every, [this] { return stop_ || wake_; });
    if (stop_)
      return;
    wake_ = false;
    lk.unlock();
    tick();
    lk.lock();
  }
}

Result<std::unique_ptr<backend::CallHandle>>
ColdStartGate::start(const backend::PreparedCall &prepared,
                     std::shared_ptr<backend::CallSink> sink) {
  std::shared_ptr<Held> h;
  bool first = false;
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (ready_ > 0 || !accepting_) // a draining gateway: the pool refuses as it does
      return inner_->start(prepared, std::move(sink));
    if (held_locked() >= options_.max_held) {
      ++refused_;
      return Err(full_error());
    }
    h = std::make_shared<Held>();
    h->prepared = prepared;
    h->sink = std::move(sink);
    h->since = clock_.now();
    if (!cold_since_)
      cold_since_ = h->since;
    held_.push_back(h);
    ++held_total_;
    first = held_locked() == 1;
    wake_ = true; // its first progress comment goes out now, not a second from now
    cv_.notify_all();
  }
  if (first && on_hold_) // one wake per cold start, not one per request
    on_hold_();
  return std::unique_ptr<backend::CallHandle>(new Handle(*this, h));
}

Error ColdStartGate::full_error() const {
  Error e{ErrorCode::kUnavailable,
          "model '" + info_.name + "' is starting (cold start) and " +
              std::to_string(held_locked()) +
              " requests already wait for it (max_held_requests); retry shortly",
          ""};
  e.retry_after_ms = options_.retry_after.count();
  return e;
}

Status ColdStartGate::embed(const backend::PreparedEmbeddings &prepared,
                            std::vector<size_t> indices, backend::EmbedDone done) {
  bool first = false;
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (ready_ > 0 || !accepting_)
      return inner_->embed(prepared, std::move(indices), std::move(done));
    if (held_locked() >= options_.max_held) {
      ++refused_;
      return Err(full_error());
    }
    HeldEmbed e;
    e.prepared = prepared; // the caller's copy ends with its call frame
    e.indices = std::move(indices);
    e.done = std::move(done);
    e.since = clock_.now();
    if (!cold_since_)
      cold_since_ = e.since;
    held_embeds_.push_back(std::move(e));
    ++held_total_;
    first = held_locked() == 1;
  }
  if (first && on_hold_)
    on_hold_();
  return Ok();
}

void ColdStartGate::cancel(const std::shared_ptr<Held> &h) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    auto it = std::find(held_.begin(), held_.end(), h);
    if (it != held_.end()) { // still held: its slot is free now, the error follows at the tick
      held_.erase(it);
      ++cancelled_;
      h->error = Error{ErrorCode::kCancelled, "the client went away while the model started", ""};
      doomed_.push_back(h);
      wake_ = true;
      cv_.notify_all();
      return;
    }
  }
  std::lock_guard<std::mutex> lk(h->mu);
  h->cancel_requested = true;
  if (h->inner)
    h->inner->cancel();
}

void ColdStartGate::set_ready(int ready) {
  std::lock_guard<std::mutex> lk(mu_);
  ready_ = ready;
  if (ready > 0 && !held_.empty()) {
    wake_ = true;
    cv_.notify_all();
  }
}

int ColdStartGate::percent(steady_clock::time_point since, steady_clock::time_point now) const {
  const double elapsed = std::chrono::duration<double, std::milli>(now - since).count();
  const double total = static_cast<double>(std::max<int64_t>(1, estimate_.count()));
  return std::clamp(static_cast<int>(elapsed / total * 100), 0, 99);
}

void ColdStartGate::tick() {
  const auto now = clock_.now();
  std::vector<std::shared_ptr<Held>> release, doomed;
  std::vector<HeldEmbed> release_embeds, doomed_embeds;
  std::vector<std::pair<std::shared_ptr<Held>, int>> progress;
  {
    std::lock_guard<std::mutex> lk(mu_);
    doomed.swap(doomed_);
    doomed_embeds.swap(doomed_embeds_);
    if (ready_ > 0 && held_locked() > 0) {
      if (cold_since_) // the progress of the next cold start is measured against this one
        estimate_ =
            std::max(std::chrono::milliseconds(1),
                     std::chrono::duration_cast<std::chrono::milliseconds>(now - *cold_since_));
      release.assign(held_.begin(), held_.end());
      held_.clear();
      for (auto &e : held_embeds_)
        release_embeds.push_back(std::move(e));
      held_embeds_.clear();
      released_ += release.size() + release_embeds.size();
    }
    if (ready_ > 0 || held_locked() == 0)
      cold_since_.reset();
    while (!held_embeds_.empty() && now - held_embeds_.front().since >= options_.timeout) {
      ++timed_out_;
      held_embeds_.front().error = timeout_error();
      doomed_embeds.push_back(std::move(held_embeds_.front()));
      held_embeds_.pop_front();
    }
    while (!held_.empty() && now - held_.front()->since >= options_.timeout) {
      auto h = held_.front();
      held_.pop_front();
      ++timed_out_;
      h->error = timeout_error();
      doomed.push_back(std::move(h));
    }
    for (const auto &h : held_)
      progress.emplace_back(h, percent(h->since, now));
  }
  for (auto &h : doomed) {
    backend::CallSummary s;
    s.error = backend::BackendError{h->error, true};
    s.cold_start_ms = std::chrono::duration<double, std::milli>(now - h->since).count();
    // The handle outlives the call (the writer keeps it for a disconnect): it must not keep the
    // caller's sink, and with it the connection, alive.
    std::shared_ptr<backend::CallSink> sink;
    {
      std::lock_guard<std::mutex> lk(h->mu);
      sink = std::move(h->sink);
    }
    if (sink)
      sink->on_done(s);
  }
  for (auto &e : doomed_embeds)
    e.done(Err(std::move(e.error)));
  for (auto &e : release_embeds) {
    auto done = e.done; // embed() consumes it only when it accepts the call
    if (auto st = inner_->embed(e.prepared, std::move(e.indices), std::move(e.done)); !st)
      done(Err(st.error()));
  }
  for (auto &[h, pct] : progress) {
    // A tick woken early (a cancel, a release) sends nothing new to the others.
    if (h->last_progress && now - *h->last_progress < options_.progress_every)
      continue;
    h->last_progress = now;
    std::shared_ptr<backend::CallSink> sink;
    {
      std::lock_guard<std::mutex> lk(h->mu);
      sink = h->sink;
    }
    if (sink)
      sink->on_progress("loading model " + std::to_string(pct) + "%");
  }
  for (auto &h : release) {
    std::shared_ptr<backend::CallSink> caller; // not kept by the handle: see above
    {
      std::lock_guard<std::mutex> lk(h->mu);
      caller = std::move(h->sink);
    }
    if (!caller)
      continue;
    if (!h->last_progress) // released before its first tick: it still sees one sign of life
      caller->on_progress("loading model " + std::to_string(percent(h->since, now)) + "%");
    const double ms = std::chrono::duration<double, std::milli>(now - h->since).count();
    auto started = inner_->start(h->prepared, std::make_shared<TimedSink>(caller, ms));
    h->prepared = {};
    std::lock_guard<std::mutex> lk(h->mu);
    if (!started) {
      backend::CallSummary s;
      s.error = backend::BackendError{started.error(), true};
      s.cold_start_ms = ms;
      caller->on_done(s);
      continue;
    }
    h->inner = std::move(started).value();
    if (h->cancel_requested)
      h->inner->cancel();
  }
}

int ColdStartGate::held() const {
  std::lock_guard<std::mutex> lk(mu_);
  return held_locked();
}

Error ColdStartGate::timeout_error() const {
  Error e{ErrorCode::kUnavailable,
          "no replica of model '" + info_.name + "' became ready within " +
              std::to_string(options_.timeout.count() / 1000) +
              " s (cold_start_timeout_s); retry shortly",
          ""};
  e.retry_after_ms = options_.retry_after.count();
  return e;
}

int ColdStartGate::ready() const {
  std::lock_guard<std::mutex> lk(mu_);
  return ready_;
}

void ColdStartGate::probe(backend::ProbeDone done) {
  if (ready() == 0) {
    done({true, "", 0});
    return;
  }
  inner_->probe(std::move(done));
}

backend::BackendStats ColdStartGate::stats() const {
  backend::BackendStats s = inner_->stats();
  const int h = held();
  s.in_flight += h;
  s.waiting += h;
  s.queued_requests += h;
  return s;
}

void ColdStartGate::stop_accepting() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    accepting_ = false;
  }
  inner_->stop_accepting();
}

bool ColdStartGate::wait_idle(std::chrono::milliseconds timeout) {
  // Held calls cannot finish without a replica; they end in cancel_all().
  return inner_->wait_idle(timeout) && held() == 0;
}

void ColdStartGate::cancel_all() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    for (auto &h : held_) {
      h->error = Error{ErrorCode::kUnavailable, "the gateway is shutting down", ""};
      h->error.retry_after_ms = 1000;
      doomed_.push_back(h);
    }
    held_.clear();
    for (auto &e : held_embeds_) {
      e.error = Error{ErrorCode::kUnavailable, "the gateway is shutting down", ""};
      e.error.retry_after_ms = 1000;
      doomed_embeds_.push_back(std::move(e));
    }
    held_embeds_.clear();
  }
  tick(); // delivers them here: the ticker may be gone already
  inner_->cancel_all();
}

ColdStartGate::Counts ColdStartGate::counts() const {
  std::lock_guard<std::mutex> lk(mu_);
  Counts c;
  c.held = held_locked();
  c.held_total = held_total_;
  c.released = released_;
  c.refused = refused_;
  c.timed_out = timed_out_;
  c.cancelled = cancelled_;
  return c;
}

} // namespace gantry::server
