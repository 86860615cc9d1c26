// Dequantization, encoders and the scalar reference dot products of Q4_1, Q5_0, Q5_1, IQ4_NL,
// Q2_K, Q3_K and Q5_K. The scalar dots spell out the integer arithmetic the SIMD kernels
// (quant_dots_inl.h) perform: exact int32 sums per block or super-block, then float scales.
#include "engine/kernels/quants.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstring>
#include <type_traits>

#include "engine/kernels/kernels_impl.h"

namespace gantry::engine::kernels {
namespace {

float h2f(uint16_t h) { return fp16_to_fp32(h); }

// The 4-bit value of element j (0..31) of a 32-element block's packed nibbles.
inline int nibble(const uint8_t *qs, int j) { return j < 16 ? (qs[j] & 0x0F) : (qs[j - 16] >> 4); }

// Element j's fifth bit from the little-endian word qh.
inline int fifth_bit(const uint8_t *qh, int j) { return (qh[j / 8] >> (j % 8)) & 1; }

// The integer value of element j of a 32-element block: what d (and for Q4_1/Q5_1 the min m)
// multiply.
template <typename Block> int int_value(const Block &b, int j);
template <> int int_value(const BlockQ4_1 &b, int j) { return nibble(b.qs, j); }
template <> int int_value(const BlockQ5_0 &b, int j) {
  return (nibble(b.qs, j) | (fifth_bit(b.qh, j) << 4)) - 16;
}
template <> int int_value(const BlockQ5_1 &b, int j) {
  return nibble(b.qs, j) | (fifth_bit(b.qh, j) << 4);
}
template <> int int_value(const BlockIQ4_NL &b, int j) { return kIq4nlValues[nibble(b.qs, j)]; }

template <typename Block> constexpr bool kHasMin = false;
template <> constexpr bool kHasMin<BlockQ4_1> = true;
template <> constexpr bool kHasMin<BlockQ5_1> = true;

template <typename Block> float block_min(const Block &b) {
  if constexpr (kHasMin<Block>) {
    return h2f(b.m);
  } else {
    return 0.0f;
  }
}

template <typename Block> void dequantize_32(const void *src, float *y, int64_t n) {
  const auto *b = static_cast<const Block *>(src);
  for (int64_t i = 0; i < n / kQK; ++i) {
    const float d = h2f(b[i].d), m = block_min(b[i]);
    for (int j = 0; j < kQK; ++j)
      *y++ = d * static_cast<float>(int_value(b[i], j)) + m;
  }
}

// Q5_K element e's 5-bit value (0..31).
inline int q5_k_value(const BlockQ5_K &b, int e) {
  const int j = e / 32, l = e % 32;
  const uint8_t byte = b.qs[32 * (j / 2) + l];
  const int low = j % 2 ? (byte >> 4) : (byte & 0x0F);
  return low | (((b.qh[l] >> j) & 1) << 4);
}

void dequantize_q2_k(const void *src, float *y, int64_t n) {
  const auto *b = static_cast<const BlockQ2_K *>(src);
  for (int64_t i = 0; i < n / kQKK; ++i) {
    const float d = h2f(b[i].d), dmin = h2f(b[i].dmin);
    for (int e = 0; e < kQKK; ++e) {
      const uint8_t s = b[i].scales[e / 16];
      *y++ = d * static_cast<float>(s & 0x0F) * static_cast<float>(q2_bits(b[i].qs, e)) -
             dmin * static_cast<float>(s >> 4);
    }
  }
}

void dequantize_q3_k(const void *src, float *y, int64_t n) {
  const auto *b = static_cast<const BlockQ3_K *>(src);
  for (int64_t i = 0; i < n / kQKK; ++i) {
    const float d = h2f(b[i].d);
    for (int e = 0; e < kQKK; ++e) {
      *y++ = d * static_cast<float>(q3_k_scale(e / 16, b[i].scales)) *
             static_cast<float>(q3_k_value(b[i], e));
    }
  }
}

void dequantize_q5_k(const void *src, float *y, int64_t n) {
  const auto *b = static_cast<const BlockQ5_K *>(src);
  for (int64_t i = 0; i < n / kQKK; ++i) {
    const float d = h2f(b[i].d), dmin = h2f(b[i].dmin);
    for (int e = 0; e < kQKK; ++e) {
      uint8_t sc, m;
      scale_min_k4(e / 32, b[i].scales, &sc, &m);
      *y++ = d * static_cast<float>(sc) * static_cast<float>(q5_k_value(b[i], e)) -
             dmin * static_cast<float>(m);
    }
  }
}

// ---- encoders -----------------------------------------------------------------------------------

int clamp_round(float v, int lo, int hi) {
  return std::clamp(static_cast<int>(std::lround(v)), lo, hi);
}

void set_nibble(uint8_t *qs, int j, int q) {
  if (j < 16) {
    qs[j] = static_cast<uint8_t>((qs[j] & 0xF0) | (q & 0x0F));
  } else {
    qs[j - 16] = static_cast<uint8_t>((qs[j - 16] & 0x0F) | ((q & 0x0F) << 4));
  }
}

void set_fifth_bit(uint8_t *qh, int j, int q) {
  if (q & 0x10)
    qh[j / 8] = static_cast<uint8_t>(qh[j / 8] | (1 << (j % 8)));
}

// Q4_1 / Q5_1: value = d * q + m with q in 0..levels-1, m the block's minimum.
template <typename Block, int kLevels> void quantize_min_32(const float *x, void *dst, int64_t n) {
  auto *b = static_cast<Block *>(dst);
  for (int64_t i = 0; i < n / kQK; ++i, x += kQK) {
    std::memset(&b[i], 0, sizeof(Block));
    const auto [lo, hi] = std::minmax_element(x, x + kQK);
    b[i].d = fp32_to_fp16((*hi - *lo) / static_cast<float>(kLevels - 1));
    b[i].m = fp32_to_fp16(*lo);
    const float d = h2f(b[i].d), m = h2f(b[i].m);
    const float id = d != 0 ? 1.0f / d : 0.0f;
    for (int j = 0; j < kQK; ++j) {
      const int q = clamp_round((x[j] - m) * id, 0, kLevels - 1);
      set_nibble(b[i].qs, j, q);
      if constexpr (kLevels == 32)
        set_fifth_bit(b[i].qh, j, q);
    }
  }
}

// The element of largest magnitude, with its sign.
float signed_abs_max(const float *x, int n) {
  float amax = 0, vmax = 0;
  for (int j = 0; j < n; ++j) {
    if (std::fabs(x[j]) > amax) {
      amax = std::fabs(x[j]);
      vmax = x[j];
    }
  }
  return vmax;
}

void quantize_q5_0(const float *x, void *dst, int64_t n) {
  auto *b = static_cast<BlockQ5_0 *>(dst);
  for (int64_t i = 0; i < n / kQK; ++i, x += kQK) {
    std::memset(&b[i], 0, sizeof(BlockQ5_0));
    // Like Q4_0, the element of largest magnitude maps to -16 so its sign gets the extra level.
    b[i].d = fp32_to_fp16(signed_abs_max(x, kQK) / -16.0f);
    const float d = h2f(b[i].d);
    const float id = d != 0 ? 1.0f / d : 0.0f;
    for (int j = 0; j < kQK; ++j) {
      const int q = clamp_round(x[j] * id, -16, 15) + 16;
      set_nibble(b[i].qs, j, q);
      set_fifth_bit(b[i].qh, j, q);
    }
  }
}

void quantize_iq4_nl(const float *x, void *dst, int64_t n) {
  auto *b = static_cast<BlockIQ4_NL *>(dst);
  for (int64_t i = 0; i < n / kQK; ++i, x += kQK) {
    std::memset(&b[i], 0, sizeof(BlockIQ4_NL));
    b[i].d = fp32_to_fp16(signed_abs_max(x, kQK) / -127.0f);
    const float d = h2f(b[i].d);
    for (int j = 0; j < kQK; ++j) {
      int best = 0;
      float best_err = INFINITY;
      for (int k = 0; k < 16; ++k) {
        const float err = std::fabs(x[j] - d * static_cast<float>(kIq4nlValues[k]));
        if (err < best_err) {
          best_err = err;
          best = k;
        }
      }
      set_nibble(b[i].qs, j, best);
    }
  }
}

// Per 16 elements a 4-bit scale and min over d and dmin; q in 0..3.
void quantize_q2_k(const float *x, void *dst, int64_t n) {
  auto *b = static_cast<BlockQ2_K *>(dst);
  for (int64_t i = 0; i < n / kQKK; ++i, x += kQKK) {
    std::memset(&b[i], 0, sizeof(BlockQ2_K));
    float scales[16], mins[16], max_scale = 0, max_min = 0;
    for (int g = 0; g < 16; ++g) {
      float lo = 0, hi = 0;
      for (int l = 0; l < 16; ++l) {
        lo = std::min(lo, x[16 * g + l]);
        hi = std::max(hi, x[16 * g + l]);
      }
      scales[g] = (hi - lo) / 3.0f;
      mins[g] = -lo;
      max_scale = std::max(max_scale, scales[g]);
      max_min = std::max(max_min, mins[g]);
    }
    b[i].d = fp32_to_fp16(max_scale / 15.0f);
    b[i].dmin = fp32_to_fp16(max_min / 15.0f);
    const float d = h2f(b[i].d), dmin = h2f(b[i].dmin);
    for (int g = 0; g < 16; ++g) {
      const int sc = d > 0 ? clamp_round(scales[g] / d, 0, 15) : 0;
      const int m = dmin > 0 ? std::min(15, static_cast<int>(std::ceil(mins[g] / dmin))) : 0;
      b[i].scales[g] = static_cast<uint8_t>(sc | (m << 4));
      const float step = d * static_cast<float>(sc), off = dmin * static_cast<float>(m);
      const float inv = step > 0 ? 1.0f / step : 0.0f;
      for (int l = 0; l < 16; ++l) {
        const int e = 16 * g + l, h = e / 128, k = e % 128;
        const int q = clamp_round((x[e] + off) * inv, 0, 3);
        b[i].qs[32 * h + k % 32] |= static_cast<uint8_t>(q << (2 * (k / 32)));
      }
    }
  }
}

// Per 16 elements a signed 6-bit scale over d; q in -4..3.
void quantize_q3_k(const float *x, void *dst, int64_t n) {
  auto *b = static_cast<BlockQ3_K *>(dst);
  for (int64_t i = 0; i < n / kQKK; ++i, x += kQKK) {
    std::memset(&b[i], 0, sizeof(BlockQ3_K));
    float scales[16], max_scale = 0;
    for (int g = 0; g < 16; ++g) {
      float amax = 0;
      for (int l = 0; l < 16; ++l)
        amax = std::max(amax, std::fabs(x[16 * g + l]));
      scales[g] = amax / 3.0f; // -4..3 steps: +-3 covers both signs
      max_scale = std::max(max_scale, scales[g]);
    }
    b[i].d = fp32_to_fp16(max_scale / 31.0f);
    const float d = h2f(b[i].d);
    for (int g = 0; g < 16; ++g) {
      const int sc = d > 0 ? clamp_round(scales[g] / d, 0, 31) : 0;
      const int stored = sc + 32;
      if (g < 8) {
        b[i].scales[g] |= static_cast<uint8_t>(stored & 0x0F);
      } else {
        b[i].scales[g - 8] |= static_cast<uint8_t>((stored & 0x0F) << 4);
      }
      b[i].scales[8 + g % 4] |= static_cast<uint8_t>((stored >> 4) << (2 * (g / 4)));
      const float step = d * static_cast<float>(sc);
      const float inv = step > 0 ? 1.0f / step : 0.0f;
      for (int l = 0; l < 16; ++l) {
        const int e = 16 * g + l, h = e / 128, k = e % 128;
        const int v = clamp_round(x[e] * inv, -4, 3);
        const int low = v >= 0 ? v : v + 4;
        b[i].qs[32 * h + k % 32] |= static_cast<uint8_t>(low << (2 * (k / 32)));
        if (v >= 0)
          b[i].hmask[k % 32] |= static_cast<uint8_t>(1 << (4 * h + k / 32));
      }
    }
  }
}

// Like quantize_row_q4_k (kernels.cpp) with 32 levels and the fifth bit in qh.
void quantize_q5_k(const float *x, void *dst, int64_t n) {
  auto *b = static_cast<BlockQ5_K *>(dst);
  for (int64_t i = 0; i < n / kQKK; ++i, x += kQKK) {
    std::memset(&b[i], 0, sizeof(BlockQ5_K));
    float scales[8], mins[8], max_scale = 0, max_min = 0;
    for (int j = 0; j < 8; ++j) {
      float lo = 0, hi = 0;
      for (int l = 0; l < 32; ++l) {
        lo = std::min(lo, x[32 * j + l]);
        hi = std::max(hi, x[32 * j + l]);
      }
      scales[j] = (hi - lo) / 31.0f;
      mins[j] = -lo;
      max_scale = std::max(max_scale, scales[j]);
      max_min = std::max(max_min, mins[j]);
    }
    b[i].d = fp32_to_fp16(max_scale / 63.0f);
    b[i].dmin = fp32_to_fp16(max_min / 63.0f);
    const float d = h2f(b[i].d), dmin = h2f(b[i].dmin);
    uint8_t sc[8], m[8];
    for (int j = 0; j < 8; ++j) {
      sc[j] = static_cast<uint8_t>(d > 0 ? clamp_round(scales[j] / d, 0, 63) : 0);
      m[j] = static_cast<uint8_t>(dmin > 0 ? std::min(63.0f, std::ceil(mins[j] / dmin)) : 0);
    }
    for (int j = 0; j < 4; ++j) {
      b[i].scales[j] = static_cast<uint8_t>(sc[j] | ((sc[j + 4] >> 4) << 6));
      b[i].scales[j + 4] = static_cast<uint8_t>(m[j] | ((m[j + 4] >> 4) << 6));
      b[i].scales[j + 8] = static_cast<uint8_t>((sc[j + 4] & 0x0F) | ((m[j + 4] & 0x0F) << 4));
    }
    for (int j = 0; j < 8; ++j) {
      const float step = d * sc[j], off = dmin * m[j];
      const float inv = step > 0 ? 1.0f / step : 0.0f;
      for (int l = 0; l < 32; ++l) {
        const int q = clamp_round((x[32 * j + l] + off) * inv, 0, 31);
        b[i].qs[32 * (j / 2) + l] |= static_cast<uint8_t>(j % 2 ? (q & 0x0F) << 4 : q & 0x0F);
        b[i].qh[l] |= static_cast<uint8_t>((q >> 4) << j);
      }
    }
  }
}

// ---- scalar dot products --------------------------------------------------------------------

template <typename Block> float dot_32(const void *row, const Activations &a, int64_t t) {
  const int64_t n = a.cols, nb = n / kQK;
  const auto *b = static_cast<const Block *>(row);
  const int8_t *q = a.qs + t * n;
  const float *xd = a.d + t * nb;
  float sum = 0;
  for (int64_t i = 0; i < nb; ++i, q += kQK) {
    int isum = 0;
    for (int j = 0; j < kQK; ++j)
      isum += int_value(b[i], j) * q[j];
    sum += h2f(b[i].d) * xd[i] * static_cast<float>(isum);
    if constexpr (kHasMin<Block>)
      sum += h2f(b[i].m) * xd[i] * static_cast<float>(a.sums[t * nb + i]);
  }
  return sum;
}

// The K-quants: per super-block the exact integer sums isum and imin, then
// sum = fma(isum, d * d_x, sum), summ = fma(imin, dmin * d_x, summ); the output is sum - summ
// (the order every SIMD kernel follows, see quant_dots_inl.h).
struct SuperSums {
  int isum = 0, imin = 0;
};

SuperSums sums_q2_k(const BlockQ2_K &b, const int8_t *q, const int16_t *bs) {
  SuperSums s;
  for (int g = 0; g < 16; ++g) {
    int isum = 0;
    for (int l = 0; l < 16; ++l)
      isum += q2_bits(b.qs, 16 * g + l) * q[16 * g + l];
    s.isum += (b.scales[g] & 0x0F) * isum;
    s.imin += (b.scales[g] >> 4) * bs[g];
  }
  return s;
}

SuperSums sums_q3_k(const BlockQ3_K &b, const int8_t *q, const int16_t *) {
  SuperSums s;
  for (int g = 0; g < 16; ++g) {
    int isum = 0;
    for (int l = 0; l < 16; ++l)
      isum += q3_k_value(b, 16 * g + l) * q[16 * g + l];
    s.isum += q3_k_scale(g, b.scales) * isum;
  }
  return s;
}

template <typename Block> SuperSums sums_q45_k(const Block &b, const int8_t *q, const int16_t *bs) {
  SuperSums s;
  for (int j = 0; j < 8; ++j) {
    uint8_t sc, m;
    scale_min_k4(j, b.scales, &sc, &m);
    int isum = 0;
    for (int l = 0; l < 32; ++l) {
      int v;
      if constexpr (std::is_same_v<Block, BlockQ5_K>) {
        v = q5_k_value(b, 32 * j + l);
      } else {
        const uint8_t byte = b.qs[32 * (j / 2) + l];
        v = j % 2 ? byte >> 4 : byte & 0x0F;
      }
      isum += v * q[32 * j + l];
    }
    s.isum += sc * isum;
    s.imin += m * (bs[2 * j] + bs[2 * j + 1]);
  }
  return s;
}

// The 6-bit value of element e (0..255) of a Q6_K super-block, in -32..31.
int q6_k_value(const BlockQ6_K &b, int e) {
  const int half = e / 128, k = e % 128, quarter = k / 32, l = k % 32;
  const uint8_t *ql = b.ql + 64 * half;
  const uint8_t qh = b.qh[32 * half + l];
  const int lo = (quarter & 1) ? ql[l + 32] : ql[l];
  const int low4 = (quarter < 2) ? (lo & 0x0F) : (lo >> 4);
  return (low4 | (((qh >> (2 * quarter)) & 3) << 4)) - 32;
}

SuperSums sums_q6_k(const BlockQ6_K &b, const int8_t *q, const int16_t *) {
  SuperSums s;
  for (int g = 0; g < 16; ++g) {
    int isum = 0;
    for (int l = 0; l < 16; ++l)
      isum += q6_k_value(b, 16 * g + l) * q[16 * g + l];
    s.isum += b.scales[g] * isum;
  }
  return s;
}

template <typename Block, SuperSums (*kSums)(const Block &, const int8_t *, const int16_t *),
          bool kHasMin>
float dot_k(const void *row, const Activations &a, int64_t t) {
  const int64_t n = a.cols, nb = n / kQKK;
  const auto *b = static_cast<const Block *>(row);
  const int8_t *q = a.qs + t * n;
  const float *xd = a.d + t * nb;
  const int16_t *bs = a.bsums + t * n / 16;
  float sum = 0, summ = 0;
  for (int64_t i = 0; i < nb; ++i, q += kQKK, bs += 16) {
    const SuperSums s = kSums(b[i], q, bs);
    sum = std::fma(static_cast<float>(s.isum), h2f(b[i].d) * xd[i], sum);
    if constexpr (kHasMin)
      summ = std::fma(static_cast<float>(s.imin), h2f(b[i].dmin) * xd[i], summ);
  }
  return sum - summ;
}

} // namespace

bool is_quants_type(TensorType t) {
  switch (t) {
  case TensorType::kQ4_1:
  case TensorType::kQ5_0:
  case TensorType::kQ5_1:
  case TensorType::kIQ4_NL:
  case TensorType::kQ2_K:
  case TensorType::kQ3_K:
  case TensorType::kQ5_K: return true;
  default: return false;
  }
}

void dequantize_row_quants(TensorType t, const void *src, float *dst, int64_t n) {
  switch (t) {
  case TensorType::kQ4_1: dequantize_32<BlockQ4_1>(src, dst, n); return;
  case TensorType::kQ5_0: dequantize_32<BlockQ5_0>(src, dst, n); return;
  case TensorType::kQ5_1: dequantize_32<BlockQ5_1>(src, dst, n); return;
  case TensorType::kIQ4_NL: dequantize_32<BlockIQ4_NL>(src, dst, n); return;
  case TensorType::kQ2_K: dequantize_q2_k(src, dst, n); return;
  case TensorType::kQ3_K: dequantize_q3_k(src, dst, n); return;
  case TensorType::kQ5_K: dequantize_q5_k(src, dst, n); return;
  default: assert(false && "dequantize_row_quants: not one of its types"); return;
  }
}

void quantize_row_quants(TensorType t, const float *src, void *dst, int64_t n) {
  switch (t) {
  case TensorType::kQ4_1: quantize_min_32<BlockQ4_1, 16>(src, dst, n); return;
  case TensorType::kQ5_0: quantize_q5_0(src, dst, n); return;
  case TensorType::kQ5_1: quantize_min_32<BlockQ5_1, 32>(src, dst, n); return;
  case TensorType::kIQ4_NL: quantize_iq4_nl(src, dst, n); return;
  case TensorType::kQ2_K: quantize_q2_k(src, dst, n); return;
  case TensorType::kQ3_K: quantize_q3_k(src, dst, n); return;
  case TensorType::kQ5_K: quantize_q5_k(src, dst, n); return;
  default: assert(false && "quantize_row_quants: not one of its types"); return;
  }
}

float scalar::dot_row_quants(TensorType type, const void *row, const Activations &a, int64_t t) {
  switch (type) {
  case TensorType::kQ4_1: return dot_32<BlockQ4_1>(row, a, t);
  case TensorType::kQ5_0: return dot_32<BlockQ5_0>(row, a, t);
  case TensorType::kQ5_1: return dot_32<BlockQ5_1>(row, a, t);
  case TensorType::kIQ4_NL: return dot_32<BlockIQ4_NL>(row, a, t);
  case TensorType::kQ2_K: return dot_k<BlockQ2_K, sums_q2_k, true>(row, a, t);
  case TensorType::kQ3_K: return dot_k<BlockQ3_K, sums_q3_k, false>(row, a, t);
  case TensorType::kQ4_K: return dot_k<BlockQ4_K, sums_q45_k<BlockQ4_K>, true>(row, a, t);
  case TensorType::kQ5_K: return dot_k<BlockQ5_K, sums_q45_k<BlockQ5_K>, true>(row, a, t);
  case TensorType::kQ6_K: return dot_k<BlockQ6_K, sums_q6_k, false>(row, a, t);
  default: return 0;
  }
}

} // namespace gantry::engine::kernels
