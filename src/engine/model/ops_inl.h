// Template definitions for ops.h.
#pragma once

#include <cassert>
#include <cmath>
#include <cstring>

namespace gantry::engine {

template <typename KRow, typename VRow>
void attention_group(const float *const *q, float *const *out, int n_q, int n_ctx, int head_dim,
                     float scale, KRow k_row, VRow v_row, int64_t stride, int run, float *scores) {
  assert(n_q <= 64); // model_config refuses larger GQA groups
  // Positions come in runs of `run` rows `stride` floats apart (one KV block); each run is one
  // kernel call, and each K and V row is loaded once for all query heads of the group.
  for (int j0 = 0; j0 < n_ctx;) {
    const int j1 = std::min(n_ctx, (j0 / run + 1) * run);
    const auto *kr = k_row(j0);
    for (int h = 0; h < n_q; ++h) {
      kernels::dot_rows(q[h], kr, stride, j1 - j0, head_dim, scale, scores + h * n_ctx + j0);
    }
    j0 = j1;
  }
  for (int h = 0; h < n_q; ++h) {
    float *s = scores + h * n_ctx;
    float mx = -INFINITY;
    for (int j = 0; j < n_ctx; ++j)
      mx = s[j] > mx ? s[j] : mx;
    double sum = 0;
    for (int j = 0; j < n_ctx; ++j) {
      const float e = std::exp(s[j] - mx);
      s[j] = e;
      sum += e;
    }
    const float inv = static_cast<float>(1.0 / sum);
    for (int j = 0; j < n_ctx; ++j)
      s[j] *= inv;
    std::memset(out[h], 0, sizeof(float) * head_dim);
  }
  for (int j0 = 0; j0 < n_ctx;) {
    const int j1 = std::min(n_ctx, (j0 / run + 1) * run);
    const auto *vr = v_row(j0);
    for (int h = 0; h < n_q; ++h) {
      kernels::axpy_rows(scores + h * n_ctx + j0, vr, stride, j1 - j0, head_dim, out[h]);
    }
    j0 = j1;
  }
}

template <typename KRow, typename VRow>
void attention_head(const float *q, int n_ctx, int head_dim, float scale, KRow k_row, VRow v_row,
                    float *scores, float *out) {
  attention_group(&q, &out, 1, n_ctx, head_dim, scale, k_row, v_row, 0, 1, scores);
}

} // namespace gantry::engine
