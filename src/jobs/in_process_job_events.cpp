#include "jobs/in_process_job_events.h"

#include <vector>

namespace gantry::jobs {

InProcessJobEvents::InProcessJobEvents(const Clock &clock, size_t max_waiters)
    : clock_(clock), max_waiters_(max_waiters) {}

void InProcessJobEvents::erase_locked(std::map<uint64_t, Waiter>::iterator it) {
  const uint64_t handle = it->first;
  auto [a, b] = by_job_.equal_range(it->second.job_id);
  for (auto j = a; j != b; ++j) {
    if (j->second == handle) {
      by_job_.erase(j);
      break;
    }
  }
  auto [c, d] = by_deadline_.equal_range(it->second.deadline_ms);
  for (auto j = c; j != d; ++j) {
    if (j->second == handle) {
      by_deadline_.erase(j);
      break;
    }
  }
  waiters_.erase(it);
}

void InProcessJobEvents::publish(const JobEvent &event) {
  std::vector<WaitCallback> ready;
  Listener listener;
  {
    std::lock_guard<std::mutex> lk(mu_);
    auto [a, b] = by_job_.equal_range(event.job_id);
    std::vector<uint64_t> handles;
    for (auto it = a; it != b; ++it)
      handles.push_back(it->second);
    for (uint64_t h : handles) {
      auto it = waiters_.find(h);
      ready.push_back(std::move(it->second.done));
      erase_locked(it);
    }
    counters_.completed += ready.size();
    listener = listener_;
  }
  if (listener)
    listener(event);
  const WaitOutcome o =
      event.kind == JobEventKind::kCanceled ? WaitOutcome::kCanceled : WaitOutcome::kCompleted;
  for (auto &cb : ready)
    cb(o);
}

Result<uint64_t> InProcessJobEvents::wait(std::string_view job_id, int64_t deadline_ms,
                                          WaitCallback done) {
  std::lock_guard<std::mutex> lk(mu_);
  if (shut_down_ || waiters_.size() >= max_waiters_) {
    counters_.refused++;
    Error e{ErrorCode::kQueueFull,
            shut_down_ ? "shutting down"
                       : "too many requests wait for jobs (" + std::to_string(max_waiters_) + ")",
            ""};
    return e;
  }
  const uint64_t h = next_handle_++;
  waiters_.emplace(h, Waiter{std::string(job_id), deadline_ms, std::move(done)});
  by_job_.emplace(std::string(job_id), h);
  by_deadline_.emplace(deadline_ms, h);
  counters_.waits++;
  return h;
}

bool InProcessJobEvents::cancel_wait(uint64_t handle) {
  std::lock_guard<std::mutex> lk(mu_);
  auto it = waiters_.find(handle);
  if (it == waiters_.end())
    return false;
  erase_locked(it);
  return true;
}

void InProcessJobEvents::listen(Listener listener) {
  std::lock_guard<std::mutex> lk(mu_);
  listener_ = std::move(listener);
}

int64_t InProcessJobEvents::expire_due() {
  std::vector<WaitCallback> due;
  int64_t next = 0;
  {
    std::lock_guard<std::mutex> lk(mu_);
    const int64_t now = clock_.unix_millis();
    while (!by_deadline_.empty() && by_deadline_.begin()->first <= now) {
      auto it = waiters_.find(by_deadline_.begin()->second);
      due.push_back(std::move(it->second.done));
      erase_locked(it);
    }
    counters_.timed_out += due.size();
    if (!by_deadline_.empty())
      next = by_deadline_.begin()->first;
  }
  for (auto &cb : due)
    cb(WaitOutcome::kTimedOut);
  return next;
}

void InProcessJobEvents::shutdown() {
  std::vector<WaitCallback> all;
  {
    std::lock_guard<std::mutex> lk(mu_);
    shut_down_ = true;
    for (auto &[h, w] : waiters_)
      all.push_back(std::move(w.done));
    waiters_.clear();
    by_job_.clear();
    by_deadline_.clear();
  }
  for (auto &cb : all)
    cb(WaitOutcome::kShutdown);
}

size_t InProcessJobEvents::waiting() const {
  std::lock_guard<std::mutex> lk(mu_);
  return waiters_.size();
}

JobEventsCounters InProcessJobEvents::counters() const {
  std::lock_guard<std::mutex> lk(mu_);
  return counters_;
}

} // namespace gantry::jobs
