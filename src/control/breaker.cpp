#include "control/breaker.h"

#include <cstdio>

namespace gantry::control {

using namespace std::chrono;

SpendBreaker::SpendBreaker(std::string name, BreakerConfig config, const Clock &clock)
    : name_(std::move(name)), config_(config), clock_(clock) {}

void SpendBreaker::advance(steady_clock::time_point now) {
  const auto slot_ns = duration_cast<nanoseconds>(config_.window).count() / kSlots;
  const int64_t idx = now.time_since_epoch().count() / std::max<int64_t>(slot_ns, 1);
  if (head_index_ < 0) {
    head_index_ = idx;
    return;
  }
  const int64_t steps = idx - head_index_;
  if (steps <= 0)
    return;
  for (int64_t i = 0; i < std::min<int64_t>(steps, kSlots); ++i) {
    head_ = (head_ + 1) % kSlots;
    slots_[head_] = 0;
  }
  head_index_ = idx;
}

double SpendBreaker::window_sum() const {
  double s = 0;
  for (double v : slots_)
    s += v;
  return s;
}

Status SpendBreaker::check() {
  if (config_.usd_per_minute <= 0)
    return Ok();
  std::lock_guard<std::mutex> lk(mu_);
  const auto now = clock_.now();
  if (open_ && now >= open_until_) {
    open_ = false;
    // Start the next window clean, or the spend that tripped it would trip it again at once.
    slots_.fill(0);
  }
  if (!open_)
    return Ok();
  const auto left = duration_cast<seconds>(open_until_ - now).count() + 1;
  char buf[64];
  std::snprintf(buf, sizeof(buf), "$%.4f", config_.usd_per_minute);
  return Err(ErrorCode::kCircuitOpen,
             "The spend-rate circuit breaker of model '" + name_ + "' is open: spending exceeded " +
                 buf + " per minute. New requests are refused for " + std::to_string(left) +
                 " s more, or until an admin resets it (POST /admin/v1/breakers/" + name_ +
                 "/reset).",
             "model");
}

void SpendBreaker::record(double usd) {
  if (config_.usd_per_minute <= 0 || usd <= 0)
    return;
  std::lock_guard<std::mutex> lk(mu_);
  const auto now = clock_.now();
  advance(now);
  slots_[head_] += usd;
  const double minutes = duration<double>(config_.window).count() / 60.0;
  if (!open_ && window_sum() > config_.usd_per_minute * minutes) {
    open_ = true;
    open_until_ = now + config_.cooldown;
    ++trips_;
  }
}

void SpendBreaker::reset() {
  std::lock_guard<std::mutex> lk(mu_);
  open_ = false;
  slots_.fill(0);
}

BreakerState SpendBreaker::state() {
  std::lock_guard<std::mutex> lk(mu_);
  const auto now = clock_.now();
  advance(now);
  BreakerState s;
  s.open = open_ && now < open_until_;
  s.window_usd = window_sum();
  if (s.open)
    s.open_for = duration_cast<milliseconds>(open_until_ - now);
  s.trips = trips_;
  s.usd_per_minute = config_.usd_per_minute;
  return s;
}

} // namespace gantry::control
