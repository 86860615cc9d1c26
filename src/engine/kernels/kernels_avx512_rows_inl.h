// AVX-512 helpers shared by the decode kernels that read 16 rows at a time
// (kernels_avx512_gemv.cpp, kernels_avx512_kgemv.cpp). Include inside
// namespace gantry::engine::kernels::avx512vnni, after GANTRY_VNNI_INLINE is defined.
#pragma once

inline int32_t load_i32(const char *p) {
  int32_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

GANTRY_VNNI_INLINE __m128i load_dwords4(const char *const *rows, size_t at) {
  __m128i v = _mm_cvtsi32_si128(load_i32(rows[0] + at));
  v = _mm_insert_epi32(v, load_i32(rows[1] + at), 1);
  v = _mm_insert_epi32(v, load_i32(rows[2] + at), 2);
  return _mm_insert_epi32(v, load_i32(rows[3] + at), 3);
}

// The 32-bit words at rows[i] + at, i = 0..15, in lane i: a block's scale (and what follows it)
// from each row of a tile. Sixteen loads inserted four to an xmm rather than one vpgatherdd: on
// Zen 5 the gather took 14 of a Q8_0 tile step's 35 cycles, these 4 (a standalone copy of the
// step, L1-resident: 33 -> 24 cycles; the 3-sequence decode of a Q8_0 1.1B model +15 %).
GANTRY_VNNI_INLINE __m512i load_dwords16(const char *const *rows, size_t at) {
  const __m256i lo = _mm256_inserti128_si256(_mm256_castsi128_si256(load_dwords4(rows, at)),
                                             load_dwords4(rows + 4, at), 1);
  const __m256i hi = _mm256_inserti128_si256(_mm256_castsi128_si256(load_dwords4(rows + 8, at)),
                                             load_dwords4(rows + 12, at), 1);
  return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
}
