// A small set of I/O threads running one io_context, for outbound work that must not hold a
// thread while it waits: the asynchronous upstream client (async_upstream.h) and the timers of
// the calls driving it (back-off, queue waits, probe intervals). Beast and Asio stay inside
// io_loop.cpp and async_upstream.cpp; users see std::function callbacks only.
//
// Threading: thread-safe. Handlers run on the loop's threads, never inside the call that
// scheduled them.
#pragma once

#include <chrono>
#include <functional>
#include <memory>

namespace gantry::http {

class IoLoop {
public:
  explicit IoLoop(int threads);
  ~IoLoop(); // lets queued handlers run (up to 2 s), then stops the loop and joins its threads
  IoLoop(const IoLoop &) = delete;
  IoLoop &operator=(const IoLoop &) = delete;

  // Runs `fn` on a loop thread.
  void post(std::function<void()> fn);

  struct Impl;
  Impl &impl() { return *impl_; }

private:
  std::unique_ptr<Impl> impl_;
};

// A one-shot timer on a loop. wait() and cancel() may be called from any thread; they take
// effect in the order they were called.
class Timer {
public:
  explicit Timer(IoLoop &loop);
  ~Timer(); // cancels: a pending wait's callback runs with fired = false
  Timer(const Timer &) = delete;
  Timer &operator=(const Timer &) = delete;

  // Calls `fn(true)` on a loop thread after `d`, or `fn(false)` when cancel() (or another
  // wait()) comes first.
  void wait(std::chrono::steady_clock::duration d, std::function<void(bool fired)> fn);
  void cancel();

private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

} // namespace gantry::http
