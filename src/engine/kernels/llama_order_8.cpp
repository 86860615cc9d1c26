// llama.cpp's AVX2 build's arithmetic (see llama_order_impl.h). Compiled with -ffp-contract=off
// (CMakeLists.txt): every fused multiply-add below is written out.
#include <algorithm>
#include <bit>
#include <cmath>
#include <immintrin.h>

#include "engine/kernels/kernels.h"
#include "engine/kernels/llama_order_impl.h"

// GCC 12's AVX-512 conversion intrinsics start from an undefined vector that
// -Wuninitialized / -Wmaybe-uninitialized report (as in kernels_avx512.cpp).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#define GANTRY_L8_AVX2 __attribute__((target("avx2,fma,f16c")))
#define GANTRY_L8_AVX2_INLINE __attribute__((target("avx2,fma,f16c"), always_inline)) inline

namespace gantry::engine::kernels::llama_order::build8 {
namespace {

constexpr int kLanes = 8;
constexpr int kStep = 4 * kLanes; // GGML_F32_STEP and GGML_F16_STEP of the AVX2 build

using namespace exp_poly; // ggml_v_expf's coefficients (llama_order_impl.h)

bool use_avx2() { return active_isa() != Isa::kScalar; }

uint32_t bits(float f) { return std::bit_cast<uint32_t>(f); }
float from_bits(uint32_t u) { return std::bit_cast<float>(u); }

// GGML_F32x8_REDUCE's last steps: the halves, then _mm_hadd_ps twice: (0+1) + (2+3).
float reduce_hadd(const float *v) {
  float t[4];
  for (int i = 0; i < 4; ++i)
    t[i] = v[i] + v[i + 4];
  return (t[0] + t[1]) + (t[2] + t[3]);
}
// tinyBLAS's hsum(__m256): the halves, then movehl and movehdup: (0+2) + (1+3).
float reduce_movehl(const float *v) {
  float t[4];
  for (int i = 0; i < 4; ++i)
    t[i] = v[i + 4] + v[i];
  return (t[0] + t[2]) + (t[1] + t[3]);
}

float exp_lane(float x) {
  const float z = std::fma(x, kInvLn2, kShift);
  const float n = z - kShift;
  const float b = std::fma(-n, kLn2Lo, std::fma(-n, kLn2Hi, x));
  const uint32_t e = bits(z) << 23;
  const float k = from_bits(e + bits(1.0f));
  const float u = b * b;
  const float j = std::fma(std::fma(std::fma(kC4, b, kC3), u, std::fma(kC2, b, kC1)), u, kC0 * b);
  if (!(std::fabs(n) > 126.0f))
    return std::fma(j, k, k);
  const uint32_t g = n <= 0.0f ? 0x82000000u : 0u;
  const float s1 = from_bits(g + 0x7f000000u);
  const float s2 = from_bits(e - g);
  if (std::fabs(n) > 192.0f)
    return s1 * s1;
  return std::fma(s2, j, s2) * s1;
}

// ---- AVX2 -----------------------------------------------------------------------------------

GANTRY_L8_AVX2_INLINE float reduce_hadd_avx2(__m256 v) {
  const __m128 t0 = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 t1 = _mm_hadd_ps(t0, t0);
  return _mm_cvtss_f32(_mm_hadd_ps(t1, t1));
}

GANTRY_L8_AVX2_INLINE float reduce_movehl_avx2(__m256 v) {
  __m128 x = _mm_add_ps(_mm256_extractf128_ps(v, 1), _mm256_castps256_ps128(v));
  x = _mm_add_ps(x, _mm_movehl_ps(x, x));
  x = _mm_add_ss(x, _mm_movehdup_ps(x));
  return _mm_cvtss_f32(x);
}

GANTRY_L8_AVX2 float vec_dot_avx2(const float *x, const float *y, int64_t n) {
  const int64_t np = n & ~int64_t{kStep - 1};
  float sum = 0.0f;
  if (np > 0) {
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(),
                     _mm256_setzero_ps()};
    for (int64_t i = 0; i < np; i += kStep) {
      for (int j = 0; j < 4; ++j) {
        acc[j] = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + j * kLanes),
                                 _mm256_loadu_ps(y + i + j * kLanes), acc[j]);
      }
    }
    sum = reduce_hadd_avx2(
        _mm256_add_ps(_mm256_add_ps(acc[0], acc[2]), _mm256_add_ps(acc[1], acc[3])));
  }
  return lanes::leftovers<kLanes>(x, y, np, n, sum);
}

template <int T>
GANTRY_L8_AVX2_INLINE void tile_body(const float *const *a, const float *const *b, int64_t k,
                                     float *out) {
  __m256 acc[T][4];
  for (int t = 0; t < T; ++t) {
    for (int r = 0; r < 4; ++r)
      acc[t][r] = _mm256_setzero_ps();
  }
  for (int64_t c = 0; c < k; c += kLanes) {
    __m256 av[4];
    for (int r = 0; r < 4; ++r)
      av[r] = _mm256_loadu_ps(a[r] + c);
    for (int t = 0; t < T; ++t) {
      const __m256 bv = _mm256_loadu_ps(b[t] + c);
      for (int r = 0; r < 4; ++r)
        acc[t][r] = _mm256_fmadd_ps(av[r], bv, acc[t][r]);
    }
  }
  for (int t = 0; t < T; ++t) {
    for (int r = 0; r < 4; ++r)
      out[t * 4 + r] = reduce_movehl_avx2(acc[t][r]);
  }
}

// Up to 3 tokens on AVX2's 16 vector registers; on AVX-512 CPUs the same 8-lane arithmetic gets
// 32 registers (AVX-512VL), room for 6 tokens.
template <int T>
GANTRY_L8_AVX2 void tiles_avx2(const float *const *a, const float *const *b, int64_t k,
                               float *out) {
  tile_body<T>(a, b, k, out);
}
template <int T>
__attribute__((target("avx512f,avx512vl,avx2,fma,f16c"))) void
tiles_avx2_wide(const float *const *a, const float *const *b, int64_t k, float *out) {
  tile_body<T>(a, b, k, out);
}

GANTRY_L8_AVX2_INLINE __m256 load8h(const uint16_t *p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i *>(p)));
}

GANTRY_L8_AVX2_INLINE float dot_f16_avx2(const float *q, const uint16_t *k, int64_t n) {
  const int64_t np = n & ~int64_t{kStep - 1};
  double sum = 0.0;
  if (np > 0) {
    // Named accumulators: an array indexed in a loop may live in memory at -O2.
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (int64_t i = 0; i < np; i += kStep) {
      a0 = _mm256_fmadd_ps(load8h(k + i), _mm256_loadu_ps(q + i), a0);
      a1 = _mm256_fmadd_ps(load8h(k + i + 8), _mm256_loadu_ps(q + i + 8), a1);
      a2 = _mm256_fmadd_ps(load8h(k + i + 16), _mm256_loadu_ps(q + i + 16), a2);
      a3 = _mm256_fmadd_ps(load8h(k + i + 24), _mm256_loadu_ps(q + i + 24), a3);
    }
    sum = reduce_hadd_avx2(_mm256_add_ps(_mm256_add_ps(a0, a2), _mm256_add_ps(a1, a3)));
  }
  for (int64_t i = np; i < n; ++i)
    sum += static_cast<double>(fp16_to_fp32(k[i]) * q[i]);
  return static_cast<float>(sum);
}

// The row loop here so that consecutive rows' dependency chains overlap in the CPU.
GANTRY_L8_AVX2 void dot_rows_f16_avx2(const float *q, const uint16_t *rows, int64_t stride,
                                      int64_t n_rows, int64_t n, float scale, float *out) {
  for (int64_t r = 0; r < n_rows; ++r)
    out[r] = dot_f16_avx2(q, rows + r * stride, n) * scale;
}

// ---- K·Q for the query heads of a GQA group, on AVX-512 -----------------------------------
//
// Each K row is loaded and converted once for all heads, and two heads share a zmm: head 2p's
// 8 lanes in the low half, head 2p + 1's in the high half, against K's 8 columns in both halves.
// Every lane does exactly dot_f16_avx2's fma sequence, and the reduction of four such vectors is
// reduce_hadd_avx2's tree for eight dots at once (additions commute bit for bit, only their
// grouping matters). Columns must be a multiple of kStep (no double-summed tail).

#define GANTRY_L8_AVX512 __attribute__((target("avx512f,avx512vl,avx512dq,avx2,fma,f16c")))
#define GANTRY_L8_AVX512_INLINE                                                                    \
  __attribute__((target("avx512f,avx512vl,avx512dq,avx2,fma,f16c"), always_inline)) inline

constexpr int64_t kHeadsScratch = 4096; // floats of interleaved queries (16 KiB of stack)

GANTRY_L8_AVX512_INLINE __m512 load8h_twice(const uint16_t *p) {
  return _mm512_cvtph_ps(
      _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i *>(p))));
}

// NP head pairs (1..4) against one row; qp holds the pairs interleaved in 8-column pieces
// ([pair][n / 8][16]). res[0..3]: heads 0, 2, 4, 6 of the block; res[8..11]: heads 1, 3, 5, 7.
template <int NP>
GANTRY_L8_AVX512_INLINE __m512 pair_dots(const float *qp, int64_t n, const uint16_t *k) {
  __m512 a[NP][4];
#pragma GCC unroll 4
  for (int p = 0; p < NP; ++p) {
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j)
      a[p][j] = _mm512_setzero_ps();
  }
  for (int64_t i = 0; i < n; i += kStep) {
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) {
      const __m512 kv = load8h_twice(k + i + j * kLanes);
#pragma GCC unroll 4
      for (int p = 0; p < NP; ++p)
        a[p][j] = _mm512_fmadd_ps(kv, _mm512_loadu_ps(qp + 2 * (p * n + i + j * kLanes)), a[p][j]);
    }
  }
  __m512 v[4];
#pragma GCC unroll 4
  for (int p = 0; p < 4; ++p) {
    if (p < NP) {
      v[p] = _mm512_add_ps(_mm512_add_ps(a[p][0], a[p][2]), _mm512_add_ps(a[p][1], a[p][3]));
      // t[i] = v[i] + v[i + 4] within each 8-lane half (reduce_hadd_avx2's first step).
      v[p] = _mm512_add_ps(v[p], _mm512_shuffle_f32x4(v[p], v[p], _MM_SHUFFLE(2, 3, 0, 1)));
    } else {
      v[p] = v[0];
    }
  }
  // The two horizontal adds: (t0 + t1) + (t2 + t3), four vectors at a time.
  const __m512 p01 = _mm512_add_ps(_mm512_shuffle_ps(v[0], v[1], _MM_SHUFFLE(2, 0, 2, 0)),
                                   _mm512_shuffle_ps(v[0], v[1], _MM_SHUFFLE(3, 1, 3, 1)));
  const __m512 p23 = _mm512_add_ps(_mm512_shuffle_ps(v[2], v[3], _MM_SHUFFLE(2, 0, 2, 0)),
                                   _mm512_shuffle_ps(v[2], v[3], _MM_SHUFFLE(3, 1, 3, 1)));
  return _mm512_add_ps(_mm512_shuffle_ps(p01, p23, _MM_SHUFFLE(2, 0, 2, 0)),
                       _mm512_shuffle_ps(p01, p23, _MM_SHUFFLE(3, 1, 3, 1)));
}

GANTRY_L8_AVX512 void dot_heads_avx512(const float *const *q, int n_q, const uint16_t *rows,
                                       int64_t stride, int64_t n_rows, int64_t n, float scale,
                                       float *out, int64_t out_stride) {
  const int pairs = (n_q + 1) / 2;
  alignas(64) float qp[kHeadsScratch];
  for (int p = 0; p < pairs; ++p) {
    const float *lo = q[2 * p], *hi = q[std::min(2 * p + 1, n_q - 1)];
    for (int64_t i = 0; i < n; i += kLanes) {
      _mm256_store_ps(qp + 2 * (p * n + i), _mm256_loadu_ps(lo + i));
      _mm256_store_ps(qp + 2 * (p * n + i) + kLanes, _mm256_loadu_ps(hi + i));
    }
  }
  const __m512 sv = _mm512_set1_ps(scale);
  for (int64_t r = 0; r < n_rows; ++r) {
    const uint16_t *k = rows + r * stride;
    for (int p0 = 0; p0 < pairs; p0 += 4) {
      const float *qb = qp + 2 * p0 * n;
      __m512 d;
      switch (std::min(4, pairs - p0)) {
      case 4: d = pair_dots<4>(qb, n, k); break;
      case 3: d = pair_dots<3>(qb, n, k); break;
      case 2: d = pair_dots<2>(qb, n, k); break;
      default: d = pair_dots<1>(qb, n, k); break;
      }
      alignas(64) float res[16];
      _mm512_store_ps(res, _mm512_mul_ps(d, sv));
      const int h0 = 2 * p0, nh = std::min(8, n_q - h0);
      for (int i = 0; i < nh; ++i)
        out[(h0 + i) * out_stride + r] = res[(i & 1) * 8 + i / 2];
    }
  }
}

GANTRY_L8_AVX2_INLINE __m256 exp_avx2(__m256 x) {
  const __m256 r = _mm256_set1_ps(kShift);
  const __m256 z = _mm256_fmadd_ps(x, _mm256_set1_ps(kInvLn2), r);
  const __m256 n = _mm256_sub_ps(z, r);
  const __m256 b =
      _mm256_fnmadd_ps(n, _mm256_set1_ps(kLn2Lo), _mm256_fnmadd_ps(n, _mm256_set1_ps(kLn2Hi), x));
  const __m256i e = _mm256_slli_epi32(_mm256_castps_si256(z), 23);
  const __m256 k =
      _mm256_castsi256_ps(_mm256_add_epi32(e, _mm256_castps_si256(_mm256_set1_ps(1.0f))));
  const __m256 abs_n = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), n);
  const __m256 c = _mm256_cmp_ps(abs_n, _mm256_set1_ps(126.0f), _CMP_GT_OQ);
  const __m256 u = _mm256_mul_ps(b, b);
  const __m256 j = _mm256_fmadd_ps(
      _mm256_fmadd_ps(_mm256_fmadd_ps(_mm256_set1_ps(kC4), b, _mm256_set1_ps(kC3)), u,
                      _mm256_fmadd_ps(_mm256_set1_ps(kC2), b, _mm256_set1_ps(kC1))),
      u, _mm256_mul_ps(_mm256_set1_ps(kC0), b));
  if (!_mm256_movemask_ps(c))
    return _mm256_fmadd_ps(j, k, k);
  const __m256i g =
      _mm256_and_si256(_mm256_castps_si256(_mm256_cmp_ps(n, _mm256_setzero_ps(), _CMP_LE_OQ)),
                       _mm256_set1_epi32(static_cast<int>(0x82000000u)));
  const __m256 s1 = _mm256_castsi256_ps(_mm256_add_epi32(g, _mm256_set1_epi32(0x7f000000)));
  const __m256 s2 = _mm256_castsi256_ps(_mm256_sub_epi32(e, g));
  const __m256 d = _mm256_cmp_ps(abs_n, _mm256_set1_ps(192.0f), _CMP_GT_OQ);
  return _mm256_or_ps(
      _mm256_and_ps(d, _mm256_mul_ps(s1, s1)),
      _mm256_andnot_ps(d,
                       _mm256_or_ps(_mm256_and_ps(c, _mm256_mul_ps(_mm256_fmadd_ps(s2, j, s2), s1)),
                                    _mm256_andnot_ps(c, _mm256_fmadd_ps(k, j, k)))));
}

// ---- K·Q for the query heads of a GQA group, on AVX2 ----------------------------------------
//
// 8 heads per K row (its lines in L1 for all of them), their last vectors reduced together:
// the halves added pairwise across two heads per register, then two rounds of hadd give the 8
// dots in reduce_hadd_avx2's grouping, (t0 + t1) + (t2 + t3) of t = low + high half (additions
// commute bit for bit, only their grouping matters), instead of 8 separate reductions. Every lane
// does dot_f16_avx2's fma sequence. Columns must be a multiple of kStep (no double-summed tail).
// (Converting the row to a float buffer once for the 8 heads measured slower than converting it
// in each head's loop.)
GANTRY_L8_AVX2_INLINE void dot_heads8_row(const float *const *q, const uint16_t *k, int64_t n,
                                          __m256 scale, float *out, int64_t out_stride) {
  alignas(32) float fin[8][kLanes];
#pragma GCC unroll 1
  for (int h = 0; h < 8; ++h) {
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    const float *qh = q[h];
    for (int64_t i = 0; i < n; i += kStep) {
      a0 = _mm256_fmadd_ps(load8h(k + i), _mm256_loadu_ps(qh + i), a0);
      a1 = _mm256_fmadd_ps(load8h(k + i + 8), _mm256_loadu_ps(qh + i + 8), a1);
      a2 = _mm256_fmadd_ps(load8h(k + i + 16), _mm256_loadu_ps(qh + i + 16), a2);
      a3 = _mm256_fmadd_ps(load8h(k + i + 24), _mm256_loadu_ps(qh + i + 24), a3);
    }
    _mm256_store_ps(fin[h], _mm256_add_ps(_mm256_add_ps(a0, a2), _mm256_add_ps(a1, a3)));
  }
  // t of heads 2p and 2p + 1 in one register: [t(2p) | t(2p + 1)].
  __m256 t[4];
#pragma GCC unroll 4
  for (int p = 0; p < 4; ++p) {
    const __m256 a = _mm256_load_ps(fin[2 * p]), b = _mm256_load_ps(fin[2 * p + 1]);
    t[p] = _mm256_add_ps(_mm256_permute2f128_ps(a, b, 0x20), _mm256_permute2f128_ps(a, b, 0x31));
  }
  // Lanes: heads 0, 2, 4, 6 | 1, 3, 5, 7.
  const __m256 d = _mm256_hadd_ps(_mm256_hadd_ps(t[0], t[1]), _mm256_hadd_ps(t[2], t[3]));
  alignas(32) float res[8];
  _mm256_store_ps(res, _mm256_mul_ps(d, scale));
#pragma GCC unroll 4
  for (int p = 0; p < 4; ++p) {
    out[(2 * p) * out_stride] = res[p];
    out[(2 * p + 1) * out_stride] = res[4 + p];
  }
}

GANTRY_L8_AVX2 void dot_heads_avx2(const float *const *q, int n_q, const uint16_t *rows,
                                   int64_t stride, int64_t n_rows, int64_t n, float scale,
                                   float *out, int64_t out_stride) {
  const __m256 sv = _mm256_set1_ps(scale);
  int h0 = 0;
  for (; h0 + 8 <= n_q; h0 += 8) {
    for (int64_t r = 0; r < n_rows; ++r)
      dot_heads8_row(q + h0, rows + r * stride, n, sv, out + h0 * out_stride + r, out_stride);
  }
  for (int h = h0; h < n_q; ++h)
    dot_rows_f16_avx2(q[h], rows, stride, n_rows, n, scale, out + h * out_stride);
}

GANTRY_L8_AVX2 void silu_mul_avx2(const float *gate, const float *up, float *out, int64_t n) {
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    const __m256 x = _mm256_loadu_ps(gate + i);
    const __m256 e = exp_avx2(_mm256_sub_ps(_mm256_setzero_ps(), x));
    const __m256 s = _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0f), e));
    _mm256_storeu_ps(out + i, _mm256_mul_ps(s, _mm256_loadu_ps(up + i)));
  }
  for (; i < n; ++i)
    out[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
}

} // namespace

float vec_dot(const float *x, const float *y, int64_t n) {
  return use_avx2() ? vec_dot_avx2(x, y, n) : lanes::vec_dot<kLanes, reduce_hadd>(x, y, n);
}

void tiles(int t_count, const float *const *a, const float *const *b, int64_t k, float *out) {
  if (active_isa() == Isa::kAvx512Vnni) {
    switch (t_count) {
    case 6: tiles_avx2_wide<6>(a, b, k, out); return;
    case 5: tiles_avx2_wide<5>(a, b, k, out); return;
    case 4: tiles_avx2_wide<4>(a, b, k, out); return;
    case 3: tiles_avx2_wide<3>(a, b, k, out); return;
    case 2: tiles_avx2_wide<2>(a, b, k, out); return;
    default: tiles_avx2_wide<1>(a, b, k, out); return;
    }
  }
  if (use_avx2()) {
    // At most 3 tokens here (the driver's group on this instruction set).
    if (t_count == 3)
      tiles_avx2<3>(a, b, k, out);
    else if (t_count == 2)
      tiles_avx2<2>(a, b, k, out);
    else
      tiles_avx2<1>(a, b, k, out);
    return;
  }
  for (int t = 0; t < t_count; ++t) {
    for (int r = 0; r < 4; ++r) {
      float acc[kLanes] = {};
      for (int64_t c = 0; c < k; c += kLanes) {
        for (int l = 0; l < kLanes; ++l)
          acc[l] = std::fma(a[r][c + l], b[t][c + l], acc[l]);
      }
      out[t * 4 + r] = reduce_movehl(acc);
    }
  }
}

void dot_rows_f16(const float *q, const uint16_t *rows, int64_t stride, int64_t n_rows, int64_t n,
                  float scale, float *out) {
  if (use_avx2()) {
    dot_rows_f16_avx2(q, rows, stride, n_rows, n, scale, out);
    return;
  }
  for (int64_t r = 0; r < n_rows; ++r)
    out[r] = dot_f16(q, rows + r * stride, n) * scale;
}

void dot_heads_f16(const float *const *q, int n_q, const uint16_t *rows, int64_t stride,
                   int64_t n_rows, int64_t n, float scale, float *out, int64_t out_stride) {
  if (active_isa() == Isa::kAvx512Vnni && n >= kStep && n % kStep == 0 &&
      static_cast<int64_t>(n_q + 1) / 2 * 2 * n <= kHeadsScratch) {
    dot_heads_avx512(q, n_q, rows, stride, n_rows, n, scale, out, out_stride);
    return;
  }
  if (use_avx2() && n_q >= 8 && n >= kStep && n % kStep == 0) {
    dot_heads_avx2(q, n_q, rows, stride, n_rows, n, scale, out, out_stride);
    return;
  }
  for (int h = 0; h < n_q; ++h)
    dot_rows_f16(q[h], rows, stride, n_rows, n, scale, out + h * out_stride);
}

float dot_f16(const float *q, const uint16_t *k, int64_t n) {
  return lanes::dot_f16<kLanes, reduce_hadd>(q, k, n);
}

void silu_mul(const float *gate, const float *up, float *out, int64_t n) {
  if (use_avx2()) {
    silu_mul_avx2(gate, up, out, n);
    return;
  }
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int l = 0; l < kLanes; ++l) {
      const float x = gate[i + l];
      const float s = x / (1.0f + exp_lane(0.0f - x));
      out[i + l] = s * up[i + l];
    }
  }
  for (; i < n; ++i)
    out[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
}

} // namespace gantry::engine::kernels::llama_order::build8
