// AVX2 helpers shared by the kernels of kernels_avx2.cpp, kernels_avx2_packed.cpp and
// kernels_avx2_ktiles.cpp: their outputs must be the same bits, so they reduce and classify
// weights with the same code. Include inside namespace gantry::engine::kernels::avx2 (an
// anonymous namespace within it), after <immintrin.h>, <cstring>, <type_traits>, <vector> and
// kernels_impl.h.
#pragma once

#define GANTRY_AVX2 __attribute__((target("avx2,fma,f16c")))
#define GANTRY_AVX2_INLINE __attribute__((target("avx2,fma,f16c"), always_inline)) inline
// For lambdas that call GANTRY_AVX2_INLINE functions (written after the parameter list).
#define GANTRY_AVX2_LAMBDA __attribute__((target("avx2,fma,f16c"), always_inline))

GANTRY_AVX2_INLINE __m256i load32(const void *p) {
  return _mm256_loadu_si256(static_cast<const __m256i *>(p));
}

// The 4 bytes at p in every dword (a token's 4 activations against 8 rows' 4-byte pieces).
GANTRY_AVX2_INLINE __m256i broadcast4(const int8_t *p) {
  int32_t v;
  std::memcpy(&v, p, sizeof v);
  return _mm256_set1_epi32(v);
}

// Q6_K's 6-bit values of 32 byte lanes from two 32-byte runs of ql (l0, l1) and the qh bytes
// over them: u[m] = the low (m < 2) or high nibbles of l(m & 1), with qh's bit pair 2m as bits 4-5.
GANTRY_AVX2_INLINE void q6k_values(__m256i l0, __m256i l1, __m256i qh, __m256i u[4]) {
  const __m256i m4 = _mm256_set1_epi8(0x0F), m2 = _mm256_set1_epi8(0x03);
#pragma GCC unroll 4
  for (int m = 0; m < 4; ++m) {
    const __m256i l = m & 1 ? l1 : l0;
    const __m256i lo4 =
        m < 2 ? _mm256_and_si256(l, m4) : _mm256_and_si256(_mm256_srli_epi16(l, 4), m4);
    const __m256i hi2 = _mm256_and_si256(_mm256_srli_epi16(qh, 2 * m), m2);
    u[m] = _mm256_or_si256(lo4, _mm256_slli_epi16(hi2, 4));
  }
}

GANTRY_AVX2_INLINE float half_to_float(uint16_t h) { return _cvtsh_ss(h); }

// Float weights (F32/F16/BF16): elements i..i + 7 of a row, and element i alone.
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

// The packed prefill kernels (gemm_k in kernels_avx2_kpacked.cpp, gemm_q in
// kernels_avx2_packed.cpp) take calls of this many tokens or more, in blocks of this many.
constexpr int kPackedBlockTokens = 4;

// run(std::integral_constant<int, T>{}, t) for tokens [t0, t1): blocks of kPackedBlockTokens, then
// one block of the 1-3 left.
template <typename Run> GANTRY_AVX2_INLINE void token_blocks(int64_t t0, int64_t t1, Run &&run) {
  int64_t t = t0;
  for (; t + kPackedBlockTokens <= t1; t += kPackedBlockTokens)
    run(std::integral_constant<int, kPackedBlockTokens>{}, t);
  switch (t1 - t) {
  case 3: run(std::integral_constant<int, 3>{}, t); break;
  case 2: run(std::integral_constant<int, 2>{}, t); break;
  case 1: run(std::integral_constant<int, 1>{}, t); break;
  default: break;
  }
}

// A 16-row group's outputs for tokens [t0, t0 + n) from the scratch below: acc + kMin x accm
// (kMin -1: the K-quants' sum - summ; 1: Q4_1/Q5_1's sum + summ; 0: the sum alone).
template <int kMin>
GANTRY_AVX2_INLINE void store_group_sums(const float *acc, const float *accm, int64_t n, int64_t g,
                                         int64_t t0, float *y, int64_t ldy) {
  for (int64_t j = 0; j < n; ++j) {
#pragma GCC unroll 2
    for (int h = 0; h < 2; ++h) {
      const int64_t o = j * 16 + 8 * h;
      __m256 out = _mm256_loadu_ps(acc + o);
      if constexpr (kMin < 0)
        out = _mm256_sub_ps(out, _mm256_loadu_ps(accm + o));
      else if constexpr (kMin > 0)
        out = _mm256_add_ps(out, _mm256_loadu_ps(accm + o));
      _mm256_storeu_ps(y + (t0 + j) * ldy + g * 16 + 8 * h, out);
    }
  }
}

// Per-thread float scratch of the packed prefill kernels: a 16-row group's sums for n tokens,
// then as many for the mins. Grows to the largest call, then stays.
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
