// A small bounded pool of threads for the CPU-heavy steps in front of a backend call: chat
// template rendering and tokenizing (security audit M4). They used to run on the HTTP I/O
// threads, where a multi-megabyte prompt stalled every connection sharing that thread (health
// probes included). The queue is bounded: post() refuses when it is full, and the caller answers
// 503 with Retry-After instead of queueing without limit.
//
// Threading: post() is thread-safe; tasks run on the pool's threads in FIFO order. The
// destructor runs what is queued, then joins.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace gantry::server {

class PreparePool {
public:
  // threads == 0 runs every task inline in post() (tests, tools).
  PreparePool(int threads, size_t max_queued);
  ~PreparePool();
  PreparePool(const PreparePool &) = delete;
  PreparePool &operator=(const PreparePool &) = delete;

  // False (and the task is dropped) when max_queued tasks are already waiting.
  bool post(std::function<void()> task);
  size_t queued() const;

private:
  void loop();

  const size_t max_queued_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> tasks_;
  bool stop_ = false;
  std::vector<std::thread> threads_; // last: started after the members above exist
};

} // namespace gantry::server
