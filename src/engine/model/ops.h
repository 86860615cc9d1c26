// The position-dependent pieces of the Llama forward pass, separate from the model so that
// tests can check them on small hand-made tensors.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "engine/kernels/kernels.h"

namespace gantry::engine {

struct RopeParams {
  int n_rot = 0; // rotated dimensions per head (<= head_dim)
  float freq_base = 10000.0f;
  float freq_scale = 1.0f;
  bool neox = false; // pairs (i, i + n_rot/2) instead of (2i, 2i+1)
  const std::vector<float> *freq_factors = nullptr;
  float mscale = 1.0f; // multiplies cos and sin (ggml's attn_factor; LongRoPE sets it)
};

// cos and sin of the n_rot/2 rotation angles at position pos, built as ggml does
// (theta *= base^(-2/n_rot) in float) so that the angles match llama.cpp bit for bit. They
// depend only on the position, so a forward pass computes them once per token for all layers.
void rope_angles(int pos, const RopeParams &p, float *cs, float *sn);
// Rotates n_heads heads of head_dim floats in place by precomputed angles.
void rope_apply(float *x, int n_heads, int head_dim, const RopeParams &p, const float *cs,
                const float *sn);
// Both at once, for one vector.
void rope(float *x, int n_heads, int head_dim, int pos, const RopeParams &p);

// The query heads that share one KV head (grouped-query attention) for one token: each K and V
// row is read once for the whole group. Rows j..(end of j's run of `run` positions) are
// `stride` elements apart starting at k_row(j) / v_row(j), fp16 (the KV cache) or float.
// `scores` is scratch of attention_scratch(n_q, n_ctx, head_dim) floats.
// Only positions [first, n_ctx) are attended (a sliding window; k_row/v_row still take absolute
// positions). softcap > 0 replaces each scaled score s by softcap * tanh(s), as llama.cpp's flash
// attention does with a logit soft-cap (the caller then folds 1/softcap into `scale`).
inline size_t attention_scratch(int n_q, int n_ctx, int head_dim) {
  return static_cast<size_t>(n_q) * (n_ctx + 2 * static_cast<size_t>(head_dim));
}
template <typename KRow, typename VRow>
void attention_group(const float *const *q, float *const *out, int n_q, int n_ctx, int head_dim,
                     float scale, KRow k_row, VRow v_row, int64_t stride, int run, float *scores,
                     int first = 0, float softcap = 0.0f);

// One attention head for one query: softmax(q·K^T * scale) · V over n_ctx positions, where
// row(j) gives the K (or V) row of position j. `scores` is scratch of
// attention_scratch(1, n_ctx, head_dim) floats.
template <typename KRow, typename VRow>
void attention_head(const float *q, int n_ctx, int head_dim, float scale, KRow k_row, VRow v_row,
                    float *scores, float *out);

} // namespace gantry::engine

#include "engine/model/ops_inl.h"
