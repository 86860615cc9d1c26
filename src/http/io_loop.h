// A small set of I/O threads running one io_context, for outbound work that must not hold a
// thread while it waits: the asynchronous upstream client (async_upstream.h) and the timers of
// the calls driving it (back-off, queue waits, probe intervals). Beast and Asio stay inside
// io_loop.cpp and async_upstream.cpp; users see std::function callbacks only.
//
// An IoLoop may also stand for an io_context someone else runs: each of the HTTP server's I/O
// threads is one (IoLoop::current() on that thread). Outbound work started from a request
// handler then runs on the thread that serves the client's connection — no hand-off to another
// thread and back, which on a small machine costs more than the proxying itself. Such a loop
// runs no threads of its own; before its io_context goes, it runs the at_close() callbacks so
// users drop the I/O objects they keep on it (kept-alive connections).
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
  // Owned: lets queued handlers run (up to 2 s), then stops the loop and joins its threads.
  // Standing for another's io_context: runs the at_close() callbacks (the owner has stopped
  // running it by then).
  ~IoLoop();
  IoLoop(const IoLoop &) = delete;
  IoLoop &operator=(const IoLoop &) = delete;

  // Runs `fn` on a loop thread.
  void post(std::function<void()> fn);

  // The loop whose handler runs on this thread (an HTTP server I/O thread), or nullptr.
  static IoLoop *current();

  // `fn` runs when this loop goes away, unless `owner` has expired by then. Any thread.
  void at_close(std::weak_ptr<void> owner, std::function<void()> fn);

  struct Impl;
  Impl &impl() { return *impl_; }
  explicit IoLoop(std::unique_ptr<Impl> impl); // io_loop_impl.h: wrap()

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
