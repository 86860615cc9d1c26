// A spend-rate circuit breaker per model: when the dollars spent over the last window exceed the
// threshold (USD per minute times the window), new requests to that model get 503
// `circuit_open` until the cool-down passes or an admin resets it. It catches the runaway loop
// that a monthly budget only stops after the month's money is gone.
#pragma once

#include <array>
#include <chrono>
#include <mutex>
#include <string>

#include "core/clock.h"
#include "core/result.h"

namespace gantry::control {

struct BreakerConfig {
  double usd_per_minute = 0; // 0 = off
  std::chrono::seconds window{60};
  std::chrono::seconds cooldown{300};
};

struct BreakerState {
  bool open = false;
  double window_usd = 0;
  std::chrono::milliseconds open_for{0}; // remaining cool-down
  uint64_t trips = 0;
  double usd_per_minute = 0; // the configured threshold; 0 = off
};

class SpendBreaker {
public:
  SpendBreaker(std::string name, BreakerConfig config, const Clock &clock);

  // kCircuitOpen while tripped.
  Status check();
  void record(double usd);
  void reset();
  BreakerState state();
  const BreakerConfig &config() const { return config_; }

private:
  static constexpr int kSlots = 60;
  void advance(std::chrono::steady_clock::time_point now);
  double window_sum() const;

  std::string name_;
  BreakerConfig config_;
  const Clock &clock_;
  std::mutex mu_;
  // Spend per slot of window/kSlots; head_ is the slot of head_time_.
  std::array<double, kSlots> slots_{};
  int head_ = 0;
  int64_t head_index_ = -1; // absolute slot number of head_
  bool open_ = false;
  std::chrono::steady_clock::time_point open_until_{};
  uint64_t trips_ = 0;
};

} // namespace gantry::control
