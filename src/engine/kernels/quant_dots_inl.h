// The SIMD dot products of the K-quants (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K) x Q8_K activations, written
// once and compiled twice: kernels_avx2_quants.cpp includes this file with GANTRY_QVNNI 0 (int8
// products by maddubs + madd), kernels_avx512_quants.cpp with GANTRY_QVNNI 1 (vpdpbusd), each
// inside its own namespace and with GANTRY_QTARGET set to its target attribute. They serve decode
// and, on AVX2, prefill (the VNNI prefill tiles of Q4_K/Q5_K/Q6_K are kernels_avx512_kquants.cpp).
// The 32-element block types all go through the Q8_0 kernels of kernels_avx2.cpp and
// kernels_avx512.cpp.
//
// Both give the very same bits: maddubs + madd and vpdpbusd both leave in int32 lane i the exact
// sum of the products of bytes 4i..4i+3, and everything after that is shared. Each output is one
// weight row against one token, computed the same way whatever the batch, so results never
// depend on how many tokens share a call (prefix reuse and batching rely on this); the
// arithmetic is spelled out at "K-quants x Q8_K" below.
//
// No include guard and no includes: meant to be included once per instruction set, inside the
// namespace of its kernels, after <immintrin.h>, <cmath>, <cstring> and kernels_impl.h.

#define GANTRY_QINLINE GANTRY_QTARGET __attribute__((always_inline)) inline

namespace {

GANTRY_QINLINE float h2f(uint16_t h) { return _cvtsh_ss(h); }

GANTRY_QINLINE __m256i load32(const void *p) {
  return _mm256_loadu_si256(static_cast<const __m256i *>(p));
}

// Lane i = sum of u[4i + k] * x[4i + k] over k < 4, u unsigned and x signed. With maddubs the
// sum of two neighbouring products must stay below 32768: every caller keeps u <= 127.
GANTRY_QINLINE __m256i dot_u8i8(__m256i u, __m256i x) {
#if GANTRY_QVNNI
  return _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, x);
#else
  return _mm256_madd_epi16(_mm256_maddubs_epi16(u, x), _mm256_set1_epi16(1));
#endif
}

// dot_u8i8 times a per-lane scale: lanes 0..3 (bytes 0..15) by s0, lanes 4..7 by s1.
GANTRY_QINLINE __m256i dot_u8i8_scaled(__m256i u, __m256i x, int s0, int s1) {
#if GANTRY_QVNNI
  return _mm256_mullo_epi32(dot_u8i8(u, x),
                            _mm256_set_m128i(_mm_set1_epi32(s1), _mm_set1_epi32(s0)));
#else
  return _mm256_madd_epi16(_mm256_maddubs_epi16(u, x),
                           _mm256_set_m128i(_mm_set1_epi16(static_cast<int16_t>(s1)),
                                            _mm_set1_epi16(static_cast<int16_t>(s0))));
#endif
}

// ---- K-quants x Q8_K --------------------------------------------------------------------------
//
// Per super-block two exact int32 sums, isum (the quants times the activations, sub-block scales
// applied, Q3_K's and Q6_K's offsets subtracted via the activations' 16-element sums) and imin
// (the sub-block mins times those sums), then sum = fma(float(isum), d * d_x, sum) and
// summ = fma(float(imin), dmin * d_x, summ) in super-block order; the output is sum - summ. The
// VNNI prefill tiles (kernels_avx512_kquants.cpp) and the scalar references follow the same
// steps, so an output has the same bits whichever computed it.

GANTRY_QINLINE int hsum_i32(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
  return _mm_cvtsi128_si32(s);
}

template <TensorType kType> struct BlockK;
template <> struct BlockK<TensorType::kQ2_K> { using T = BlockQ2_K; };
template <> struct BlockK<TensorType::kQ3_K> { using T = BlockQ3_K; };
template <> struct BlockK<TensorType::kQ4_K> { using T = BlockQ4_K; };
template <> struct BlockK<TensorType::kQ5_K> { using T = BlockQ5_K; };
template <> struct BlockK<TensorType::kQ6_K> { using T = BlockQ6_K; };

template <TensorType kType>
constexpr bool kHasMinK =
    kType == TensorType::kQ2_K || kType == TensorType::kQ4_K || kType == TensorType::kQ5_K;

// q: the super-block's 256 activations, bs: their 16-element sums.
GANTRY_QINLINE int sums_q2_k(const BlockQ2_K &b, const int8_t *q, const int16_t *bs, int *imin) {
  const __m256i m3 = _mm256_set1_epi8(3);
  int summ = 0;
  for (int g = 0; g < 16; ++g)
    summ += (b.scales[g] >> 4) * bs[g];
  *imin = summ;
  __m256i sumi = _mm256_setzero_si256();
#pragma GCC unroll 2
  for (int h = 0; h < 2; ++h) {
    const __m256i packed = load32(b.qs + 32 * h);
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) {
      // Elements 128h + 32j + l: bits 2j..2j+1 of byte l; the first 16 take scale 8h + 2j.
      const __m256i u = _mm256_and_si256(_mm256_srli_epi16(packed, 2 * j), m3);
      const int g = 8 * h + 2 * j;
      sumi = _mm256_add_epi32(sumi, dot_u8i8_scaled(u, load32(q + 128 * h + 32 * j),
                                                    b.scales[g] & 0x0F, b.scales[g + 1] & 0x0F));
    }
  }
  return hsum_i32(sumi);
}

// Q3_K's value is u - 4 with u = low 2 bits + 4 * high bit in 0..7, so sum(v * x) over 16
// elements is sum(u * x) - 4 * bsum.
GANTRY_QINLINE int sums_q3_k(const BlockQ3_K &b, const int8_t *q, const int16_t *bs) {
  const __m256i m3 = _mm256_set1_epi8(3), one = _mm256_set1_epi8(1);
  // The 16 scales at once (q3_k_scales6, less the bias of 32) and their sum against the
  // activations' 16-element sums in one madd.
  alignas(16) uint8_t s6[16];
  q3_k_scales6(b.scales, s6);
  const __m256i sc16 = _mm256_cvtepi8_epi16(
      _mm_sub_epi8(_mm_load_si128(reinterpret_cast<const __m128i *>(s6)), _mm_set1_epi8(32)));
  const int off = hsum_i32(_mm256_madd_epi16(sc16, load32(bs)));
#if GANTRY_QVNNI
  alignas(32) int16_t sc[16];
  _mm256_store_si256(reinterpret_cast<__m256i *>(sc), sc16);
#endif
  const __m256i hm = load32(b.hmask);
  __m256i sumi = _mm256_setzero_si256();
#pragma GCC unroll 2
  for (int h = 0; h < 2; ++h) {
    const __m256i packed = load32(b.qs + 32 * h);
#if !GANTRY_QVNNI
    // Scales 8h..8h + 7 as int16 in both 128-bit lanes.
    const __m256i half = _mm256_broadcastsi128_si256(h == 0 ? _mm256_castsi256_si128(sc16)
                                                            : _mm256_extracti128_si256(sc16, 1));
#endif
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) {
      const __m256i low = _mm256_and_si256(_mm256_srli_epi16(packed, 2 * j), m3);
      const __m256i high = _mm256_and_si256(_mm256_srli_epi16(hm, 4 * h + j), one);
      const __m256i u = _mm256_or_si256(low, _mm256_slli_epi16(high, 2));
#if GANTRY_QVNNI
      const int g = 8 * h + 2 * j;
      sumi = _mm256_add_epi32(sumi,
                              dot_u8i8_scaled(u, load32(q + 128 * h + 32 * j), sc[g], sc[g + 1]));
#else
      // Low lane: scale 2j of the half in every int16; high lane: scale 2j + 1.
      const int16_t lo = static_cast<int16_t>(0x0100 * (4 * j + 1) + 4 * j);
      const int16_t hi = static_cast<int16_t>(0x0100 * (4 * j + 3) + 4 * j + 2);
      const __m256i s =
          _mm256_shuffle_epi8(half, _mm256_set_m128i(_mm_set1_epi16(hi), _mm_set1_epi16(lo)));
      sumi = _mm256_add_epi32(
          sumi, _mm256_madd_epi16(_mm256_maddubs_epi16(u, load32(q + 128 * h + 32 * j)), s));
#endif
    }
  }
  return hsum_i32(sumi) - 4 * off;
}

// Q4_K (kFifth = false) and Q5_K (the fifth bit of element 32j + l is bit j of qh[l]). The scales
// and mins come as one vector (scales_mins_k4); imin is one madd of the mins with the pair sums
// of the 16-element activation sums.
template <bool kFifth, typename Block>
GANTRY_QINLINE int sums_q45_k(const Block &b, const uint8_t *qh, const int8_t *q, const int16_t *bs,
                              int *imin) {
  const __m256i m4 = _mm256_set1_epi8(0x0F), one = _mm256_set1_epi8(1);
  alignas(16) uint8_t sm[16];
  scales_mins_k4(b.scales, sm);
  const __m256i sm16 = _mm256_cvtepu8_epi16(_mm_load_si128(reinterpret_cast<const __m128i *>(sm)));
  const __m256i bsv = load32(bs);
  // Pair sums bs[2j] + bs[2j + 1] (at most 2 x 16 x 127: no int16 overflow) against the mins.
  const __m128i pairs =
      _mm_hadd_epi16(_mm256_castsi256_si128(bsv), _mm256_extracti128_si256(bsv, 1));
  __m128i prod = _mm_madd_epi16(_mm256_extracti128_si256(sm16, 1), pairs);
  prod = _mm_add_epi32(prod, _mm_shuffle_epi32(prod, 0x4E));
  prod = _mm_add_epi32(prod, _mm_shuffle_epi32(prod, 0xB1));
  *imin = _mm_cvtsi128_si32(prod);
#if !GANTRY_QVNNI
  // Sub-block j's scale in every int16 lane: bytes 2j, 2j + 1 of the scales repeated.
  const __m256i scales = _mm256_broadcastsi128_si256(_mm256_castsi256_si128(sm16));
  auto scale_of = [&](int j) GANTRY_QTARGET {
    return _mm256_shuffle_epi8(
        scales, _mm256_set1_epi16(static_cast<int16_t>(0x0100 * (2 * j + 1) + 2 * j)));
  };
#endif
  __m256i hb = _mm256_setzero_si256();
  if constexpr (kFifth)
    hb = load32(qh);
  __m256i sumi = _mm256_setzero_si256();
#pragma GCC unroll 4
  for (int c = 0; c < 4; ++c) {
    // Sub-blocks 2c (low nibbles) and 2c + 1 (high nibbles) of these 32 bytes.
    const __m256i packed = load32(b.qs + 32 * c);
    __m256i u0 = _mm256_and_si256(packed, m4);
    __m256i u1 = _mm256_and_si256(_mm256_srli_epi16(packed, 4), m4);
    if constexpr (kFifth) {
      const __m256i h0 = _mm256_and_si256(_mm256_srli_epi16(hb, 2 * c), one);
      const __m256i h1 = _mm256_and_si256(_mm256_srli_epi16(hb, 2 * c + 1), one);
      u0 = _mm256_or_si256(u0, _mm256_slli_epi16(h0, 4));
      u1 = _mm256_or_si256(u1, _mm256_slli_epi16(h1, 4));
    }
#if GANTRY_QVNNI
    const __m256i p0 = dot_u8i8_scaled(u0, load32(q + 64 * c), sm[2 * c], sm[2 * c]);
    const __m256i p1 = dot_u8i8_scaled(u1, load32(q + 64 * c + 32), sm[2 * c + 1], sm[2 * c + 1]);
#else
    const __m256i p0 =
        _mm256_madd_epi16(_mm256_maddubs_epi16(u0, load32(q + 64 * c)), scale_of(2 * c));
    const __m256i p1 =
        _mm256_madd_epi16(_mm256_maddubs_epi16(u1, load32(q + 64 * c + 32)), scale_of(2 * c + 1));
#endif
    sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p0, p1));
  }
  return hsum_i32(sumi);
}

// Q6_K values are stored as u = v + 32 (0..63): sum(v * x) per 16 is sum(u * x) - 32 * bsum. The
// offset's sum(scale * bsum) is one madd; without VNNI each chunk's two scales come from a
// shuffle of the half's 8 scales widened to int16.
GANTRY_QINLINE int sums_q6_k(const BlockQ6_K &b, const int8_t *q, const int16_t *bs) {
  const __m256i m4 = _mm256_set1_epi8(0x0F), m2 = _mm256_set1_epi8(0x03);
  const int8_t *sc = b.scales;
  const __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i *>(sc)));
  const int off = hsum_i32(_mm256_madd_epi16(sc16, load32(bs)));
  __m256i sumi = _mm256_setzero_si256();
#pragma GCC unroll 2
  for (int h = 0; h < 2; ++h) {
    const uint8_t *ql = b.ql + 64 * h;
    const __m256i l0 = load32(ql), l1 = load32(ql + 32), hb = load32(b.qh + 32 * h);
    __m256i u[4];
    u[0] =
        _mm256_or_si256(_mm256_and_si256(l0, m4), _mm256_slli_epi16(_mm256_and_si256(hb, m2), 4));
    u[1] = _mm256_or_si256(_mm256_and_si256(l1, m4),
                           _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 2), m2), 4));
    u[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4),
                           _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 4), m2), 4));
    u[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                           _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 6), m2), 4));
#if !GANTRY_QVNNI
    // Scales 8h..8h + 7 as int16 in both 128-bit lanes.
    const __m256i half = _mm256_broadcastsi128_si256(h == 0 ? _mm256_castsi256_si128(sc16)
                                                            : _mm256_extracti128_si256(sc16, 1));
#endif
#pragma GCC unroll 4
    for (int k = 0; k < 4; ++k) {
#if GANTRY_QVNNI
      const int g = 8 * h + 2 * k; // scale of the first 16 of these 32 elements
      const __m256i p = dot_u8i8_scaled(u[k], load32(q + 128 * h + 32 * k), sc[g], sc[g + 1]);
#else
      // Low lane: scale 2k of the half in every int16; high lane: scale 2k + 1.
      const int16_t lo = static_cast<int16_t>(0x0100 * (4 * k + 1) + 4 * k);
      const int16_t hi = static_cast<int16_t>(0x0100 * (4 * k + 3) + 4 * k + 2);
      const __m256i s =
          _mm256_shuffle_epi8(half, _mm256_set_m128i(_mm_set1_epi16(hi), _mm_set1_epi16(lo)));
      const __m256i p =
          _mm256_madd_epi16(_mm256_maddubs_epi16(u[k], load32(q + 128 * h + 32 * k)), s);
#endif
      sumi = _mm256_add_epi32(sumi, p);
    }
  }
  return hsum_i32(sumi) - 32 * off;
}

template <TensorType kType>
GANTRY_QINLINE float dot_k(const void *row, const Activations &a, int64_t t) {
  using B = typename BlockK<kType>::T;
  const int64_t n = a.cols, nb = n / kQKK;
  const auto *b = static_cast<const B *>(row);
  const int8_t *q = a.qs + t * n;
  const float *xd = a.d + t * nb;
  const int16_t *bs = a.bsums + t * n / 16;
  float sum = 0, summ = 0;
  for (int64_t i = 0; i < nb; ++i, q += kQKK, bs += 16) {
    // The row's bytes 1.5 KiB ahead (the hardware prefetcher alone left decode waiting on
    // memory: Q4_K_M decode on a 2-core Zen 3, 22-27 -> 30-32 tok/s; 1 KiB and 3 KiB ahead were
    // slower).
    for (size_t off = 0; off < sizeof(B); off += 64)
      _mm_prefetch(reinterpret_cast<const char *>(b + i) + 1536 + off, _MM_HINT_T0);
    int isum = 0, imin = 0;
    if constexpr (kType == TensorType::kQ2_K) {
      isum = sums_q2_k(b[i], q, bs, &imin);
    } else if constexpr (kType == TensorType::kQ3_K) {
      isum = sums_q3_k(b[i], q, bs);
    } else if constexpr (kType == TensorType::kQ4_K) {
      isum = sums_q45_k<false>(b[i], nullptr, q, bs, &imin);
    } else if constexpr (kType == TensorType::kQ5_K) {
      isum = sums_q45_k<true>(b[i], b[i].qh, q, bs, &imin);
    } else {
      isum = sums_q6_k(b[i], q, bs);
    }
    sum = std::fma(static_cast<float>(isum), h2f(b[i].d) * xd[i], sum);
    if constexpr (kHasMinK<kType>)
      summ = std::fma(static_cast<float>(imin), h2f(b[i].dmin) * xd[i], summ);
  }
  return sum - summ;
}

// Each weight row stays in L1 while it meets every token of the chunk.
template <TensorType kType>
GANTRY_QTARGET void rows_quants(const WeightView &w, const Activations &a, int64_t t0, int64_t t1,
                                int64_t r0, int64_t r1, float *y, int64_t ldy) {
  for (int64_t r = r0; r < r1; ++r) {
    const void *row = w.row(r);
    for (int64_t t = t0; t < t1; ++t)
      y[t * ldy + r] = dot_k<kType>(row, a, t);
  }
}

} // namespace

GANTRY_QTARGET void matmul_rows_quants(const WeightView &w, const Activations &a, int64_t t0,
                                       int64_t t1, int64_t r0, int64_t r1, float *y, int64_t ldy) {
  switch (w.type) {
  case TensorType::kQ2_K: rows_quants<TensorType::kQ2_K>(w, a, t0, t1, r0, r1, y, ldy); return;
  case TensorType::kQ3_K: rows_quants<TensorType::kQ3_K>(w, a, t0, t1, r0, r1, y, ldy); return;
  case TensorType::kQ4_K: rows_quants<TensorType::kQ4_K>(w, a, t0, t1, r0, r1, y, ldy); return;
  case TensorType::kQ5_K: rows_quants<TensorType::kQ5_K>(w, a, t0, t1, r0, r1, y, ldy); return;
  case TensorType::kQ6_K: rows_quants<TensorType::kQ6_K>(w, a, t0, t1, r0, r1, y, ldy); return;
  default: return;
  }
}

#undef GANTRY_QINLINE
