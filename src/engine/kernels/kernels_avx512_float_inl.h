// AVX-512 float helpers shared by the batch tiles (kernels_avx512.cpp) and the decode kernels
// (kernels_avx512_gemv.cpp): both must read weights and reduce sums identically, since their
// outputs must be the same bits (and those of the AVX2 kernels). Include inside
// namespace gantry::engine::kernels::avx512vnni, after GANTRY_VNNI_INLINE is defined.
#pragma once

// 8 elements from each of two rows: row0's in the low half, row1's in the high half.
template <TensorType kType>
GANTRY_VNNI_INLINE __m512 load8x2(const void *row0, const void *row1, int64_t i) {
  if constexpr (kType == TensorType::kF32) {
    const __m256 lo = _mm256_loadu_ps(static_cast<const float *>(row0) + i);
    const __m256 hi = _mm256_loadu_ps(static_cast<const float *>(row1) + i);
    return _mm512_castpd_ps(
        _mm512_insertf64x4(_mm512_castpd256_pd512(_mm256_castps_pd(lo)), _mm256_castps_pd(hi), 1));
  } else {
    const __m256i h = _mm256_inserti128_si256(
        _mm256_castsi128_si256(_mm_loadu_si128(
            reinterpret_cast<const __m128i *>(static_cast<const uint16_t *>(row0) + i))),
        _mm_loadu_si128(reinterpret_cast<const __m128i *>(static_cast<const uint16_t *>(row1) + i)),
        1);
    if constexpr (kType == TensorType::kF16) {
      return _mm512_cvtph_ps(h);
    } else {
      return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    }
  }
}

// Row pair (r, r + 1)'s 8 elements each of one column step in a packed F16/BF16 matrix
// (kernels.h): 32 contiguous bytes, row r in the low half as load8x2 puts it.
template <TensorType kType> GANTRY_VNNI_INLINE __m512 load8x2_packed(const char *p) {
  const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(p));
  if constexpr (kType == TensorType::kF16)
    return _mm512_cvtph_ps(h);
  else
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

// Where row pair (r, r + 1) (r even) of a packed F16/BF16 matrix starts; column step k / 8 is
// k * 32 bytes further (16 rows x 8 elements x 2 bytes per step).
inline const char *packed_pair(const WeightView &w, int64_t r) {
  return static_cast<const char *>(w.data) + static_cast<size_t>(r / 16) * 16 * w.row_stride +
         static_cast<size_t>(r % 16) * 16;
}

// Exactly kernels_avx2.cpp's hsum: the same adds in the same order.
GANTRY_VNNI_INLINE float hsum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
