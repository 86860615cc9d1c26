#include "server/prepare_pool.h"

namespace gantry::server {

PreparePool::PreparePool(int threads, size_t max_queued) : max_queued_(max_queued) {
  for (int i = 0; i < threads; ++i)
    threads_.emplace_back([this] { loop(); });
}

PreparePool::~PreparePool() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  for (auto &t : threads_)
    t.join();
}

bool PreparePool::post(std::function<void()> task) {
  if (threads_.empty()) {
    task();
    return true;
  }
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (stop_ || tasks_.size() >= max_queued_)
      return false;
    tasks_.push_back(std::move(task));
  }
  cv_.notify_one();
  return true;
}

size_t PreparePool::queued() const {
  std::lock_guard<std::mutex> lk(mu_);
  return tasks_.size();
}

void PreparePool::loop() {
  for (;;) {
    std::function<void()> task;
    {
      std::unique_lock<std::mutex> lk(mu_);
      cv_.wait(lk, [&] { return stop_ || !tasks_.empty(); });
      if (tasks_.empty())
        return; // stopping and drained
      task = std::move(tasks_.front());
      tasks_.pop_front();
    }
    task();
  }
}

} // namespace gantry::server
