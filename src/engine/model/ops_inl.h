// Template definitions for ops.h.
#pragma once

#include <cmath>
#include <cstring>

namespace gantry::engine {

template <typename KRow, typename VRow>
void attention_head(const float *q, int n_ctx, int head_dim, float scale, KRow k_row, VRow v_row,
                    float *scores, float *out) {
  float mx = -INFINITY;
  for (int j = 0; j < n_ctx; ++j) {
    const float s = kernels::dot_f32(q, k_row(j), head_dim) * scale;
    scores[j] = s;
    mx = s > mx ? s : mx;
  }
  double sum = 0;
  for (int j = 0; j < n_ctx; ++j) {
    const float e = std::exp(scores[j] - mx);
    scores[j] = e;
    sum += e;
  }
  const float inv = static_cast<float>(1.0 / sum);
  std::memset(out, 0, sizeof(float) * head_dim);
  for (int j = 0; j < n_ctx; ++j) kernels::axpy(scores[j] * inv, v_row(j), out, head_dim);
}

} // namespace gantry::engine
