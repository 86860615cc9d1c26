// AVX2+FMA+F16C kernels. The project is built without -march flags, so every function here
// carries a target attribute and is only called after detected_isa() saw the features.
//
// Matmul tiles: a micro-kernel computes an R-rows x T-tokens tile of outputs, loading each
// weight block once for T tokens and each activation block once for R rows, so the weights
// stream from memory once per call and the arithmetic per byte loaded grows with the batch.
#include <immintrin.h>

#include <algorithm>
#include <cmath>

#include "engine/kernels/kernels_impl.h"

#define GANTRY_AVX2 __attribute__((target("avx2,fma,f16c")))
#define GANTRY_AVX2_INLINE __attribute__((target("avx2,fma,f16c"), always_inline)) inline

namespace gantry::engine::kernels::avx2 {
namespace {

GANTRY_AVX2_INLINE float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

GANTRY_AVX2_INLINE int hsum_i32(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
  return _mm_cvtsi128_si32(s);
}

GANTRY_AVX2_INLINE float half_to_float(uint16_t h) { return _cvtsh_ss(h); }

// ---- Q8_0 / Q4_0 weights x Q8 activations ---------------------------------------------------

// The 32 signed weights of a block as int8 lanes.
template <TensorType kType> GANTRY_AVX2_INLINE __m256i load_weights(const void *block) {
  if constexpr (kType == TensorType::kQ8_0) {
    return _mm256_loadu_si256(
        reinterpret_cast<const __m256i *>(static_cast<const BlockQ8_0 *>(block)->qs));
  } else {
    // Both 128-bit lanes get the 16 packed bytes; shifting the upper lane's 64-bit words right
    // by 4 brings each byte's high nibble down (the bits shifted in are masked off).
    const __m256i packed = _mm256_broadcastsi128_si256(_mm_loadu_si128(
        reinterpret_cast<const __m128i *>(static_cast<const BlockQ4_0 *>(block)->qs)));
    const __m256i nibbles = _mm256_and_si256(
        _mm256_srlv_epi64(packed, _mm256_setr_epi64x(0, 0, 4, 4)), _mm256_set1_epi8(0x0F));
    return _mm256_sub_epi8(nibbles, _mm256_set1_epi8(8));
  }
}

template <TensorType kType> GANTRY_AVX2_INLINE float weight_scale(const void *block) {
  if constexpr (kType == TensorType::kQ8_0) {
    return half_to_float(static_cast<const BlockQ8_0 *>(block)->d);
  } else {
    return half_to_float(static_cast<const BlockQ4_0 *>(block)->d);
  }
}

template <TensorType kType>
constexpr size_t kBlockBytes = kType == TensorType::kQ8_0 ? sizeof(BlockQ8_0) : sizeof(BlockQ4_0);

// Sums of int8 products as 8 int32 lanes, via the sign trick: maddubs multiplies unsigned by
// signed bytes, so move w's sign onto x and use |w|. |w| <= 128 and |x| <= 127 keep the pairwise
// int16 sums below 32768.
GANTRY_AVX2_INLINE __m256i dot_i8(__m256i abs_w, __m256i w, __m256i x) {
  const __m256i p16 = _mm256_maddubs_epi16(abs_w, _mm256_sign_epi8(x, w));
  return _mm256_madd_epi16(p16, _mm256_set1_epi16(1));
}

template <TensorType kType, int R, int T>
GANTRY_AVX2_INLINE void tile_q8(const WeightView &w, const Activations &a, int64_t r, int64_t t,
                                float *y, int64_t ldy) {
  const int64_t nb = w.cols / kQK;
  const char *rows[R];
#pragma GCC unroll 8
  for (int i = 0; i < R; ++i)
    rows[i] = static_cast<const char *>(w.row(r + i));
  const int8_t *xq[T];
  const float *xd[T];
#pragma GCC unroll 8
  for (int j = 0; j < T; ++j) {
    xq[j] = a.qs + (t + j) * w.cols;
    xd[j] = a.d + (t + j) * nb;
  }
  __m256 acc[R][T];
#pragma GCC unroll 8
  for (int i = 0; i < R; ++i) {
#pragma GCC unroll 8
    for (int j = 0; j < T; ++j)
      acc[i][j] = _mm256_setzero_ps();
  }

  for (int64_t b = 0; b < nb; ++b) {
    __m256i wv[R], aw[R];
    float dw[R];
#pragma GCC unroll 8
    for (int i = 0; i < R; ++i) {
      const char *blk = rows[i] + b * kBlockBytes<kType>;
      wv[i] = load_weights<kType>(blk);
      aw[i] = _mm256_sign_epi8(wv[i], wv[i]);
      dw[i] = weight_scale<kType>(blk);
    }
#pragma GCC unroll 8
    for (int j = 0; j < T; ++j) {
      const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(xq[j] + b * kQK));
      const float dx = xd[j][b];
#pragma GCC unroll 8
      for (int i = 0; i < R; ++i) {
        const __m256 p = _mm256_cvtepi32_ps(dot_i8(aw[i], wv[i], xv));
        acc[i][j] = _mm256_fmadd_ps(p, _mm256_set1_ps(dw[i] * dx), acc[i][j]);
      }
    }
  }
#pragma GCC unroll 8
  for (int i = 0; i < R; ++i) {
#pragma GCC unroll 8
    for (int j = 0; j < T; ++j)
      y[(t + j) * ldy + r + i] = hsum(acc[i][j]);
  }
}

// ---- float weights (F32 / F16 / BF16) x float activations -------------------------------------

template <TensorType kType> GANTRY_AVX2_INLINE __m256 load8(const void *row, int64_t i) {
  if constexpr (kType == TensorType::kF32) {
    return _mm256_loadu_ps(static_cast<const float *>(row) + i);
  } else if constexpr (kType == TensorType::kF16) {
    return _mm256_cvtph_ps(
        _mm_loadu_si128(reinterpret_cast<const __m128i *>(static_cast<const uint16_t *>(row) + i)));
  } else {
    const __m128i h =
        _mm_loadu_si128(reinterpret_cast<const __m128i *>(static_cast<const uint16_t *>(row) + i));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  }
}

template <TensorType kType> GANTRY_AVX2_INLINE float load1(const void *row, int64_t i) {
  if constexpr (kType == TensorType::kF32) {
    return static_cast<const float *>(row)[i];
  } else if constexpr (kType == TensorType::kF16) {
    return half_to_float(static_cast<const uint16_t *>(row)[i]);
  } else {
    return bf16_to_fp32(static_cast<const uint16_t *>(row)[i]);
  }
}

template <TensorType kType, int R, int T>
GANTRY_AVX2_INLINE void tile_float(const WeightView &w, const Activations &a, int64_t r, int64_t t,
                                   float *y, int64_t ldy) {
  const int64_t n = w.cols;
  const void *rows[R];
#pragma GCC unroll 8
  for (int i = 0; i < R; ++i)
    rows[i] = w.row(r + i);
  const float *x[T];
#pragma GCC unroll 8
  for (int j = 0; j < T; ++j)
    x[j] = a.x + (t + j) * n;
  __m256 acc[R][T];
#pragma GCC unroll 8
  for (int i = 0; i < R; ++i) {
#pragma GCC unroll 8
    for (int j = 0; j < T; ++j)
      acc[i][j] = _mm256_setzero_ps();
  }
  int64_t k = 0;
  for (; k + 8 <= n; k += 8) {
    __m256 wv[R];
#pragma GCC unroll 8
    for (int i = 0; i < R; ++i)
      wv[i] = load8<kType>(rows[i], k);
#pragma GCC unroll 8
    for (int j = 0; j < T; ++j) {
      const __m256 xv = _mm256_loadu_ps(x[j] + k);
#pragma GCC unroll 8
      for (int i = 0; i < R; ++i)
        acc[i][j] = _mm256_fmadd_ps(wv[i], xv, acc[i][j]);
    }
  }
#pragma GCC unroll 8
  for (int i = 0; i < R; ++i) {
#pragma GCC unroll 8
    for (int j = 0; j < T; ++j) {
      float s = hsum(acc[i][j]);
      for (int64_t kk = k; kk < n; ++kk)
        s += load1<kType>(rows[i], kk) * x[j][kk];
      y[(t + j) * ldy + r + i] = s;
    }
  }
}

// ---- K-quants x Q8_K: one row against one token at a time ---------------------------------------
// (Each weight row stays in L1 while it is multiplied with every token of the chunk.)

GANTRY_AVX2_INLINE float dot_q4_k(const BlockQ4_K *b, const int8_t *q, const float *xd,
                                  const int16_t *bs, int64_t nb) {
  __m256 acc = _mm256_setzero_ps();
  float acc_min = 0;
  const __m256i mask = _mm256_set1_epi8(0x0F);
  for (int64_t i = 0; i < nb; ++i, q += kQKK, bs += 16) {
    uint8_t sc[8], m[8];
    for (int j = 0; j < 8; ++j)
      scale_min_k4(j, b[i].scales, &sc[j], &m[j]);
    int summ = 0;
    for (int j = 0; j < 8; ++j)
      summ += m[j] * (bs[2 * j] + bs[2 * j + 1]);
    __m256i sumi = _mm256_setzero_si256();
#pragma GCC unroll 4
    for (int c = 0; c < 4; ++c) {
      const __m256i packed =
          _mm256_loadu_si256(reinterpret_cast<const __m256i *>(b[i].qs + 32 * c));
      const __m256i lo = _mm256_and_si256(packed, mask);
      const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(packed, 4), mask);
      const __m256i x0 = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(q + 64 * c));
      const __m256i x1 = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(q + 64 * c + 32));
      // Weights are 0..15, so maddubs can take them directly as the unsigned operand.
      const __m256i p0 =
          _mm256_madd_epi16(_mm256_maddubs_epi16(lo, x0), _mm256_set1_epi16(sc[2 * c]));
      const __m256i p1 =
          _mm256_madd_epi16(_mm256_maddubs_epi16(hi, x1), _mm256_set1_epi16(sc[2 * c + 1]));
      sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p0, p1));
    }
    const float d = half_to_float(b[i].d) * xd[i];
    acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    acc_min += half_to_float(b[i].dmin) * xd[i] * static_cast<float>(summ);
  }
  return hsum(acc) - acc_min;
}

GANTRY_AVX2_INLINE float dot_q6_k(const BlockQ6_K *b, const int8_t *q, const float *xd,
                                  const int16_t *bs, int64_t nb) {
  __m256 acc = _mm256_setzero_ps();
  float acc_off = 0;
  const __m256i m4 = _mm256_set1_epi8(0x0F), m2 = _mm256_set1_epi8(0x03);
  for (int64_t i = 0; i < nb; ++i, q += kQKK, bs += 16) {
    const int8_t *sc = b[i].scales;
    // Values are stored as q + 32 with q in -32..31; subtract 32 * sum(x) per 16 at the end.
    int off = 0;
    for (int g = 0; g < 16; ++g)
      off += sc[g] * bs[g];
    __m256i sumi = _mm256_setzero_si256();
    for (int h = 0; h < 2; ++h) {
      const uint8_t *ql = b[i].ql + 64 * h;
      const __m256i l0 = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(ql));
      const __m256i l1 = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(ql + 32));
      const __m256i hb = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(b[i].qh + 32 * h));
      __m256i v[4];
      v[0] =
          _mm256_or_si256(_mm256_and_si256(l0, m4), _mm256_slli_epi16(_mm256_and_si256(hb, m2), 4));
      v[1] = _mm256_or_si256(_mm256_and_si256(l1, m4),
                             _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 2), m2), 4));
      v[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4),
                             _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 4), m2), 4));
      v[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                             _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 6), m2), 4));
#pragma GCC unroll 4
      for (int k = 0; k < 4; ++k) {
        const __m256i x =
            _mm256_loadu_si256(reinterpret_cast<const __m256i *>(q + 128 * h + 32 * k));
        const int g = 8 * h + 2 * k; // scale of the first 16 of these 32 elements
        const __m256i scv = _mm256_set_m128i(_mm_set1_epi16(sc[g + 1]), _mm_set1_epi16(sc[g]));
        sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(_mm256_maddubs_epi16(v[k], x), scv));
      }
    }
    const float d = half_to_float(b[i].d) * xd[i];
    acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    acc_off += d * 32.0f * static_cast<float>(off);
  }
  return hsum(acc) - acc_off;
}

// ---- tiling drivers -------------------------------------------------------------------------

template <TensorType kType, int R>
GANTRY_AVX2 void rows_q8(const WeightView &w, const Activations &a, int64_t t0, int64_t t1,
                         int64_t r, float *y, int64_t ldy) {
  int64_t t = t0;
  for (; t + 4 <= t1; t += 4)
    tile_q8<kType, R, 4>(w, a, r, t, y, ldy);
  switch (t1 - t) {
  case 3: tile_q8<kType, R, 3>(w, a, r, t, y, ldy); break;
  case 2: tile_q8<kType, R, 2>(w, a, r, t, y, ldy); break;
  case 1: tile_q8<kType, R, 1>(w, a, r, t, y, ldy); break;
  default: break;
  }
}

template <TensorType kType>
GANTRY_AVX2 void matmul_q8(const WeightView &w, const Activations &a, int64_t t0, int64_t t1,
                           int64_t r0, int64_t r1, float *y, int64_t ldy) {
  int64_t r = r0;
  if (t1 - t0 == 1) {
    // Decode: four rows at once keeps four independent accumulation chains in flight.
    for (; r + 4 <= r1; r += 4)
      tile_q8<kType, 4, 1>(w, a, r, t0, y, ldy);
  } else {
    for (; r + 2 <= r1; r += 2)
      rows_q8<kType, 2>(w, a, t0, t1, r, y, ldy);
  }
  for (; r < r1; ++r)
    rows_q8<kType, 1>(w, a, t0, t1, r, y, ldy);
}

template <TensorType kType, int R>
GANTRY_AVX2 void rows_float(const WeightView &w, const Activations &a, int64_t t0, int64_t t1,
                            int64_t r, float *y, int64_t ldy) {
  int64_t t = t0;
  for (; t + 3 <= t1; t += 3)
    tile_float<kType, R, 3>(w, a, r, t, y, ldy);
  switch (t1 - t) {
  case 2: tile_float<kType, R, 2>(w, a, r, t, y, ldy); break;
  case 1: tile_float<kType, R, 1>(w, a, r, t, y, ldy); break;
  default: break;
  }
}

template <TensorType kType>
GANTRY_AVX2 void matmul_float(const WeightView &w, const Activations &a, int64_t t0, int64_t t1,
                              int64_t r0, int64_t r1, float *y, int64_t ldy) {
  int64_t r = r0;
  for (; r + 4 <= r1; r += 4)
    rows_float<kType, 4>(w, a, t0, t1, r, y, ldy);
  for (; r < r1; ++r)
    rows_float<kType, 1>(w, a, t0, t1, r, y, ldy);
}

GANTRY_AVX2 void matmul_k(const WeightView &w, const Activations &a, int64_t t0, int64_t t1,
                          int64_t r0, int64_t r1, float *y, int64_t ldy) {
  const int64_t n = w.cols, nb = n / kQKK;
  for (int64_t r = r0; r < r1; ++r) {
    const void *row = w.row(r);
    for (int64_t t = t0; t < t1; ++t) {
      const int8_t *q = a.qs + t * n;
      const float *xd = a.d + t * nb;
      const int16_t *bs = a.bsums + t * n / 16;
      y[t * ldy + r] = w.type == TensorType::kQ4_K
                           ? dot_q4_k(static_cast<const BlockQ4_K *>(row), q, xd, bs, nb)
                           : dot_q6_k(static_cast<const BlockQ6_K *>(row), q, xd, bs, nb);
    }
  }
}

// 32 floats -> 32 int8 (rounded to nearest even, like the scalar path's nearbyint).
GANTRY_AVX2_INLINE void quantize32(const float *x, float id, int8_t *out) {
  const __m256 m = _mm256_set1_ps(id);
  __m256i i[4];
#pragma GCC unroll 4
  for (int k = 0; k < 4; ++k) {
    const __m256 v = _mm256_mul_ps(_mm256_loadu_ps(x + 8 * k), m);
    i[k] = _mm256_cvtps_epi32(_mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
  // packs interleave 128-bit lanes; the permute puts the 8 groups of 4 back in order.
  const __m256i p =
      _mm256_packs_epi16(_mm256_packs_epi32(i[0], i[1]), _mm256_packs_epi32(i[2], i[3]));
  const __m256i fixed = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
  _mm256_storeu_si256(reinterpret_cast<__m256i *>(out), fixed);
}

GANTRY_AVX2_INLINE float abs_max(const float *x, int64_t n) {
  const __m256 sign = _mm256_set1_ps(-0.0f);
  __m256 m = _mm256_setzero_ps();
  for (int64_t i = 0; i < n; i += 8)
    m = _mm256_max_ps(m, _mm256_andnot_ps(sign, _mm256_loadu_ps(x + i)));
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

} // namespace

GANTRY_AVX2 void matmul_rows(const WeightView &w, const Activations &a, int64_t t0, int64_t t1,
                             int64_t r0, int64_t r1, float *y, int64_t ldy) {
  switch (w.type) {
  case TensorType::kQ8_0: matmul_q8<TensorType::kQ8_0>(w, a, t0, t1, r0, r1, y, ldy); return;
  case TensorType::kQ4_0: matmul_q8<TensorType::kQ4_0>(w, a, t0, t1, r0, r1, y, ldy); return;
  case TensorType::kF32: matmul_float<TensorType::kF32>(w, a, t0, t1, r0, r1, y, ldy); return;
  case TensorType::kF16: matmul_float<TensorType::kF16>(w, a, t0, t1, r0, r1, y, ldy); return;
  case TensorType::kBF16: matmul_float<TensorType::kBF16>(w, a, t0, t1, r0, r1, y, ldy); return;
  case TensorType::kQ4_K:
  case TensorType::kQ6_K: matmul_k(w, a, t0, t1, r0, r1, y, ldy); return;
  default: return;
  }
}

GANTRY_AVX2 void quantize_act_q8(const float *x, int8_t *qs, float *d, int64_t n) {
  for (int64_t b = 0; b < n / kQK; ++b, x += kQK, qs += kQK) {
    const float amax = abs_max(x, kQK);
    d[b] = amax / 127.0f;
    quantize32(x, amax != 0 ? 127.0f / amax : 0.0f, qs);
  }
}

GANTRY_AVX2 void quantize_act_q8k(const float *x, int8_t *qs, float *d, int16_t *bsums, int64_t n) {
  for (int64_t b = 0; b < n / kQKK; ++b, x += kQKK, qs += kQKK) {
    const float amax = abs_max(x, kQKK);
    d[b] = amax / 127.0f;
    const float id = amax != 0 ? 127.0f / amax : 0.0f;
    for (int k = 0; k < kQKK; k += 32)
      quantize32(x + k, id, qs + k);
    for (int g = 0; g < kQKK / 16; ++g) {
      // Sum 16 int8 via widening to int16 and a pairwise multiply-add by 1.
      const __m256i v =
          _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i *>(qs + 16 * g)));
      *bsums++ = static_cast<int16_t>(hsum_i32(_mm256_madd_epi16(v, _mm256_set1_epi16(1))));
    }
  }
}

GANTRY_AVX2 void fp16_to_fp32_row(const uint16_t *src, float *dst, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(dst + i,
                     _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i *>(src + i))));
  }
  for (; i < n; ++i)
    dst[i] = half_to_float(src[i]);
}

GANTRY_AVX2 void fp32_to_fp16_row(const float *src, uint16_t *dst, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm_storeu_si128(reinterpret_cast<__m128i *>(dst + i),
                     _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
  }
  for (; i < n; ++i)
    dst[i] = kernels::fp32_to_fp16(src[i]);
}

GANTRY_AVX2 float dot_f32(const float *a, const float *b, int64_t n) {
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
  }
  for (; i + 8 <= n; i += 8)
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
  float s = hsum(_mm256_add_ps(s0, s1));
  for (; i < n; ++i)
    s += a[i] * b[i];
  return s;
}

GANTRY_AVX2 void rmsnorm(const float *x, const float *weight, float *out, int64_t n, float eps) {
  __m256 s = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    s = _mm256_fmadd_ps(v, v, s);
  }
  double ss = hsum(s);
  for (; i < n; ++i)
    ss += static_cast<double>(x[i]) * x[i];
  const auto inv = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(n) + eps));
  const __m256 vinv = _mm256_set1_ps(inv);
  i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(x + i), vinv),
                                            _mm256_loadu_ps(weight + i)));
  }
  for (; i < n; ++i)
    out[i] = x[i] * inv * weight[i];
}

// exp and the silu/softmax built on it are left to the scalar code (libm's expf): they are a
// small share of a token's time next to the matmuls.
void softmax(float *x, int64_t n) { scalar::softmax(x, n); }
void silu_mul(const float *gate, const float *up, float *out, int64_t n) {
  scalar::silu_mul(gate, up, out, n);
}

GANTRY_AVX2 void add(const float *a, const float *b, float *out, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(out + i, _mm256_add_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i)));
  }
  for (; i < n; ++i)
    out[i] = a[i] + b[i];
}

GANTRY_AVX2 void scale(float *x, float s, int64_t n) {
  const __m256 v = _mm256_set1_ps(s);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), v));
  for (; i < n; ++i)
    x[i] *= s;
}

GANTRY_AVX2 void axpy(float a, const float *x, float *y, int64_t n) {
  const __m256 va = _mm256_set1_ps(a);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
  }
  for (; i < n; ++i)
    y[i] += a * x[i];
}

} // namespace gantry::engine::kernels::avx2
