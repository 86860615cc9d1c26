// A clock that only moves when a test tells it to (STYLE habit 2: tests advance a fake clock and
// never sleep). Steady and wall time move together, to the nanosecond: advance(500ms) moves
// now() and unix_millis() by 500 ms (unix_seconds() by whole seconds as they are crossed). Wall
// time starts at 2023-11-14T22:13:20Z (unix 1,700,000,000).
//
// Threading: advance() and the readers may run on different threads (a test thread drives a
// service's background thread); each reading is consistent on its own.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

#include "core/clock.h"

namespace gantry {

class FakeClock final : public Clock {
public:
  static constexpr int64_t kStartUnixMillis = 1'700'000'000'000;

  std::chrono::steady_clock::time_point now() const override {
    return std::chrono::steady_clock::time_point(std::chrono::nanoseconds(elapsed_ns_.load()));
  }
  int64_t unix_seconds() const override { return unix_millis() / 1000; }
  int64_t unix_millis() const override { return kStartUnixMillis + elapsed_ns_.load() / 1'000'000; }
  void advance(std::chrono::nanoseconds d) { elapsed_ns_.fetch_add(d.count()); }

private:
  std::atomic<int64_t> elapsed_ns_{0};
};

} // namespace gantry
