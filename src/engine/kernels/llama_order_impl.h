// Internal to llama_order.cpp: the arithmetic of llama.cpp's AVX2 build (8-lane vectors),
// computed on any instruction set (llama_order_8.cpp). The AVX-512 build's lives in
// llama_order.cpp itself.
#pragma once

#include <cmath>
#include <cstdint>

#include "engine/kernels/kernels.h"

namespace gantry::engine::kernels::llama_order {

// The coefficients of ggml_v_expf (from Arm's optimized-routines expf: maximum error 1.45 ulp plus
// 0.5), shared by both builds' versions, which differ in how they scale by 2^n and saturate.
namespace exp_poly {
constexpr float kShift = 0x1.8p23f;
constexpr float kInvLn2 = 0x1.715476p+0f;
constexpr float kLn2Hi = 0x1.62e4p-1f;
constexpr float kLn2Lo = 0x1.7f7d1cp-20f;
constexpr float kC0 = 0x1.ffffecp-1f;
constexpr float kC1 = 0x1.fffdb6p-2f;
constexpr float kC2 = 0x1.555e66p-3f;
constexpr float kC3 = 0x1.573e2ep-5f;
constexpr float kC4 = 0x1.0e4020p-7f;
} // namespace exp_poly

// The lane-by-lane versions both builds share, for W-lane vectors and a build's reduction tree
// (the scalar instruction set, and the columns no whole vector covers). Included only by files
// built with -ffp-contract=off: every fused multiply-add is written out.
namespace lanes {

// The columns after the last whole 4-vector step, as GCC vectorises ggml's `sumf += x[i]*y[i]`:
// W and then W/2 rounded products at a time added in order, the last ones fused.
template <int W> float leftovers(const float *x, const float *y, int64_t i, int64_t n, float sum) {
  for (; n - i >= W; i += W) {
    for (int l = 0; l < W; ++l)
      sum += x[i + l] * y[i + l];
  }
  if (n - i >= W / 2) {
    for (int l = 0; l < W / 2; ++l)
      sum += x[i + l] * y[i + l];
    i += W / 2;
  }
  for (; i < n; ++i)
    sum = std::fma(x[i], y[i], sum);
  return sum;
}

// Four W-lane accumulators over 4W-column steps, summed (0+2) + (1+3), reduced by Reduce.
template <int W, float (*Reduce)(const float *), typename Load>
float four_accumulators(const float *y, int64_t np, Load x_at) {
  float acc[4][W] = {};
  for (int64_t i = 0; i < np; i += 4 * W) {
    for (int j = 0; j < 4; ++j) {
      for (int l = 0; l < W; ++l)
        acc[j][l] = std::fma(x_at(i + j * W + l), y[i + j * W + l], acc[j][l]);
    }
  }
  float s[W];
  for (int l = 0; l < W; ++l)
    s[l] = (acc[0][l] + acc[2][l]) + (acc[1][l] + acc[3][l]);
  return Reduce(s);
}

// ggml_vec_dot_f32.
template <int W, float (*Reduce)(const float *)>
float vec_dot(const float *x, const float *y, int64_t n) {
  const int64_t np = n & ~int64_t{4 * W - 1};
  const float sum =
      np > 0 ? four_accumulators<W, Reduce>(y, np, [&](int64_t c) { return x[c]; }) : 0.0f;
  return leftovers<W>(x, y, np, n, sum);
}

// ggml_vec_dot_f16 (q holds fp16 values): the columns after the last step summed in double.
template <int W, float (*Reduce)(const float *)>
float dot_f16(const float *q, const uint16_t *k, int64_t n) {
  const int64_t np = n & ~int64_t{4 * W - 1};
  double sum =
      np > 0 ? four_accumulators<W, Reduce>(q, np, [&](int64_t c) { return fp16_to_fp32(k[c]); })
             : 0.0;
  for (int64_t i = np; i < n; ++i)
    sum += static_cast<double>(fp16_to_fp32(k[i]) * q[i]);
  return static_cast<float>(sum);
}

} // namespace lanes

} // namespace gantry::engine::kernels::llama_order

namespace gantry::engine::kernels::llama_order::build8 {

// ggml_vec_dot_f32: four 8-lane accumulators over 32-column steps, halves then two horizontal
// adds, then the leftover columns (8 and 4 rounded products at a time in order, the rest fused).
float vec_dot(const float *x, const float *y, int64_t n);
// tinyBLAS<8>: 4 rows x t_count tokens (1..6 on AVX-512 CPUs, 1..3 otherwise), one 8-lane
// accumulator per output over k (a multiple of 8), then its hsum; out is [t][4].
void tiles(int t_count, const float *const *a, const float *const *b, int64_t k, float *out);
// ggml_vec_dot_f16: four 8-lane accumulators over 32-column steps, the rest in double (dot_f16:
// lane by lane; dot_rows_f16: out[r] = dot(q, row r) * scale on the best instruction set).
float dot_f16(const float *q, const uint16_t *k, int64_t n);
void dot_rows_f16(const float *q, const uint16_t *rows, int64_t stride, int64_t n_rows, int64_t n,
                  float scale, float *out);
// dot_rows_f16 for n_q heads against the same rows: out[h * out_stride + r].
void dot_heads_f16(const float *const *q, int n_q, const uint16_t *rows, int64_t stride,
                   int64_t n_rows, int64_t n, float scale, float *out, int64_t out_stride);
// ggml_vec_swiglu_f32: 8-lane chunks of that build's exp (a different one from AVX-512's), the
// rest with libm's expf.
void silu_mul(const float *gate, const float *up, float *out, int64_t n);

} // namespace gantry::engine::kernels::llama_order::build8
