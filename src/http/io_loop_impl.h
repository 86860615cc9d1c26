// IoLoop's insides, shared by the http module's asynchronous clients and the HTTP server (not
// included elsewhere: it brings in Asio).
#pragma once

#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>

#include "http/io_loop.h"

namespace gantry::http {

struct IoLoop::Impl {
  std::unique_ptr<boost::asio::io_context> owned; // null when standing for another's
  boost::asio::io_context *ioc = nullptr;
  std::optional<boost::asio::executor_work_guard<boost::asio::io_context::executor_type>> guard;
  std::vector<std::thread> threads;
  // Only one thread runs `ioc` (a server I/O thread's, or an owned loop of one thread): handlers
  // on it never run concurrently, so the I/O objects living there need no strand.
  bool one_thread = false;
  std::mutex mu; // guards at_close
  // Pruned of expired owners as it grows: bounded by the live owners (a connection pool each).
  std::vector<std::pair<std::weak_ptr<void>, std::function<void()>>> at_close;
};

// An IoLoop standing for `ioc`, which the caller runs on one thread (and keeps until the loop is
// destroyed).
std::unique_ptr<IoLoop> wrap_io_context(boost::asio::io_context &ioc);

// Makes `loop` this thread's IoLoop::current() (the caller's thread runs its io_context).
void set_current_loop(IoLoop *loop);

} // namespace gantry::http
