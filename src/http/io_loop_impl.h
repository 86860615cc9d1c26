// IoLoop's insides, shared by the http module's asynchronous clients (not included elsewhere:
// it brings in Asio).
#pragma once

#include <optional>
#include <thread>
#include <vector>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>

#include "http/io_loop.h"

namespace gantry::http {

struct IoLoop::Impl {
  boost::asio::io_context ioc;
  std::optional<boost::asio::executor_work_guard<boost::asio::io_context::executor_type>> guard{
      ioc.get_executor()};
  std::vector<std::thread> threads;
};

} // namespace gantry::http
