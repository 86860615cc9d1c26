// AVX-512 helpers shared by the kernels that read 16-row groups of repacked weights
// (kernels_avx512_gemv.cpp, kernels_avx512_kgemv.cpp, kernels_avx512.cpp's prefill unpacking).
// Include inside namespace gantry::engine::kernels::avx512vnni, after GANTRY_VNNI_INLINE is
// defined.
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

// isum + the products of u's 16 lanes' 4 bytes each with the token's 4 bytes at x, broadcast by the
// instruction itself ({1to16}): GCC 12 emits a separate vpbroadcastd for _mm512_set1_epi32, one
// more uop per product, and with 8 tokens those were a third of the loop's uops.
using AliasedI32 = int32_t __attribute__((may_alias));
GANTRY_VNNI_INLINE __m512i dpbusd_x4(__m512i isum, __m512i u, const int8_t *x) {
  asm("vpdpbusd %2%{1to16%}, %1, %0"
      : "+v"(isum)
      : "v"(u), "m"(*reinterpret_cast<const AliasedI32 *>(x)));
  return isum;
}

// Packed 4-bit chunks made unsigned as the row-major kernels make them (kernels_impl.h,
// block_offset_shift). IQ4_NL: its nibbles through its table, as value + 128.
GANTRY_VNNI_INLINE __m512i iq4nl_unsigned(__m512i nib) {
  const __m512i table =
      _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i *>(kIq4nlValues)));
  return _mm512_xor_si512(_mm512_shuffle_epi8(table, nib),
                          _mm512_set1_epi8(static_cast<char>(0x80)));
}
// Q5_0/Q5_1: + 16 where the fifth bit is set. Byte i of every dword takes a bit of byte `byte`
// of the qh dword in the same lane: the one `bits` selects (byte i of each dword of `bits` holds
// one set bit).
GANTRY_VNNI_INLINE __m512i add_fifth_bits(__m512i nib, __m512i qh, int byte, __m512i bits) {
  const __m512i pick = _mm512_add_epi8(_mm512_set4_epi32(0x0C0C0C0C, 0x08080808, 0x04040404, 0),
                                       _mm512_set1_epi8(static_cast<char>(byte)));
  const __mmask64 fifth = _mm512_test_epi8_mask(_mm512_shuffle_epi8(qh, pick), bits);
  return _mm512_mask_add_epi8(nib, fifth, nib, _mm512_set1_epi8(16));
}

// Runs pass.template run<T>(t) over tokens [t0, t1) in passes of kMax tokens, then one pass of
// the T < kMax left: the packed kernels keep T tokens' accumulators in registers.
template <int T, typename Pass>
GANTRY_VNNI_INLINE void last_pass(int64_t left, int64_t t, Pass &pass) {
  if constexpr (T > 0) {
    if (left == T)
      pass.template run<T>(t);
    else
      last_pass<T - 1>(left, t, pass);
  }
}
template <int kMax, typename Pass>
GANTRY_VNNI_INLINE void token_passes(int64_t t0, int64_t t1, Pass &pass) {
  int64_t t = t0;
  for (; t + kMax <= t1; t += kMax)
    pass.template run<kMax>(t);
  last_pass<kMax - 1>(t1 - t, t, pass);
}
