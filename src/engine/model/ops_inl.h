// Template definitions for ops.h.
#pragma once

#include <cassert>
#include <cmath>
#include <cstring>
#include <type_traits>

namespace gantry::engine {

namespace attention_detail {

// llama.cpp's online softmax with an fp32 accumulator (its path for V rows that are not fp16),
// for float V rows and as the fallback when an fp16 accumulator overflows.
template <typename VRow>
void attend_fp32(const float *s, int n_ctx, int head_dim, VRow v_row, float *out) {
  float mx = -INFINITY, sum = 0;
  std::memset(out, 0, sizeof(float) * head_dim);
  for (int j = 0; j < n_ctx; ++j) {
    const auto *v = v_row(j);
    float ms = 1.0f, vs = 1.0f;
    if (s[j] > mx) {
      ms = std::exp(mx - s[j]);
      mx = s[j];
      for (int i = 0; i < head_dim; ++i)
        out[i] *= ms;
    } else {
      vs = std::exp(s[j] - mx);
    }
    for (int i = 0; i < head_dim; ++i) {
      float x;
      if constexpr (std::is_same_v<std::remove_cv_t<std::remove_pointer_t<decltype(v)>>,
                                   uint16_t>) {
        x = kernels::fp16_to_fp32(v[i]);
      } else {
        x = v[i];
      }
      out[i] = std::fma(x, vs, out[i]);
    }
    sum = std::fma(sum, ms, vs);
  }
  const float inv = sum == 0.0f ? 0.0f : 1.0f / sum;
  for (int i = 0; i < head_dim; ++i)
    out[i] *= inv;
}

} // namespace attention_detail

template <typename KRow, typename VRow>
void attention_group(const float *const *q, float *const *out, int n_q, int n_ctx, int head_dim,
                     float scale, KRow k_row, VRow v_row, int64_t stride, int run, float *scores,
                     int first, float softcap) {
  assert(n_q <= 64); // model_config refuses larger GQA groups
  assert(first >= 0 && first < n_ctx);
  // From here on positions are relative to `first`; KV blocks stay aligned to absolute ones.
  const int n = n_ctx - first;
  auto k_at = [&](int j) { return k_row(j + first); };
  auto v_at = [&](int j) { return v_row(j + first); };
  auto run_end = [&](int j0) { return std::min(n, ((j0 + first) / run + 1) * run - first); };
  using KElem = std::remove_cv_t<std::remove_pointer_t<decltype(k_row(0))>>;
  using VElem = std::remove_cv_t<std::remove_pointer_t<decltype(v_row(0))>>;
  constexpr bool kF16 = std::is_same_v<KElem, uint16_t>;
  constexpr bool kF16V = std::is_same_v<VElem, uint16_t>;
  // The arithmetic of llama.cpp's CPU flash attention (ggml_compute_forward_flash_attn_ext_f16),
  // whose logits Gantry's are compared with: against an fp16 cache it rounds Q to fp16 before
  // the K·Q products and accumulates softmax·V in fp16 (VKQ16), then divides by the sum in
  // float. Keeping those in fp32 put our log-probabilities a few 1e-3 off its own late in a
  // generation. The products of fp16 values are exact in float; llama.cpp sums them in double
  // for rows shorter than its SIMD step and in an order that depends on the CPU for longer ones,
  // and our float sum differs from either by an ulp at most, which the comparison test shows to
  // be lost in the differences of the rest of the forward pass.
  // Scratch after the scores: the rounded queries, then the fp16 accumulators.
  float *qr = scores + static_cast<size_t>(n_q) * n;
  auto *acc = reinterpret_cast<uint16_t *>(qr + static_cast<size_t>(n_q) * head_dim);
  const float *qk[64];
  for (int h = 0; h < n_q; ++h) {
    if constexpr (kF16) {
      // Through the fp16 accumulators, which are zeroed before use.
      float *r = qr + static_cast<size_t>(h) * head_dim;
      uint16_t *h16 = acc + static_cast<size_t>(h) * head_dim;
      kernels::fp32_to_fp16_row(q[h], h16, head_dim);
      kernels::fp16_to_fp32_row(h16, r, head_dim);
      qk[h] = r;
    } else {
      qk[h] = q[h];
    }
  }
  // Positions come in runs of `run` rows `stride` elements apart (one KV block); each run is one
  // kernel call, and each K and V row is loaded once for all query heads of the group.
  for (int j0 = 0; j0 < n;) {
    const int j1 = run_end(j0);
    const auto *kr = k_at(j0);
    if constexpr (kF16) {
      kernels::dot_rows_heads(qk, n_q, kr, stride, j1 - j0, head_dim, scale, scores + j0, n);
    } else {
      for (int h = 0; h < n_q; ++h)
        kernels::dot_rows(qk[h], kr, stride, j1 - j0, head_dim, scale, scores + h * n + j0);
    }
    j0 = j1;
  }
  if (softcap > 0.0f) {
    for (size_t i = 0; i < static_cast<size_t>(n_q) * n; ++i)
      scores[i] = softcap * std::tanh(scores[i]);
  }
  if constexpr (kF16V) {
    float mx[64], sum[64];
    for (int h = 0; h < n_q; ++h) {
      mx[h] = -INFINITY;
      sum[h] = 0;
    }
    std::memset(acc, 0, sizeof(uint16_t) * n_q * head_dim);
    for (int j0 = 0; j0 < n;) {
      const int j1 = run_end(j0);
      const auto *vr = v_at(j0);
      kernels::attend_rows_f16(scores + j0, n, n_q, vr, stride, j1 - j0, head_dim, mx, sum, acc);
      j0 = j1;
    }
    for (int h = 0; h < n_q; ++h) {
      kernels::fp16_to_fp32_row(acc + static_cast<size_t>(h) * head_dim, out[h], head_dim);
      bool finite = true;
      for (int i = 0; i < head_dim; ++i)
        finite &= std::isfinite(out[h][i]);
      if (!finite) {
        // Past fp16's range (|acc| > 65504: large values over a long context) llama.cpp's
        // output is inf or NaN; ours falls back to an fp32 accumulator instead.
        attention_detail::attend_fp32(scores + h * n, n, head_dim, v_at, out[h]);
        continue;
      }
      kernels::scale(out[h], sum[h] == 0.0f ? 0.0f : 1.0f / sum[h], head_dim);
    }
  } else {
    for (int h = 0; h < n_q; ++h)
      attention_detail::attend_fp32(scores + h * n, n, head_dim, v_at, out[h]);
  }
}

template <typename KRow, typename VRow>
void attention_head(const float *q, int n_ctx, int head_dim, float scale, KRow k_row, VRow v_row,
                    float *scores, float *out) {
  attention_group(&q, &out, 1, n_ctx, head_dim, scale, k_row, v_row, 0, 1, scores);
}

} // namespace gantry::engine
