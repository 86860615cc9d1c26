// Flash attention's softmax·V with fp16 accumulators on AVX-512: the AVX2 kernel
// (kernels_avx2.cpp attend_rows_f16) with 16 lanes per vector and up to 8 heads kept in
// registers. Every step is lane-wise (a rescale, a fused multiply-add, a round to fp16 and back),
// so the width changes nothing in the bits; what it changes is how many independent chains hide
// the latency of that round trip, which bounded prompt processing (17 % of a Q4_0 pp512 profile).
#include <algorithm>
#include <cmath>
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

// 16 lanes of NH heads (accumulators n apart) over nr rows, kept in registers.
template <int NH>
GANTRY_ATT_INLINE void attend_lanes(const float (*ms)[kChunk], const float (*vs)[kChunk],
                                    const uint16_t *v0, int64_t stride, int64_t nr, uint16_t *acc,
                                    int64_t n) {
  __m512 a[NH];
#pragma GCC unroll 8
  for (int k = 0; k < NH; ++k)
    a[k] = load16h(acc + k * n);
  for (int64_t r = 0; r < nr; ++r) {
    const __m512 v = load16h(v0 + r * stride);
#pragma GCC unroll 8
    for (int k = 0; k < NH; ++k) {
      // A rescale by exactly 1 changes nothing (a holds fp16 values): skipped, as in AVX2's.
      if (ms[k][r] != 1.0f)
        a[k] = round16(_mm512_mul_ps(a[k], _mm512_set1_ps(ms[k][r])));
      a[k] = round16(_mm512_fmadd_ps(v, _mm512_set1_ps(vs[k][r]), a[k]));
    }
  }
#pragma GCC unroll 8
  for (int k = 0; k < NH; ++k)
    store16h(acc + k * n, a[k]);
}

template <int NH>
GANTRY_ATT void lanes_for(const float (*ms)[kChunk], const float (*vs)[kChunk], const uint16_t *v0,
                          int64_t stride, int64_t nr, uint16_t *acc, int64_t n) {
  attend_lanes<NH>(ms, vs, v0, stride, nr, acc, n);
}

} // namespace

bool attend_rows_f16(const float *s, int64_t s_stride, int n_q, const uint16_t *rows,
                     int64_t stride, int64_t n_rows, int64_t n, float *m, float *sum,
                     uint16_t *acc) {
  if (n % 16 != 0 || n_q > 64)
    return false;
  float ms[64][kChunk], vs[64][kChunk];
  for (int64_t r0 = 0; r0 < n_rows; r0 += kChunk) {
    const int64_t nr = std::min(kChunk, n_rows - r0);
    attend_weights(s + r0, s_stride, n_q, nr, m, sum, ms, vs);
    const uint16_t *v0 = rows + r0 * stride;
    for (int64_t i = 0; i < n; i += 16) {
      int h0 = 0;
      for (; h0 + 8 <= n_q; h0 += 8)
        lanes_for<8>(ms + h0, vs + h0, v0 + i, stride, nr, acc + h0 * n + i, n);
      switch (n_q - h0) {
      case 7: lanes_for<7>(ms + h0, vs + h0, v0 + i, stride, nr, acc + h0 * n + i, n); break;
      case 6: lanes_for<6>(ms + h0, vs + h0, v0 + i, stride, nr, acc + h0 * n + i, n); break;
      case 5: lanes_for<5>(ms + h0, vs + h0, v0 + i, stride, nr, acc + h0 * n + i, n); break;
      case 4: lanes_for<4>(ms + h0, vs + h0, v0 + i, stride, nr, acc + h0 * n + i, n); break;
      case 3: lanes_for<3>(ms + h0, vs + h0, v0 + i, stride, nr, acc + h0 * n + i, n); break;
      case 2: lanes_for<2>(ms + h0, vs + h0, v0 + i, stride, nr, acc + h0 * n + i, n); break;
      case 1: lanes_for<1>(ms + h0, vs + h0, v0 + i, stride, nr, acc + h0 * n + i, n); break;
      default: break;
      }
    }
  }
  return true;
}

} // namespace gantry::engine::kernels::avx512vnni
