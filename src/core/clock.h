// Time as an injected dependency: code that reads the time takes a Clock&, so tests can drive a
// fake clock instead of sleeping (FakeClock, tests/support/fake_clock.h). SystemClock is the only
// code that reads the steady and wall clocks (scripts/check_clock.sh).
#pragma once

#include <chrono>
#include <cstdint>

namespace gantry {

class Clock {
public:
  virtual ~Clock() = default;
  virtual std::chrono::steady_clock::time_point now() const = 0;
  virtual int64_t unix_seconds() const = 0;
  virtual int64_t unix_millis() const { return unix_seconds() * 1000; }
};

class SystemClock final : public Clock {
public:
  std::chrono::steady_clock::time_point now() const override {
    return std::chrono::steady_clock::now();
  }
  int64_t unix_seconds() const override {
    return std::chrono::duration_cast<std::chrono::seconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
  }
  int64_t unix_millis() const override {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
  }
};

} // namespace gantry
