// Flash attention's softmax·V with fp16 accumulators on AVX-512: the AVX2 kernel
// (kernels_avx2.cpp attend_rows_f16) with 16 lanes per vector and up to 8 heads kept in
// registers. Every step is lane-wise (a rescale, a fused multiply-add, a round to fp16 and back),
// so the width changes nothing in the bits; what it changes is how many independent chains hide
// the latency of that round trip, which bounded prompt processing (17 % of a Q4_0 pp512 profile).
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <immintrin.h>

#include "engine/kernels/kernels_impl.h"

// GCC 12's AVX-512 conversion intrinsics start from an undefined vector that
// -Wuninitialized / -Wmaybe-uninitialized report (as in kernels_avx512.cpp).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#define GANTRY_ATT __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma,f16c")))
#define GANTRY_ATT_INLINE                                                                          \
  __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma,f16c"), always_inline)) inline

namespace gantry::engine::kernels::avx512vnni {
namespace {

constexpr int64_t kChunk = kAttendChunk;

GANTRY_ATT_INLINE __m512 load16h(const uint16_t *p) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(p)));
}
GANTRY_ATT_INLINE void store16h(uint16_t *p, __m512 v) {
  _mm256_storeu_si256(reinterpret_cast<__m256i *>(p),
                      _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}
GANTRY_ATT_INLINE __m512 round16(__m512 x) {
  return _mm512_cvtph_ps(_mm512_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}

// ---- expf, glibc's bits ------------------------------------------------------------------------
//
// The weights must be std::exp's bits (the AVX2 and scalar kernels call it, and llama.cpp calls
// expf): glibc computes expf in double as 2^(k/32) * p(r) with x * 32/ln2 = k + r, the power
// from a 32-entry table and p a cubic, and on a CPU with FMA (every AVX-512 one) it runs the
// build of that code with these fused steps (its __expf_fma, as disassembled from Debian 12's
// libm). The same steps over 8 doubles give its result in every lane; lanes with |x| >= 88
// (overflow, underflow, infinities, NaN: its special cases) take std::exp itself. The table is
// kernels_impl.h's exp_table (the AVX2 kernel's exp8 runs the same steps 4 doubles at a time).

GANTRY_ATT_INLINE __m256 exp8(__m256 x, const __m512i (&tab)[4]) {
  const __m512d xd = _mm512_cvtps_pd(x);
  const __m512d shift = _mm512_set1_pd(0x1.8p+52);
  const __m512d inv_ln2 = _mm512_set1_pd(0x1.71547652b82fep+5); // 32 / ln 2
  const __m512d z = _mm512_fmadd_pd(inv_ln2, xd, shift);
  const __m512i ki = _mm512_castpd_si512(z);
  const __m512d kd = _mm512_sub_pd(z, shift);
  const __m512d r = _mm512_fmsub_pd(inv_ln2, xd, kd);
  const __m512i idx = _mm512_and_si512(ki, _mm512_set1_epi64(31));
  const __m512i lo = _mm512_permutex2var_epi64(tab[0], idx, tab[1]);
  const __m512i hi = _mm512_permutex2var_epi64(tab[2], idx, tab[3]);
  const __m512i t =
      _mm512_mask_blend_epi64(_mm512_test_epi64_mask(idx, _mm512_set1_epi64(16)), lo, hi);
  const __m512d s = _mm512_castsi512_pd(_mm512_add_epi64(t, _mm512_slli_epi64(ki, 47)));
  const __m512d c = _mm512_fmadd_pd(r, _mm512_set1_pd(0x1.c6af84b912394p-20),
                                    _mm512_set1_pd(0x1.ebfce50fac4f3p-13));
  const __m512d r2 = _mm512_mul_pd(r, r);
  const __m512d y = _mm512_fmadd_pd(r, _mm512_set1_pd(0x1.62e42ff0c52d6p-6), _mm512_set1_pd(1.0));
  return _mm512_cvtpd_ps(_mm512_mul_pd(_mm512_fmadd_pd(c, r2, y), s));
}

GANTRY_ATT_INLINE void load_exp_table(__m512i (&tab)[4]) {
  const ExpTable &e = exp_table();
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i)
    tab[i] = _mm512_load_si512(e.t + 8 * i);
}

GANTRY_ATT_INLINE __m512 exp16(__m512 x, const __m512i (&tab)[4]) {
  const __m256 lo = exp8(_mm512_castps512_ps256(x), tab);
  const __m256 hi = exp8(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(x), 1)), tab);
  __m512 y = _mm512_castpd_ps(
      _mm512_insertf64x4(_mm512_castps_pd(_mm512_castps256_ps512(lo)), _mm256_castps_pd(hi), 1));
  // glibc's own path for |x| >= 88.0f and non-finite x (its top 12 bits' test).
  const __m512i top =
      _mm512_and_si512(_mm512_srli_epi32(_mm512_castps_si512(x), 20), _mm512_set1_epi32(0x7ff));
  const __mmask16 special = _mm512_cmpge_epu32_mask(top, _mm512_set1_epi32(0x42b));
  if (special) [[unlikely]] {
    alignas(64) float xs[16], ys[16];
    _mm512_store_ps(xs, x);
    _mm512_store_ps(ys, y);
    exp_special_lanes(special, xs, ys, 16);
    y = _mm512_load_ps(ys);
  }
  return y;
}

// attend_weights (kernels_impl.h) with the exponentials 16 rows at a time: the running max before
// each row first, then the rows' weights, then the running sums in order. The scan and the sums
// are serial per head, so their loops run over the heads innermost: n_q independent chains.
GANTRY_ATT_INLINE void attend_weights16(const float *s, int64_t s_stride, int n_q, int64_t nr,
                                        float *m, float *sum, float (*ms)[kChunk],
                                        float (*vs)[kChunk]) {
  static_assert(kChunk == 16);
  alignas(64) float before[64][kChunk];
  float mx[64], sm[64]; // local: m and sum might alias s for all the compiler knows
  std::copy(m, m + n_q, mx);
  std::copy(sum, sum + n_q, sm);
  for (int64_t r = 0; r < nr; ++r) {
    for (int h = 0; h < n_q; ++h) {
      before[h][r] = mx[h];
      const float x = s[h * s_stride + r];
      if (x > mx[h])
        mx[h] = x;
    }
  }
  std::copy(mx, mx + n_q, m);
  __m512i tab[4];
  load_exp_table(tab);
  const __mmask16 live = static_cast<__mmask16>(nr >= 16 ? 0xffff : (1u << nr) - 1);
  const __m512 one = _mm512_set1_ps(1.0f);
  for (int h = 0; h < n_q; ++h) {
    const __m512 sv = _mm512_maskz_loadu_ps(live, s + h * s_stride);
    const __m512 pv = _mm512_maskz_load_ps(live, before[h]);
    const __mmask16 up = _mm512_cmp_ps_mask(sv, pv, _CMP_GT_OQ);
    // up: exp(max - score) rescales, the row weighs 1; else the row weighs exp(score - max).
    const __m512 e =
        exp16(_mm512_mask_blend_ps(up, _mm512_sub_ps(sv, pv), _mm512_sub_ps(pv, sv)), tab);
    _mm512_storeu_ps(ms[h], _mm512_mask_blend_ps(up, one, e));
    _mm512_storeu_ps(vs[h], _mm512_mask_blend_ps(up, e, one));
  }
  for (int64_t r = 0; r < nr; ++r) {
    for (int h = 0; h < n_q; ++h)
      sm[h] = std::fma(sm[h], ms[h][r], vs[h][r]);
  }
  std::copy(sm, sm + n_q, sum);
}

// NC pieces of 16 lanes of NH heads (accumulators n apart), kept in registers over nr rows:
// NH * NC independent chains hide the latency of the round trip to fp16 after every step.
// rescaled[r]: whether any head's accumulator is rescaled at row r (rare after the first rows).
template <int NH, int NC>
GANTRY_ATT_INLINE void attend_lanes(const float (*ms)[kChunk], const float (*vs)[kChunk],
                                    const bool *rescaled, const uint16_t *v0, int64_t stride,
                                    int64_t nr, uint16_t *acc, int64_t n) {
  __m512 a[NH][NC];
#pragma GCC unroll 8
  for (int k = 0; k < NH; ++k) {
#pragma GCC unroll 4
    for (int c = 0; c < NC; ++c)
      a[k][c] = load16h(acc + k * n + 16 * c);
  }
  for (int64_t r = 0; r < nr; ++r) {
    __m512 v[NC];
#pragma GCC unroll 4
    for (int c = 0; c < NC; ++c)
      v[c] = load16h(v0 + r * stride + 16 * c);
    if (rescaled[r]) {
#pragma GCC unroll 8
      for (int k = 0; k < NH; ++k) {
        // A rescale by exactly 1 changes nothing (a holds fp16 values): skipped, as in AVX2's.
        if (ms[k][r] != 1.0f) {
#pragma GCC unroll 4
          for (int c = 0; c < NC; ++c)
            a[k][c] = round16(_mm512_mul_ps(a[k][c], _mm512_set1_ps(ms[k][r])));
        }
      }
    }
#pragma GCC unroll 8
    for (int k = 0; k < NH; ++k) {
      const __m512 w = _mm512_set1_ps(vs[k][r]);
#pragma GCC unroll 4
      for (int c = 0; c < NC; ++c)
        a[k][c] = round16(_mm512_fmadd_ps(v[c], w, a[k][c]));
    }
  }
#pragma GCC unroll 8
  for (int k = 0; k < NH; ++k) {
#pragma GCC unroll 4
    for (int c = 0; c < NC; ++c)
      store16h(acc + k * n + 16 * c, a[k][c]);
  }
}

template <int NH, int NC>
GANTRY_ATT void lanes_for(const float (*ms)[kChunk], const float (*vs)[kChunk],
                          const bool *rescaled, const uint16_t *v0, int64_t stride, int64_t nr,
                          uint16_t *acc, int64_t n) {
  attend_lanes<NH, NC>(ms, vs, rescaled, v0, stride, nr, acc, n);
}

// Heads h0 .. h0 + nh of one 16 * NC-lane piece.
template <int NC>
GANTRY_ATT_INLINE void lanes_of(int nh, const float (*ms)[kChunk], const float (*vs)[kChunk],
                                const bool *rescaled, const uint16_t *v0, int64_t stride,
                                int64_t nr, uint16_t *acc, int64_t n) {
  constexpr int kHeads = NC == 1 ? 8 : 16 / NC; // at most 16 accumulators
  int h0 = 0;
  for (; h0 + kHeads <= nh; h0 += kHeads)
    lanes_for<kHeads, NC>(ms + h0, vs + h0, rescaled, v0, stride, nr, acc + h0 * n, n);
  switch (nh - h0) {
  case 7: lanes_for<7, NC>(ms + h0, vs + h0, rescaled, v0, stride, nr, acc + h0 * n, n); break;
  case 6: lanes_for<6, NC>(ms + h0, vs + h0, rescaled, v0, stride, nr, acc + h0 * n, n); break;
  case 5: lanes_for<5, NC>(ms + h0, vs + h0, rescaled, v0, stride, nr, acc + h0 * n, n); break;
  case 4: lanes_for<4, NC>(ms + h0, vs + h0, rescaled, v0, stride, nr, acc + h0 * n, n); break;
  case 3: lanes_for<3, NC>(ms + h0, vs + h0, rescaled, v0, stride, nr, acc + h0 * n, n); break;
  case 2: lanes_for<2, NC>(ms + h0, vs + h0, rescaled, v0, stride, nr, acc + h0 * n, n); break;
  case 1: lanes_for<1, NC>(ms + h0, vs + h0, rescaled, v0, stride, nr, acc + h0 * n, n); break;
  default: break;
  }
}

GANTRY_ATT void attend_chunks(const float *s, int64_t s_stride, int n_q, const uint16_t *rows,
                              int64_t stride, int64_t n_rows, int64_t n, float *m, float *sum,
                              uint16_t *acc) {
  float ms[64][kChunk], vs[64][kChunk];
  bool rescaled[kChunk];
  for (int64_t r0 = 0; r0 < n_rows; r0 += kChunk) {
    const int64_t nr = std::min(kChunk, n_rows - r0);
    attend_weights16(s + r0, s_stride, n_q, nr, m, sum, ms, vs);
    for (int64_t r = 0; r < nr; ++r) {
      bool any = false;
      for (int h = 0; h < n_q; ++h)
        any |= ms[h][r] != 1.0f;
      rescaled[r] = any;
    }
    const uint16_t *v0 = rows + r0 * stride;
    // Few heads: more lanes per head in registers (4 x 16 for up to 4 heads, else 2 x 16).
    int64_t i = 0;
    if (n_q <= 4) {
      for (; i + 64 <= n; i += 64)
        lanes_of<4>(n_q, ms, vs, rescaled, v0 + i, stride, nr, acc + i, n);
    }
    for (; i + 32 <= n; i += 32)
      lanes_of<2>(n_q, ms, vs, rescaled, v0 + i, stride, nr, acc + i, n);
    for (; i < n; i += 16)
      lanes_of<1>(n_q, ms, vs, rescaled, v0 + i, stride, nr, acc + i, n);
  }
}

} // namespace

GANTRY_ATT void exp_lanes(const float *x, float *y, int64_t n) {
  __m512i tab[4];
  load_exp_table(tab);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    _mm512_storeu_ps(y + i, exp16(_mm512_loadu_ps(x + i), tab));
  if (i < n) {
    const auto live = static_cast<__mmask16>((1u << (n - i)) - 1);
    _mm512_mask_storeu_ps(y + i, live, exp16(_mm512_maskz_loadu_ps(live, x + i), tab));
  }
}

bool attend_rows_f16(const float *s, int64_t s_stride, int n_q, const uint16_t *rows,
                     int64_t stride, int64_t n_rows, int64_t n, float *m, float *sum,
                     uint16_t *acc) {
  if (n % 16 != 0 || n_q > 64)
    return false;
  attend_chunks(s, s_stride, n_q, rows, stride, n_rows, n, m, sum, acc);
  return true;
}

} // namespace gantry::engine::kernels::avx512vnni
