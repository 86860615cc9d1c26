// AVX2 helpers shared by the kernels of kernels_avx2.cpp, kernels_avx2_packed.cpp and
// kernels_avx2_ktiles.cpp: their outputs must be the same bits, so they reduce and classify
// weights with the same code. Include inside namespace gantry::engine::kernels::avx2 (an
// anonymous namespace within it), after <immintrin.h>, <cstring>, <vector> and
// kernels_impl.h.
#pragma once

#define GANTRY_AVX2 __attribute__((target("avx2,fma,f16c")))
#define GANTRY_AVX2_INLINE __attribute__((target("avx2,fma,f16c"), always_inline)) inline

GANTRY_AVX2_INLINE __m256i load32(const void *p) {
  return _mm256_loadu_si256(static_cast<const __m256i *>(p));
}

// The 4 bytes at p in every dword (a token's 4 activations against 8 rows' 4-byte pieces).
GANTRY_AVX2_INLINE __m256i broadcast4(const int8_t *p) {
  int32_t v;
  std::memcpy(&v, p, sizeof v);
  return _mm256_set1_epi32(v);
}

// The sum of v's 8 lanes, in the one order every float kernel ends with.
GANTRY_AVX2_INLINE float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// Lane i = sum of the 8 lanes of m[i] (exact: integers).
GANTRY_AVX2_INLINE __m256i hsum8_i32(const __m256i m[8]) {
  const __m256i h01 = _mm256_hadd_epi32(m[0], m[1]), h23 = _mm256_hadd_epi32(m[2], m[3]);
  const __m256i h45 = _mm256_hadd_epi32(m[4], m[5]), h67 = _mm256_hadd_epi32(m[6], m[7]);
  // q0123 = [m0..m3 sums of lanes 0..3 | m0..m3 sums of lanes 4..7], likewise q4567.
  const __m256i q0123 = _mm256_hadd_epi32(h01, h23), q4567 = _mm256_hadd_epi32(h45, h67);
  return _mm256_add_epi32(_mm256_permute2x128_si256(q0123, q4567, 0x20),
                          _mm256_permute2x128_si256(q0123, q4567, 0x31));
}

// The 32-element block types without VNNI: signed weights (Q8_0, IQ4_NL's table values) take the
// sign trick maddubs(|w|, sign(x, w)); the others are unsigned u with sum(u * x) - offset * sum(x)
// = sum(w * x) (Q4_0: 8, Q5_0: 16; Q4_1/Q5_1 have a min instead).
template <TensorType kType>
constexpr bool kSigned = kType == TensorType::kQ8_0 || kType == TensorType::kIQ4_NL;
template <TensorType kType>
constexpr int kOffset = kType == TensorType::kQ4_0   ? 8
                        : kType == TensorType::kQ5_0 ? 16
                                                     : 0;

// Per-thread float scratch of the packed prefill kernels (gemm_k, gemm_q): a 16-row group's sums
// for n tokens, then as many for the mins. Grows to the largest call, then stays.
inline float *group_sums_scratch(int64_t n) {
  thread_local std::vector<float> t_sums;
  if (t_sums.size() < static_cast<size_t>(2 * n * 16))
    t_sums.resize(static_cast<size_t>(2 * n * 16));
  return t_sums.data();
}

// p16[j] += the products of pieces [p0, p0 + kRun) of u (each 4 bytes of 8 rows, unsigned) with
// token j's activations at x[j] + 4p, summed in int16: the packed prefill kernels' inner loop
// (their callers bound kRun so that the sums cannot overflow).
template <int T, int kRun>
GANTRY_AVX2_INLINE void piece_products(const uint8_t (*u)[32], int p0, const int8_t *const *x,
                                       __m256i *p16) {
#pragma GCC unroll 8
  for (int i = 0; i < kRun; ++i) {
    const int p = p0 + i;
    const __m256i v = _mm256_load_si256(reinterpret_cast<const __m256i *>(u[p]));
#pragma GCC unroll 4
    for (int j = 0; j < T; ++j) {
      p16[j] = _mm256_add_epi16(p16[j], _mm256_maddubs_epi16(v, broadcast4(x[j] + 4 * p)));
      // GCC's scheduler otherwise hoists all of a run's products ahead of their sums and
      // spills them: keep each sum in its register as it goes.
      __asm__("" : "+x"(p16[j]));
    }
  }
}
