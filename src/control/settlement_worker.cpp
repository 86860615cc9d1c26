#include "control/settlement_worker.h"

namespace gantry::control {

SettlementWorker::SettlementWorker(size_t capacity)
    : capacity_(capacity), thread_([this] { loop(); }) {}

SettlementWorker::~SettlementWorker() { stop(); }

bool SettlementWorker::post(std::function<void()> task) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (stopping_ || queue_.size() >= capacity_) {
      ++inline_runs_;
      return false;
    }
    queue_.push_back(std::move(task));
    ++posted_;
  }
  work_cv_.notify_one();
  return true;
}

void SettlementWorker::run(std::function<void()> task) {
  // Refused: run it here so that the bound never drops a settlement.
  if (!post(task))
    task();
}

void SettlementWorker::barrier() {
  if (std::this_thread::get_id() == thread_.get_id())
    return; // a task waiting for itself would never finish
  std::unique_lock<std::mutex> lk(mu_);
  const uint64_t target = posted_;
  done_cv_.wait(lk, [&] { return done_ >= target; });
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
  return {posted_, done_, inline_runs_, queue_.size()};
}

void SettlementWorker::loop() {
  std::unique_lock<std::mutex> lk(mu_);
  for (;;) {
    work_cv_.wait(lk, [&] { return stopping_ || !queue_.empty(); });
    if (queue_.empty())
      return; // stopping, and everything queued has run
    auto task = std::move(queue_.front());
    queue_.pop_front();
    lk.unlock();
    task();
    lk.lock();
    ++done_;
    done_cv_.notify_all();
  }
}

} // namespace gantry::control
