// What a request costs. Models billed per token (a hosted upstream, or a self-hosted model priced
// for chargeback) use input/output prices per million tokens; a self-hosted worker priced by the
// hour charges each request its share of the engine time it was in: every engine step's
// duration is split between the sequences in the step by their token counts.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>

namespace gantry::control {

struct Price {
  double input_per_mtok = 0;  // USD per 1M prompt tokens
  double output_per_mtok = 0; // USD per 1M generated tokens
  double usd_per_hour = 0;    // USD per hour of the model's engine

  bool free() const { return input_per_mtok == 0 && output_per_mtok == 0 && usd_per_hour == 0; }
  double token_cost(int64_t input_tokens, int64_t output_tokens) const {
    return (static_cast<double>(input_tokens) * input_per_mtok +
            static_cast<double>(output_tokens) * output_per_mtok) /
           1e6;
  }
  double compute_cost(double engine_seconds) const { return engine_seconds * usd_per_hour / 3600; }
  double cost(int64_t input_tokens, int64_t output_tokens, double engine_seconds) const {
    return token_cost(input_tokens, output_tokens) + compute_cost(engine_seconds);
  }
};

// For reservations under hourly pricing the cost is only known afterwards; the estimate is the
// model's observed USD per token (an exponential moving average over finished requests).
class CostEstimator {
public:
  explicit CostEstimator(Price price) : price_(price) {}
  const Price &price() const { return price_; }
  double estimate(int64_t input_tokens, int64_t output_tokens) const {
    return price_.token_cost(input_tokens, output_tokens) +
           per_token_.load(std::memory_order_relaxed) *
               static_cast<double>(input_tokens + output_tokens);
  }
  // A call priced elsewhere (a worker node charged it by its own prices and engine time): learns
  // what the per-token prices above do not cover, so reservations track the hourly share.
  void observe_reported(int64_t input_tokens, int64_t output_tokens, double usd) {
    const int64_t tokens = input_tokens + output_tokens;
    if (tokens <= 0 || !(usd >= 0))
      return;
    const double rest = std::max(0.0, usd - price_.token_cost(input_tokens, output_tokens));
    const double sample = rest / static_cast<double>(tokens);
    double cur = per_token_.load(std::memory_order_relaxed);
    per_token_.store(cur == 0 ? sample : 0.9 * cur + 0.1 * sample, std::memory_order_relaxed);
  }
  void observe(int64_t tokens, double engine_seconds) {
    if (price_.usd_per_hour <= 0 || tokens <= 0)
      return;
    const double sample = price_.compute_cost(engine_seconds) / static_cast<double>(tokens);
    double cur = per_token_.load(std::memory_order_relaxed);
    const double next = cur == 0 ? sample : 0.9 * cur + 0.1 * sample;
    per_token_.store(next, std::memory_order_relaxed);
  }

private:
  Price price_;
  std::atomic<double> per_token_{0};
};

} // namespace gantry::control
