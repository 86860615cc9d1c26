// See llama_order.h. This file is compiled with -ffp-contract=off (CMakeLists.txt): every fused
// multiply-add below is written out, and no product may be fused where llama.cpp rounds it.
#include "engine/kernels/llama_order.h"

#include <algorithm>
#include <atomic>
#include <cassert>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <immintrin.h>

#include "engine/kernels/kernels_impl.h"
#include "engine/kernels/llama_order_impl.h"
#include "engine/kernels/thread_pool.h"

// GCC 12's AVX-512 intrinsics (extract of a 256-bit half, scalef) start from an undefined vector
// that -Wmaybe-uninitialized / -Wuninitialized report (as in kernels_avx512.cpp).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#define GANTRY_LO_AVX512 __attribute__((target("avx512f,avx512vl,avx2,fma,f16c")))
#define GANTRY_LO_AVX512_INLINE                                                                    \
  __attribute__((target("avx512f,avx512vl,avx2,fma,f16c"), always_inline)) inline
#define GANTRY_LO_AVX2 __attribute__((target("avx2,fma,f16c")))
#define GANTRY_LO_AVX2_INLINE __attribute__((target("avx2,fma,f16c"), always_inline)) inline

namespace gantry::engine::kernels::llama_order {
namespace {

constexpr int kLanes = 16;
constexpr int kStep = 4 * kLanes; // ggml_vec_dot_f32's GGML_F32_STEP on AVX-512

using namespace exp_poly; // ggml_v_expf's coefficients (llama_order_impl.h)

// ---- the portable emulation (scalar instruction set) ------------------------------------------

// GCC's _mm512_reduce_add_ps tree: halves of 8, of 4, then lanes (0+2) + (1+3).
float reduce16(const float *v) {
  float a[8], b[4];
  for (int i = 0; i < 8; ++i)
    a[i] = v[8 + i] + v[i];
  for (int i = 0; i < 4; ++i)
    b[i] = a[4 + i] + a[i];
  return (b[0] + b[2]) + (b[1] + b[3]);
}

float tile_dot_scalar(const float *a, const float *b, int64_t k) {
  float acc[kLanes] = {};
  for (int64_t c = 0; c < k; c += kLanes) {
    for (int l = 0; l < kLanes; ++l)
      acc[l] = std::fma(a[c + l], b[c + l], acc[l]);
  }
  return reduce16(acc);
}

float exp_lane(float x) {
  const float z = std::fma(x, kInvLn2, kShift);
  const float n = z - kShift;
  const float b = std::fma(-n, kLn2Lo, std::fma(-n, kLn2Hi, x));
  if (std::fabs(n) > 192.0f)
    return n <= 0.0f ? 0.0f : INFINITY;
  const float u = b * b;
  const float j = std::fma(std::fma(std::fma(kC4, b, kC3), u, std::fma(kC2, b, kC1)), u,
                           std::fma(kC0, b, 1.0f));
  return std::ldexp(j, static_cast<int>(n)); // vscalefps: one rounding, like ldexp
}

void silu_mul_scalar(const float *gate, const float *up, float *out, int64_t n) {
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

// ---- AVX2: a 16-lane vector is two 8-lane halves ----------------------------------------------

struct V2 {
  __m256 lo, hi;
};

GANTRY_LO_AVX2_INLINE float reduce_halves(__m256 lo, __m256 hi) {
  const __m256 a = _mm256_add_ps(hi, lo);
  const __m128 b = _mm_add_ps(_mm256_extractf128_ps(a, 1), _mm256_castps256_ps128(a));
  const __m128 c = _mm_add_ps(b, _mm_permute_ps(b, 0x4e));
  return _mm_cvtss_f32(c) + _mm_cvtss_f32(_mm_shuffle_ps(c, c, 0x55));
}

GANTRY_LO_AVX2 float vec_dot_avx2(const float *x, const float *y, int64_t n) {
  const int64_t np = n & ~int64_t{kStep - 1};
  float sum = 0.0f;
  if (np > 0) {
    V2 acc[4];
    for (auto &a : acc)
      a = {_mm256_setzero_ps(), _mm256_setzero_ps()};
    for (int64_t i = 0; i < np; i += kStep) {
      for (int j = 0; j < 4; ++j) {
        const float *xj = x + i + j * kLanes, *yj = y + i + j * kLanes;
        acc[j].lo = _mm256_fmadd_ps(_mm256_loadu_ps(xj), _mm256_loadu_ps(yj), acc[j].lo);
        acc[j].hi = _mm256_fmadd_ps(_mm256_loadu_ps(xj + 8), _mm256_loadu_ps(yj + 8), acc[j].hi);
      }
    }
    const __m256 lo =
        _mm256_add_ps(_mm256_add_ps(acc[0].lo, acc[2].lo), _mm256_add_ps(acc[1].lo, acc[3].lo));
    const __m256 hi =
        _mm256_add_ps(_mm256_add_ps(acc[0].hi, acc[2].hi), _mm256_add_ps(acc[1].hi, acc[3].hi));
    sum = reduce_halves(lo, hi);
  }
  return lanes::leftovers<kLanes>(x, y, np, n, sum);
}

// Several outputs of tinyBLAS's order at once: rows a[0..R) against tokens b[0..T).
template <int R, int T>
GANTRY_LO_AVX2_INLINE void tile_avx2(const float *const *a, const float *const *b, int64_t k,
                                     float *out /* [T][R] */) {
  V2 acc[T][R];
  for (int t = 0; t < T; ++t) {
    for (int r = 0; r < R; ++r)
      acc[t][r] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
  }
  for (int64_t c = 0; c < k; c += kLanes) {
    __m256 alo[R], ahi[R];
    for (int r = 0; r < R; ++r) {
      alo[r] = _mm256_loadu_ps(a[r] + c);
      ahi[r] = _mm256_loadu_ps(a[r] + c + 8);
    }
    for (int t = 0; t < T; ++t) {
      const __m256 blo = _mm256_loadu_ps(b[t] + c), bhi = _mm256_loadu_ps(b[t] + c + 8);
      for (int r = 0; r < R; ++r) {
        acc[t][r].lo = _mm256_fmadd_ps(alo[r], blo, acc[t][r].lo);
        acc[t][r].hi = _mm256_fmadd_ps(ahi[r], bhi, acc[t][r].hi);
      }
    }
  }
  for (int t = 0; t < T; ++t) {
    for (int r = 0; r < R; ++r)
      out[t * R + r] = reduce_halves(acc[t][r].lo, acc[t][r].hi);
  }
}

GANTRY_LO_AVX2_INLINE __m256 load8h(const uint16_t *p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i *>(p)));
}

GANTRY_LO_AVX2_INLINE float dot_f16_avx2(const float *q, const uint16_t *k, int64_t n) {
  const int64_t np = n & ~int64_t{kStep - 1};
  double sum = 0.0;
  if (np > 0) {
    // A 16-lane accumulator j is lo[j] (lanes 0-7) and hi[j] (8-15); named, not an array, which
    // may live in memory at -O2.
    __m256 l0 = _mm256_setzero_ps(), l1 = l0, l2 = l0, l3 = l0, h0 = l0, h1 = l0, h2 = l0, h3 = l0;
    for (int64_t i = 0; i < np; i += kStep) {
      l0 = _mm256_fmadd_ps(load8h(k + i), _mm256_loadu_ps(q + i), l0);
      h0 = _mm256_fmadd_ps(load8h(k + i + 8), _mm256_loadu_ps(q + i + 8), h0);
      l1 = _mm256_fmadd_ps(load8h(k + i + 16), _mm256_loadu_ps(q + i + 16), l1);
      h1 = _mm256_fmadd_ps(load8h(k + i + 24), _mm256_loadu_ps(q + i + 24), h1);
      l2 = _mm256_fmadd_ps(load8h(k + i + 32), _mm256_loadu_ps(q + i + 32), l2);
      h2 = _mm256_fmadd_ps(load8h(k + i + 40), _mm256_loadu_ps(q + i + 40), h2);
      l3 = _mm256_fmadd_ps(load8h(k + i + 48), _mm256_loadu_ps(q + i + 48), l3);
      h3 = _mm256_fmadd_ps(load8h(k + i + 56), _mm256_loadu_ps(q + i + 56), h3);
    }
    sum = reduce_halves(_mm256_add_ps(_mm256_add_ps(l0, l2), _mm256_add_ps(l1, l3)),
                        _mm256_add_ps(_mm256_add_ps(h0, h2), _mm256_add_ps(h1, h3)));
  }
  for (int64_t i = np; i < n; ++i)
    sum += static_cast<double>(fp16_to_fp32(k[i]) * q[i]);
  return static_cast<float>(sum);
}

// The row loop here so that consecutive rows' dependency chains overlap in the CPU.
GANTRY_LO_AVX2 void dot_rows_f16_avx2(const float *q, const uint16_t *rows, int64_t stride,
                                      int64_t n_rows, int64_t n, float scale, float *out) {
  for (int64_t r = 0; r < n_rows; ++r)
    out[r] = dot_f16_avx2(q, rows + r * stride, n) * scale;
}

GANTRY_LO_AVX2_INLINE __m256 exp_avx2(__m256 x) {
  const __m256 z = _mm256_fmadd_ps(x, _mm256_set1_ps(kInvLn2), _mm256_set1_ps(kShift));
  const __m256 n = _mm256_sub_ps(z, _mm256_set1_ps(kShift));
  const __m256 b =
      _mm256_fnmadd_ps(n, _mm256_set1_ps(kLn2Lo), _mm256_fnmadd_ps(n, _mm256_set1_ps(kLn2Hi), x));
  const __m256 u = _mm256_mul_ps(b, b);
  const __m256 j = _mm256_fmadd_ps(
      _mm256_fmadd_ps(_mm256_fmadd_ps(_mm256_set1_ps(kC4), b, _mm256_set1_ps(kC3)), u,
                      _mm256_fmadd_ps(_mm256_set1_ps(kC2), b, _mm256_set1_ps(kC1))),
      u, _mm256_fmadd_ps(_mm256_set1_ps(kC0), b, _mm256_set1_ps(1.0f)));
  // j * 2^n with one rounding, as vscalefps: 2^n is built from its exponent bits; when it is
  // not a normal float the exponent is split so that the first product is exact.
  const __m256i ni = _mm256_cvttps_epi32(n);
  const __m256 low = _mm256_cmp_ps(n, _mm256_set1_ps(-126.0f), _CMP_LT_OQ);
  const __m256 high = _mm256_cmp_ps(n, _mm256_set1_ps(127.0f), _CMP_GT_OQ);
  const __m256i adj = _mm256_castps_si256(
      _mm256_or_ps(_mm256_and_ps(low, _mm256_castsi256_ps(_mm256_set1_epi32(100))),
                   _mm256_and_ps(high, _mm256_castsi256_ps(_mm256_set1_epi32(-100)))));
  const __m256 p1 = _mm256_castsi256_ps(
      _mm256_slli_epi32(_mm256_add_epi32(_mm256_add_epi32(ni, adj), _mm256_set1_epi32(127)), 23));
  const __m256 p2 =
      _mm256_blendv_ps(_mm256_blendv_ps(_mm256_set1_ps(1.0f), _mm256_set1_ps(0x1p-100f), low),
                       _mm256_set1_ps(0x1p100f), high);
  const __m256 res = _mm256_mul_ps(_mm256_mul_ps(j, p1), p2);
  const __m256 abs_n = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), n);
  const __m256 d = _mm256_cmp_ps(abs_n, _mm256_set1_ps(192.0f), _CMP_GT_OQ);
  const __m256 alt = _mm256_blendv_ps(_mm256_set1_ps(INFINITY), _mm256_setzero_ps(),
                                      _mm256_cmp_ps(n, _mm256_setzero_ps(), _CMP_LE_OQ));
  return _mm256_blendv_ps(res, alt, d);
}

GANTRY_LO_AVX2_INLINE __m256 silu_avx2(__m256 x) {
  const __m256 e = exp_avx2(_mm256_sub_ps(_mm256_setzero_ps(), x));
  return _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0f), e));
}

GANTRY_LO_AVX2 void silu_mul_avx2(const float *gate, const float *up, float *out, int64_t n) {
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int h = 0; h < kLanes; h += 8) {
      _mm256_storeu_ps(out + i + h, _mm256_mul_ps(silu_avx2(_mm256_loadu_ps(gate + i + h)),
                                                  _mm256_loadu_ps(up + i + h)));
    }
  }
  for (; i < n; ++i)
    out[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
}

// ---- AVX-512 ------------------------------------------------------------------------------------

GANTRY_LO_AVX512_INLINE float reduce_avx512(__m512 v) {
  const __m256 hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1));
  return reduce_halves(_mm512_castps512_ps256(v), hi);
}

GANTRY_LO_AVX512 float vec_dot_avx512(const float *x, const float *y, int64_t n) {
  const int64_t np = n & ~int64_t{kStep - 1};
  float sum = 0.0f;
  if (np > 0) {
    __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(),
                     _mm512_setzero_ps()};
    for (int64_t i = 0; i < np; i += kStep) {
      for (int j = 0; j < 4; ++j) {
        acc[j] = _mm512_fmadd_ps(_mm512_loadu_ps(x + i + j * kLanes),
                                 _mm512_loadu_ps(y + i + j * kLanes), acc[j]);
      }
    }
    sum =
        reduce_avx512(_mm512_add_ps(_mm512_add_ps(acc[0], acc[2]), _mm512_add_ps(acc[1], acc[3])));
  }
  return lanes::leftovers<kLanes>(x, y, np, n, sum);
}

GANTRY_LO_AVX512_INLINE __m512 load16h(const uint16_t *p) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(p)));
}

GANTRY_LO_AVX512_INLINE float dot_f16_avx512(const float *q, const uint16_t *k, int64_t n) {
  const int64_t np = n & ~int64_t{kStep - 1};
  double sum = 0.0;
  if (np > 0) {
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (int64_t i = 0; i < np; i += kStep) {
      a0 = _mm512_fmadd_ps(load16h(k + i), _mm512_loadu_ps(q + i), a0);
      a1 = _mm512_fmadd_ps(load16h(k + i + 16), _mm512_loadu_ps(q + i + 16), a1);
      a2 = _mm512_fmadd_ps(load16h(k + i + 32), _mm512_loadu_ps(q + i + 32), a2);
      a3 = _mm512_fmadd_ps(load16h(k + i + 48), _mm512_loadu_ps(q + i + 48), a3);
    }
    sum = reduce_avx512(_mm512_add_ps(_mm512_add_ps(a0, a2), _mm512_add_ps(a1, a3)));
  }
  for (int64_t i = np; i < n; ++i)
    sum += static_cast<double>(fp16_to_fp32(k[i]) * q[i]);
  return static_cast<float>(sum);
}

GANTRY_LO_AVX512 void dot_rows_f16_avx512(const float *q, const uint16_t *rows, int64_t stride,
                                          int64_t n_rows, int64_t n, float scale, float *out) {
  for (int64_t r = 0; r < n_rows; ++r)
    out[r] = dot_f16_avx512(q, rows + r * stride, n) * scale;
}

template <int R, int T>
GANTRY_LO_AVX512_INLINE void tile_avx512(const float *const *a, const float *const *b, int64_t k,
                                         float *out /* [T][R] */) {
  __m512 acc[T][R];
  for (int t = 0; t < T; ++t) {
    for (int r = 0; r < R; ++r)
      acc[t][r] = _mm512_setzero_ps();
  }
  for (int64_t c = 0; c < k; c += kLanes) {
    __m512 av[R];
    for (int r = 0; r < R; ++r)
      av[r] = _mm512_loadu_ps(a[r] + c);
    for (int t = 0; t < T; ++t) {
      const __m512 bv = _mm512_loadu_ps(b[t] + c);
      for (int r = 0; r < R; ++r)
        acc[t][r] = _mm512_fmadd_ps(av[r], bv, acc[t][r]);
    }
  }
  for (int t = 0; t < T; ++t) {
    for (int r = 0; r < R; ++r)
      out[t * R + r] = reduce_avx512(acc[t][r]);
  }
}

GANTRY_LO_AVX512_INLINE __m512 silu_avx512(__m512 x) {
  const __m512 xn = _mm512_sub_ps(_mm512_setzero_ps(), x);
  const __m512 z = _mm512_fmadd_ps(xn, _mm512_set1_ps(kInvLn2), _mm512_set1_ps(kShift));
  const __m512 n = _mm512_sub_ps(z, _mm512_set1_ps(kShift));
  const __m512 b =
      _mm512_fnmadd_ps(n, _mm512_set1_ps(kLn2Lo), _mm512_fnmadd_ps(n, _mm512_set1_ps(kLn2Hi), xn));
  const __mmask16 d = _mm512_cmp_ps_mask(_mm512_abs_ps(n), _mm512_set1_ps(192.0f), _CMP_GT_OQ);
  const __m512 u = _mm512_mul_ps(b, b);
  const __m512 j = _mm512_fmadd_ps(
      _mm512_fmadd_ps(_mm512_fmadd_ps(_mm512_set1_ps(kC4), b, _mm512_set1_ps(kC3)), u,
                      _mm512_fmadd_ps(_mm512_set1_ps(kC2), b, _mm512_set1_ps(kC1))),
      u, _mm512_fmadd_ps(_mm512_set1_ps(kC0), b, _mm512_set1_ps(1.0f)));
  __m512 e = _mm512_scalef_ps(j, n);
  if (!_mm512_kortestz(d, d)) {
    const __m512 alt = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(n, _mm512_setzero_ps(), _CMP_LE_OQ),
                                            _mm512_set1_ps(INFINITY), _mm512_setzero_ps());
    e = _mm512_mask_blend_ps(d, e, alt);
  }
  return _mm512_div_ps(x, _mm512_add_ps(_mm512_set1_ps(1.0f), e));
}

GANTRY_LO_AVX512 void silu_mul_avx512(const float *gate, const float *up, float *out, int64_t n) {
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    _mm512_storeu_ps(
        out + i, _mm512_mul_ps(silu_avx512(_mm512_loadu_ps(gate + i)), _mm512_loadu_ps(up + i)));
  }
  for (; i < n; ++i)
    out[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
}

// ---- the matmul driver --------------------------------------------------------------------------

using VecDot = float (*)(const float *, const float *, int64_t);

VecDot vec_dot_for(Isa isa, Build b) {
  if (b == Build::kAvx2)
    return &build8::vec_dot;
  switch (isa) {
  case Isa::kAvx512Vnni: return &vec_dot_avx512;
  case Isa::kAvx2: return &vec_dot_avx2;
  case Isa::kScalar: break;
  }
  return &lanes::vec_dot<kLanes, reduce16>;
}

std::atomic<Build> &build_ref() {
  static std::atomic<Build> b{[] {
    const char *v = std::getenv("GANTRY_LLAMA_BUILD");
    return v && std::strcmp(v, "avx512") == 0 ? Build::kAvx512 : Build::kAvx2;
  }()};
  return b;
}

template <int T>
GANTRY_LO_AVX512 void tiles_avx512(const float *const *a, const float *const *b, int64_t k,
                                   float *out) {
  tile_avx512<4, T>(a, b, k, out);
}
template <int T>
GANTRY_LO_AVX2 void tiles_avx2(const float *const *a, const float *const *b, int64_t k,
                               float *out) {
  tile_avx2<4, T>(a, b, k, out);
}
template <int T>
void tiles_for(Isa isa, Build bd, const float *const *a, const float *const *b, int64_t k,
               float *out) {
  if (bd == Build::kAvx2) {
    build8::tiles(T, a, b, k, out);
    return;
  }
  switch (isa) {
  case Isa::kAvx512Vnni: tiles_avx512<T>(a, b, k, out); return;
  case Isa::kAvx2:
    if constexpr (T <= 3) { // 16 vector registers
      tiles_avx2<T>(a, b, k, out);
      return;
    }
    break;
  case Isa::kScalar: break;
  }
  for (int t = 0; t < T; ++t) {
    for (int r = 0; r < 4; ++r)
      out[t * 4 + r] = tile_dot_scalar(a[r], b[t], k);
  }
}

// Rows [r0, r1) of one matrix against the tokens not marked single, in tinyBLAS's order (4 rows x
// up to 6 tokens per tile with 32 vector registers, 3 with 16; each output keeps its own
// accumulator, so the tiling does not change the bits), and against the marked ones in
// ggml_vec_dot_f32's.
void batch_rows(Isa isa, Build bd, VecDot dot, const WeightView &w, const float *x,
                int64_t n_tokens, const uint8_t *single, int64_t r0, int64_t r1, float *y,
                int64_t ldy) {
  const int64_t k = w.cols;
  auto row_ptr = [&](int64_t r) {
    return reinterpret_cast<const float *>(static_cast<const char *>(w.data) + r * w.row_stride);
  };
  for (int64_t r = r0; r < r1; r += 4) {
    const float *a[4];
    for (int i = 0; i < 4; ++i)
      a[i] = row_ptr(r + i);
    int64_t t = 0;
    const int group = isa == Isa::kAvx512Vnni ? 6 : 3;
    while (t < n_tokens) {
      const float *b[6];
      int64_t ts[6];
      int tn = 0;
      for (; t < n_tokens && tn < group; ++t) {
        if (single && single[t]) {
          for (int i = 0; i < 4; ++i)
            y[t * ldy + r + i] = dot(a[i], x + t * k, k);
          continue;
        }
        ts[tn] = t;
        b[tn++] = x + t * k;
      }
      float out[24];
      switch (tn) {
      case 6: tiles_for<6>(isa, bd, a, b, k, out); break;
      case 5: tiles_for<5>(isa, bd, a, b, k, out); break;
      case 4: tiles_for<4>(isa, bd, a, b, k, out); break;
      case 3: tiles_for<3>(isa, bd, a, b, k, out); break;
      case 2: tiles_for<2>(isa, bd, a, b, k, out); break;
      case 1: tiles_for<1>(isa, bd, a, b, k, out); break;
      default: break;
      }
      for (int j = 0; j < tn; ++j) {
        for (int i = 0; i < 4; ++i)
          y[ts[j] * ldy + r + i] = out[j * 4 + i];
      }
    }
  }
}

int64_t total_chunks(const MatmulOut *outs, int n_outs, int64_t grain) {
  int64_t n = 0;
  for (int i = 0; i < n_outs; ++i)
    n += (outs[i].w->rows + grain - 1) / grain;
  return n;
}

} // namespace

Build build() { return build_ref().load(std::memory_order_relaxed); }
void set_build(Build b) { build_ref().store(b, std::memory_order_relaxed); }

void matmul_f32(const MatmulOut *outs, int n_outs, const float *x, int64_t n_tokens,
                ThreadPool &pool, const uint8_t *single) {
  const Isa isa = active_isa();
  const Build bd = build();
  const VecDot dot = vec_dot_for(isa, bd);
  // tinyBLAS's vector width: it takes only columns in whole vectors.
  const int64_t tile_cols = bd == Build::kAvx2 ? 8 : kLanes;
  const int64_t k = outs[0].w->cols;
  int64_t total_rows = 0;
  for (int i = 0; i < n_outs; ++i)
    total_rows += outs[i].w->rows;
  // Rows [r0, r1) of matrix i; tinyBLAS's row tiles never cross a matrix or a chunk (chunks are
  // multiples of 4 rows from each matrix's start).
  auto rows = [&](int i, int64_t r0, int64_t r1) {
    const MatmulOut &o = outs[i];
    const WeightView &w = *o.w;
    // llama.cpp hands a call with several tokens to tinyBLAS, which takes only these shapes.
    if ((single || n_tokens >= 2) && k % tile_cols == 0 && w.rows % 4 == 0) {
      batch_rows(isa, bd, dot, w, x, n_tokens, single, r0, r1, o.y, o.ldy);
      return;
    }
    for (int64_t r = r0; r < r1; ++r) {
      const auto *row =
          reinterpret_cast<const float *>(static_cast<const char *>(w.data) + r * w.row_stride);
      for (int64_t t = 0; t < n_tokens; ++t)
        o.y[t * o.ldy + r] = dot(row, x + t * k, k);
    }
  };
  // Work items: chunks of up to `grain` rows of one matrix.
  const int64_t macs = total_rows * k * n_tokens;
  const int64_t grain = macs < (int64_t{1} << 17) || pool.size() == 1
                            ? total_rows
                            : std::max<int64_t>(4, (total_rows / (pool.size() * 4) + 3) / 4 * 4);
  // Work item c: the c-th chunk of up to `grain` rows, numbered across the matrices in order (no
  // list to build: this runs once per matmul of every decode step).
  pool.parallel_for(total_chunks(outs, n_outs, grain), 1, [&](int64_t b, int64_t e, int) {
    for (int64_t c = b; c < e; ++c) {
      int i = 0;
      int64_t first = c; // chunk index within matrix i
      auto chunks_of = [&](int m) { return (outs[m].w->rows + grain - 1) / grain; };
      while (first >= chunks_of(i))
        first -= chunks_of(i++);
      const int64_t r0 = first * grain;
      rows(i, r0, std::min(outs[i].w->rows, r0 + grain));
    }
  });
}

void dot_rows_f16(const float *q, const uint16_t *rows, int64_t stride, int64_t n_rows, int64_t n,
                  float scale, float *out) {
  if (build() == Build::kAvx2) {
    build8::dot_rows_f16(q, rows, stride, n_rows, n, scale, out);
    return;
  }
  switch (active_isa()) {
  case Isa::kAvx512Vnni: dot_rows_f16_avx512(q, rows, stride, n_rows, n, scale, out); return;
  case Isa::kAvx2: dot_rows_f16_avx2(q, rows, stride, n_rows, n, scale, out); return;
  case Isa::kScalar: break;
  }
  for (int64_t r = 0; r < n_rows; ++r)
    out[r] = lanes::dot_f16<kLanes, reduce16>(q, rows + r * stride, n) * scale;
}

void dot_heads_f16(const float *const *q, int n_q, const uint16_t *rows, int64_t stride,
                   int64_t n_rows, int64_t n, float scale, float *out, int64_t out_stride) {
  if (build() == Build::kAvx2) {
    build8::dot_heads_f16(q, n_q, rows, stride, n_rows, n, scale, out, out_stride);
    return;
  }
  for (int h = 0; h < n_q; ++h)
    dot_rows_f16(q[h], rows, stride, n_rows, n, scale, out + h * out_stride);
}

void silu_mul_row(const float *gate, const float *up, float *out, int64_t n) {
  if (build() == Build::kAvx2) {
    build8::silu_mul(gate, up, out, n);
    return;
  }
  switch (active_isa()) {
  case Isa::kAvx512Vnni: silu_mul_avx512(gate, up, out, n); return;
  case Isa::kAvx2: silu_mul_avx2(gate, up, out, n); return;
  case Isa::kScalar: break;
  }
  silu_mul_scalar(gate, up, out, n);
}

} // namespace gantry::engine::kernels::llama_order
