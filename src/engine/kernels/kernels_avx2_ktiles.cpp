// AVX2 prefill tiles of the K-quants (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K: every K-quant preset) x Q8_K
// activations, for calls of at least 4 tokens over row-major weights (GANTRY_NO_REPACK, and rows
// off a packed matrix's 16-row groups; packed groups take kernels_avx2_kpacked.cpp's gemm_k,
// faster because its layout sums in int16 before the scale). The dot products of quant_dots_inl.h
// decode a row's super-block again for every token (nibbles, the 6-bit scales and mins, the fifth
// or high bits), which made a Q4_K_M prompt 4x slower than a Q4_0 one on AVX2; here 2 rows are
// decoded once per call into bytes u (0..63) and per-chunk int16 scale vectors, and then every
// group of 4 tokens meets them in a 2 x 4 register tile: per 32 elements one activation load per
// token, one weight load per row, and maddubs + madd by the scales per output.
//
// Bits: the dot products' (quant_dots_inl.h, "K-quants x Q8_K"): per super-block the exact int32
// isum (sub-block scales applied; Q3_K's and Q6_K's -offset x sum(scale x bsum)) and imin (sum(min
// x bsum)), then sum = fma(float(isum), d * d_x, sum) and summ = fma(float(imin), dmin * d_x, summ)
// in super-block order, output sum - summ. Integer sums are exact whatever their order, and the
// float steps are the same operations lane by lane.
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "engine/kernels/kernels_impl.h"

namespace gantry::engine::kernels::avx2 {
namespace {

#include "engine/kernels/kernels_avx2_inl.h"

constexpr int kRows = 2, kTokens = 4; // the tile: 8 int32 accumulators, lane k = row k / 4
constexpr int64_t kChunks = kQKK / 32;

// One row's super-block decoded for the tile: u in element order, the int16 scale vector of each
// 32-element chunk (its first 16 elements' scale in the low 128 bits, the next 16's in the high),
// the 16 int16 coefficients of the activations' 16-element sums (Q2_K/Q4_K/Q5_K: the mins, going
// to imin; Q3_K/Q6_K: the scales, -4/-32 x their sum going to isum), and d, dmin.
struct DecodedSuper {
  alignas(32) uint8_t u[kQKK];
  alignas(32) int16_t scales[kChunks][16];
  alignas(32) int16_t coef[16];
  float d, dmin;
};

GANTRY_AVX2_INLINE void store32(void *p, __m256i v) {
  _mm256_storeu_si256(static_cast<__m256i *>(p), v);
}
GANTRY_AVX2_INLINE void set_scales(int16_t *out, int lo, int hi) {
  for (int i = 0; i < 8; ++i) {
    out[i] = static_cast<int16_t>(lo);
    out[8 + i] = static_cast<int16_t>(hi);
  }
}

template <TensorType kType> GANTRY_AVX2_INLINE void decode(const void *blk, DecodedSuper &o) {
  const __m256i m4 = _mm256_set1_epi8(0x0F);
  if constexpr (kType == TensorType::kQ4_K || kType == TensorType::kQ5_K) {
    using B = std::conditional_t<kType == TensorType::kQ4_K, BlockQ4_K, BlockQ5_K>;
    const auto &b = *static_cast<const B *>(blk);
    o.d = _cvtsh_ss(b.d);
    o.dmin = _cvtsh_ss(b.dmin);
    for (int j = 0; j < 8; ++j) {
      uint8_t sc, m;
      scale_min_k4(j, b.scales, &sc, &m);
      set_scales(o.scales[j], sc, sc);
      o.coef[2 * j] = m;
      o.coef[2 * j + 1] = m;
    }
    __m256i hb = _mm256_setzero_si256();
    if constexpr (kType == TensorType::kQ5_K)
      hb = load32(reinterpret_cast<const BlockQ5_K &>(b).qh);
    const __m256i one = _mm256_set1_epi8(1);
    for (int c = 0; c < 4; ++c) {
      const __m256i packed = load32(b.qs + 32 * c);
      __m256i u0 = _mm256_and_si256(packed, m4);
      __m256i u1 = _mm256_and_si256(_mm256_srli_epi16(packed, 4), m4);
      if constexpr (kType == TensorType::kQ5_K) {
        u0 = _mm256_or_si256(
            u0, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 2 * c), one), 4));
        u1 = _mm256_or_si256(
            u1, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 2 * c + 1), one), 4));
      }
      store32(o.u + 64 * c, u0);
      store32(o.u + 64 * c + 32, u1);
    }
  } else if constexpr (kType == TensorType::kQ2_K || kType == TensorType::kQ3_K) {
    // u = 2 low bits (Q3_K: + 4 x its high bit) of element 128h + 32j + l, bits 2j.. of byte l of
    // qs[32h..]; per 16 elements a scale (Q2_K: low nibble, its min the high nibble; Q3_K: the
    // signed 6-bit q3_k_scale, the value being u - 4).
    using B = std::conditional_t<kType == TensorType::kQ2_K, BlockQ2_K, BlockQ3_K>;
    const auto &b = *static_cast<const B *>(blk);
    o.d = _cvtsh_ss(b.d);
    int sc[16];
    for (int g = 0; g < 16; ++g) {
      if constexpr (kType == TensorType::kQ2_K) {
        sc[g] = b.scales[g] & 0x0F;
        o.coef[g] = static_cast<int16_t>(b.scales[g] >> 4);
      } else {
        sc[g] = q3_k_scale(g, b.scales);
        o.coef[g] = static_cast<int16_t>(sc[g]);
      }
    }
    if constexpr (kType == TensorType::kQ2_K)
      o.dmin = _cvtsh_ss(b.dmin);
    else
      o.dmin = 0;
    const __m256i m3 = _mm256_set1_epi8(3), one = _mm256_set1_epi8(1);
    __m256i hm = _mm256_setzero_si256();
    if constexpr (kType == TensorType::kQ3_K)
      hm = load32(b.hmask);
    for (int h = 0; h < 2; ++h) {
      const __m256i packed = load32(b.qs + 32 * h);
      for (int j = 0; j < 4; ++j) {
        __m256i u = _mm256_and_si256(_mm256_srli_epi16(packed, 2 * j), m3);
        if constexpr (kType == TensorType::kQ3_K)
          u = _mm256_or_si256(
              u, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hm, 4 * h + j), one), 2));
        store32(o.u + 128 * h + 32 * j, u);
        const int g = 8 * h + 2 * j;
        set_scales(o.scales[4 * h + j], sc[g], sc[g + 1]);
      }
    }
  } else {
    static_assert(kType == TensorType::kQ6_K);
    const auto &b = *static_cast<const BlockQ6_K *>(blk);
    o.d = _cvtsh_ss(b.d);
    o.dmin = 0;
    for (int g = 0; g < 16; ++g)
      o.coef[g] = b.scales[g];
    for (int h = 0; h < 2; ++h) {
      const uint8_t *ql = b.ql + 64 * h;
      const __m256i l0 = load32(ql), l1 = load32(ql + 32), hb = load32(b.qh + 32 * h);
      __m256i u[4];
      q6k_values(l0, l1, hb, u);
      for (int k = 0; k < 4; ++k) {
        store32(o.u + 128 * h + 32 * k, u[k]);
        const int g = 8 * h + 2 * k;
        set_scales(o.scales[4 * h + k], b.scales[g], b.scales[g + 1]);
      }
    }
  }
}

template <TensorType kType>
constexpr bool kHasMin = kType != TensorType::kQ6_K &&kType != TensorType::kQ3_K;
// The types without a min store u = value + offset: isum -= offset x sum(scale x bsum), the offset
// a power of two (Q6_K 32, Q3_K 4).
template <TensorType kType> constexpr int kOffsetShift = kType == TensorType::kQ6_K ? 5 : 2;

// Rows (rows[0], rows[1]) decoded (nbk super-blocks each) x tokens [t, t + 4): lane 4i + j of the
// result is row i, token t + j.
template <TensorType kType>
GANTRY_AVX2_INLINE __m256 tile(const DecodedSuper *const rows[kRows], const Activations &a,
                               int64_t nbk, int64_t t) {
  const int64_t cols = a.cols;
  __m256 sum = _mm256_setzero_ps(), summ = _mm256_setzero_ps();
  for (int64_t s = 0; s < nbk; ++s) {
    const DecodedSuper &w0 = rows[0][s], &w1 = rows[1][s];
    const int8_t *x[kTokens];
#pragma GCC unroll 4
    for (int j = 0; j < kTokens; ++j)
      x[j] = a.qs + (t + j) * cols + s * kQKK;
    __m256i acc[kRows * kTokens];
#pragma GCC unroll 8
    for (int k = 0; k < kRows * kTokens; ++k)
      acc[k] = _mm256_setzero_si256();
#pragma GCC unroll 2
    for (int c = 0; c < kChunks; ++c) {
      __m256i xv[kTokens];
#pragma GCC unroll 4
      for (int j = 0; j < kTokens; ++j)
        xv[j] = load32(x[j] + 32 * c);
#pragma GCC unroll 2
      for (int i = 0; i < kRows; ++i) {
        const DecodedSuper &w = i == 0 ? w0 : w1;
        const __m256i u = load32(w.u + 32 * c);
        const __m256i sc = load32(w.scales[c]);
#pragma GCC unroll 4
        for (int j = 0; j < kTokens; ++j)
          acc[kTokens * i + j] = _mm256_add_epi32(
              acc[kTokens * i + j], _mm256_madd_epi16(_mm256_maddubs_epi16(u, xv[j]), sc));
      }
    }
    __m256i isum = hsum8_i32(acc);
    // The activations' 16-element sums against the coefficients: one int32 per output.
    __m256i corr[kRows * kTokens];
#pragma GCC unroll 2
    for (int i = 0; i < kRows; ++i) {
      const __m256i coef = load32((i == 0 ? w0 : w1).coef);
#pragma GCC unroll 4
      for (int j = 0; j < kTokens; ++j)
        corr[kTokens * i + j] =
            _mm256_madd_epi16(coef, load32(a.bsums + (t + j) * cols / 16 + s * 16));
    }
    const __m256i csum = hsum8_i32(corr);
    // d_x of the 4 tokens in both halves; the rows' d (and dmin) in the low and high halves.
    const __m128 xd4 =
        _mm_setr_ps(a.d[t * (cols / kQKK) + s], a.d[(t + 1) * (cols / kQKK) + s],
                    a.d[(t + 2) * (cols / kQKK) + s], a.d[(t + 3) * (cols / kQKK) + s]);
    const __m256 xd = _mm256_set_m128(xd4, xd4);
    const __m256 d = _mm256_set_m128(_mm_set1_ps(w1.d), _mm_set1_ps(w0.d));
    if constexpr (kHasMin<kType>) {
      sum = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_mul_ps(d, xd), sum);
      const __m256 dmin = _mm256_set_m128(_mm_set1_ps(w1.dmin), _mm_set1_ps(w0.dmin));
      summ = _mm256_fmadd_ps(_mm256_cvtepi32_ps(csum), _mm256_mul_ps(dmin, xd), summ);
    } else {
      isum = _mm256_sub_epi32(isum, _mm256_slli_epi32(csum, kOffsetShift<kType>));
      sum = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_mul_ps(d, xd), sum);
    }
  }
  return _mm256_sub_ps(sum, summ);
}

struct DecodeScratch {
  std::vector<DecodedSuper> rows;
};
thread_local DecodeScratch t_decoded;

template <TensorType kType>
GANTRY_AVX2 void k_tiles(const WeightView &w, const Activations &a, int64_t t0, int64_t t1,
                         int64_t r0, int64_t r1, float *y, int64_t ldy) {
  using B = std::conditional_t<
      kType == TensorType::kQ2_K, BlockQ2_K,
      std::conditional_t<kType == TensorType::kQ3_K, BlockQ3_K,
                         std::conditional_t<kType == TensorType::kQ4_K, BlockQ4_K,
                                            std::conditional_t<kType == TensorType::kQ5_K,
                                                               BlockQ5_K, BlockQ6_K>>>>;
  const int64_t nbk = w.cols / kQKK;
  auto &scratch = t_decoded.rows;
  if (scratch.size() < static_cast<size_t>(kRows * nbk))
    scratch.resize(static_cast<size_t>(kRows * nbk));
  const int64_t t_end = t0 + (t1 - t0) / kTokens * kTokens;
  int64_t r = r0;
  for (; r + kRows <= r1; r += kRows) {
    const DecodedSuper *rows[kRows];
    for (int i = 0; i < kRows; ++i) {
      const auto *blocks = static_cast<const B *>(w.row(r + i));
      DecodedSuper *out = scratch.data() + i * nbk;
      for (int64_t s = 0; s < nbk; ++s)
        decode<kType>(&blocks[s], out[s]);
      rows[i] = out;
    }
    for (int64_t t = t0; t < t_end; t += kTokens) {
      alignas(32) float out[kRows * kTokens];
      _mm256_store_ps(out, tile<kType>(rows, a, nbk, t));
      for (int i = 0; i < kRows; ++i) {
        for (int j = 0; j < kTokens; ++j)
          y[(t + j) * ldy + r + i] = out[kTokens * i + j];
      }
    }
    if (t_end < t1)
      matmul_rows_quants(w, a, t_end, t1, r, r + kRows, y, ldy);
  }
  if (r < r1)
    matmul_rows_quants(w, a, t0, t1, r, r1, y, ldy);
}

} // namespace

bool matmul_rows_k_tiles(const WeightView &w, const Activations &a, int64_t t0, int64_t t1,
                         int64_t r0, int64_t r1, float *y, int64_t ldy) {
  if (t1 - t0 < kTokens || w.packed16)
    return false;
  switch (w.type) {
  case TensorType::kQ2_K: k_tiles<TensorType::kQ2_K>(w, a, t0, t1, r0, r1, y, ldy); return true;
  case TensorType::kQ3_K: k_tiles<TensorType::kQ3_K>(w, a, t0, t1, r0, r1, y, ldy); return true;
  case TensorType::kQ4_K: k_tiles<TensorType::kQ4_K>(w, a, t0, t1, r0, r1, y, ldy); return true;
  case TensorType::kQ5_K: k_tiles<TensorType::kQ5_K>(w, a, t0, t1, r0, r1, y, ldy); return true;
  case TensorType::kQ6_K: k_tiles<TensorType::kQ6_K>(w, a, t0, t1, r0, r1, y, ldy); return true;
  default: return false;
  }
}

} // namespace gantry::engine::kernels::avx2
