#include "engine/sampling/logprobs.h"

#include <algorithm>
#include <cmath>

namespace gantry::engine {

float token_logprobs(std::span<const float> logits, int32_t chosen, int top_n,
                     LogprobScratch &scratch, std::vector<std::pair<int32_t, float>> &top) {
  top.clear();
  if (logits.empty())
    return -INFINITY;
  float mx = -INFINITY;
  for (float l : logits)
    mx = std::max(mx, l);
  // In double: a 32k vocabulary's sum loses digits in float that the 1e-3 tolerance against
  // llama.cpp would notice on near-ties.
  double sum = 0;
  for (float l : logits)
    sum += std::exp(static_cast<double>(l) - mx);
  const double lse = static_cast<double>(mx) + std::log(sum);
  auto lp = [&](int32_t t) { return static_cast<float>(static_cast<double>(logits[t]) - lse); };

  const auto n_vocab = static_cast<int32_t>(logits.size());
  const int n = std::clamp(top_n, 0, static_cast<int>(n_vocab));
  if (n > 0) {
    auto &order = scratch.order;
    order.resize(n_vocab);
    for (int32_t i = 0; i < n_vocab; ++i)
      order[i] = i;
    std::partial_sort(order.begin(), order.begin() + n, order.end(), [&](int32_t a, int32_t b) {
      return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
    });
    top.reserve(n);
    for (int i = 0; i < n; ++i)
      top.emplace_back(order[i], lp(order[i]));
  }
  if (chosen < 0 || chosen >= n_vocab)
    return -INFINITY;
  return lp(chosen);
}

} // namespace gantry::engine
