// Template definitions for ops.h.
#pragma once

#include <cassert>
#include <cmath>
#include <cstring>

namespace gantry::engine {

template <typename KRow, typename VRow>
void attention_group(const float *const *q, float *const *out, int n_q, int n_ctx, int head_dim,
                     float scale, KRow k_row, VRow v_row, float *scores) {
  constexpr int kMaxGroup = 64;
  assert(n_q <= kMaxGroup);
  // Each K and V row is loaded once for all query heads of the group.
  for (int j = 0; j < n_ctx; ++j) {
    const float *kr = k_row(j);
    for (int h = 0; h < n_q; ++h) {
      scores[h * n_ctx + j] = kernels::dot_f32(q[h], kr, head_dim) * scale;
    }
  }
  float inv[kMaxGroup];
  for (int h = 0; h < n_q; ++h) {
    float *s = scores + h * n_ctx;
    float mx = -INFINITY;
    for (int j = 0; j < n_ctx; ++j) mx = s[j] > mx ? s[j] : mx;
    double sum = 0;
    for (int j = 0; j < n_ctx; ++j) {
      const float e = std::exp(s[j] - mx);
      s[j] = e;
      sum += e;
    }
    inv[h] = static_cast<float>(1.0 / sum);
    std::memset(out[h], 0, sizeof(float) * head_dim);
  }
  for (int j = 0; j < n_ctx; ++j) {
    const float *vr = v_row(j);
    for (int h = 0; h < n_q; ++h) {
      kernels::axpy(scores[h * n_ctx + j] * inv[h], vr, out[h], head_dim);
    }
  }
}

template <typename KRow, typename VRow>
void attention_head(const float *q, int n_ctx, int head_dim, float scale, KRow k_row, VRow v_row,
                    float *scores, float *out) {
  attention_group(&q, &out, 1, n_ctx, head_dim, scale, k_row, v_row, scores);
}

} // namespace gantry::engine
