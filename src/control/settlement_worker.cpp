#include "control/settlement_worker.h"

#include "core/thread_guard.h"

namespace gantry::control {

SettlementWorker::SettlementWorker(size_t capacity)
    : capacity_(capacity), thread_([this] {
        guarded_loop(
            "settlement", [this] { loop(); },
            [this] {
              std::lock_guard<std::mutex> lk(mu_);
              return stopping_ && queue_.empty();
            });
      }) {}

SettlementWorker::~SettlementWorker() { stop(); }

bool SettlementWorker::post(std::function<void()> task) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (stopping_ || queue_.size() >= capacity_) {
      ++inline_runs_;
      return false;
    }
    queue_.emplace_back(++posted_, std::move(task));
  }
  work_cv_.notify_one();
  return true;
}

void SettlementWorker::run(std::function<void()> task) {
  // Refused: run it here so that the bound never drops a settlement.
  if (!post(task))
    run_reporting("settlement", task);
}

void SettlementWorker::barrier() {
  if (std::this_thread::get_id() == thread_.get_id())
    return; // a task waiting for itself would never finish
  std::unique_lock<std::mutex> lk(mu_);
  const uint64_t target = posted_;
  while (done_prefix_ < target) {
    if (!queue_.empty() && queue_.front().first <= target) {
      // Run it here: waiting for the worker to wake would only take longer.
      auto [seq, task] = std::move(queue_.front());
      queue_.pop_front();
      lk.unlock();
      // A task that throws still counts as done: its waiters must not hang on it.
      run_reporting("settlement", task);
      lk.lock();
      ++helped_;
      completed(seq);
      continue;
    }
    done_cv_.wait(lk); // the rest is running on the worker
  }
}

void SettlementWorker::completed(uint64_t seq) {
  ++run_;
  done_later_.insert(seq);
  while (!done_later_.empty() && *done_later_.begin() == done_prefix_ + 1) {
    done_later_.erase(done_later_.begin());
    ++done_prefix_;
  }
  done_cv_.notify_all();
}

void SettlementWorker::stop() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stopping_ = true;
  }
  work_cv_.notify_all();
  if (thread_.joinable() && std::this_thread::get_id() != thread_.get_id())
    thread_.join();
}

SettlementWorkerStats SettlementWorker::stats() const {
  std::lock_guard<std::mutex> lk(mu_);
  return {posted_, run_, helped_, inline_runs_, queue_.size()};
}

void SettlementWorker::loop() {
  std::unique_lock<std::mutex> lk(mu_);
  for (;;) {
    work_cv_.wait(lk, [&] { return stopping_ || !queue_.empty(); });
    if (queue_.empty())
      return; // stopping, and everything queued has run
    auto [seq, task] = std::move(queue_.front());
    queue_.pop_front();
    lk.unlock();
    run_reporting("settlement", task);
    lk.lock();
    completed(seq);
  }
}

} // namespace gantry::control
