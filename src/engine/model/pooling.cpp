#include "engine/model/pooling.h"

#include <algorithm>
#include <cassert>
#include <cmath>

namespace gantry::engine {

std::vector<float> pool_embedding(std::span<const float> hidden, int n_tokens, int n_embd,
                                  Pooling pooling) {
  assert(n_tokens >= 1 && hidden.size() >= static_cast<size_t>(n_tokens) * n_embd);
  const size_t d = static_cast<size_t>(n_embd);
  std::vector<float> out(d, 0.0f);
  switch (pooling) {
  case Pooling::kCls:
    std::copy(hidden.begin(), hidden.begin() + static_cast<std::ptrdiff_t>(d), out.begin());
    break;
  case Pooling::kLast: {
    const auto first = hidden.begin() + static_cast<std::ptrdiff_t>((n_tokens - 1) * d);
    std::copy(first, first + static_cast<std::ptrdiff_t>(d), out.begin());
    break;
  }
  case Pooling::kMean: {
    std::vector<double> sum(d, 0.0);
    for (int t = 0; t < n_tokens; ++t) {
      for (size_t i = 0; i < d; ++i)
        sum[i] += hidden[t * d + i];
    }
    for (size_t i = 0; i < d; ++i)
      out[i] = static_cast<float>(sum[i] / n_tokens);
    break;
  }
  }
  l2_normalize(out);
  return out;
}

void l2_normalize(std::span<float> v) {
  double norm = 0;
  for (float x : v)
    norm += static_cast<double>(x) * x;
  norm = std::sqrt(norm);
  if (norm > 0) {
    for (float &x : v)
      x = static_cast<float>(x / norm);
  }
}

} // namespace gantry::engine
