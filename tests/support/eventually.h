// Polls a condition until it holds or `within` passes (tests wait on other threads and processes
// this way, never with fixed sleeps); returns the condition's last value.
#pragma once

#include <chrono>
#include <functional>
#include <thread>

namespace gantry::testing {

inline bool eventually(const std::function<bool()> &f, std::chrono::milliseconds within) {
  const auto until = std::chrono::steady_clock::now() + within;
  while (std::chrono::steady_clock::now() < until) {
    if (f())
      return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return f();
}

} // namespace gantry::testing
