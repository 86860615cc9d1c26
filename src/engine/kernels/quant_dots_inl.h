// The SIMD dot products of Q4_1, Q5_0, Q5_1, IQ4_NL (x Q8 activations) and Q2_K, Q3_K, Q5_K
// (x Q8_K), written once and compiled twice: kernels_avx2_quants.cpp includes this file with
// GANTRY_QVNNI 0 (int8 products by maddubs + madd), kernels_avx512_quants.cpp with GANTRY_QVNNI 1
// (vpdpbusd), each inside its own namespace and with GANTRY_QTARGET set to its target attribute.
//
// Both give the very same bits: maddubs + madd and vpdpbusd both leave in int32 lane i the exact
// sum of the products of bytes 4i..4i+3, and everything after that is shared. Each output is one
// weight row against one token, computed the same way whatever the batch, so results never
// depend on how many tokens share a call (prefix reuse and batching rely on this):
//   32-element blocks: acc = fma(float(lanes), d_w * d_x, acc) per block in order, and for Q4_1 /
//     Q5_1 accm = fma(m_w, d_x * float(sum of the block's x), accm); y = hsum(acc) + accm.
//   K-quants: per super-block the exact int32 sums with the sub-block scales applied,
//     acc = fma(d * d_x, float(lanes), acc), and the mins (or Q3_K's offset) in a float sum.
//
// No include guard and no includes: meant to be included once per instruction set, inside the
// namespace of its kernels, after <immintrin.h>, <cmath>, <cstring> and kernels_impl.h.

#define GANTRY_QINLINE GANTRY_QTARGET __attribute__((always_inline)) inline

namespace {

GANTRY_QINLINE float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

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

// The same for signed weights w (|w| <= 127): |w| times x with w's sign.
GANTRY_QINLINE __m256i dot_i8i8(__m256i w, __m256i x) {
  return dot_u8i8(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w));
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

// The 32 nibbles of a 32-element block in element order: the low nibbles of the 16 bytes, then
// their high nibbles.
GANTRY_QINLINE __m256i nibbles32(const uint8_t *qs) {
  const __m128i p = _mm_loadu_si128(reinterpret_cast<const __m128i *>(qs));
  return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(p, 4), p), _mm256_set1_epi8(0x0F));
}

// 0x10 in byte i where bit i of the little-endian word at qh is set, else 0.
GANTRY_QINLINE __m256i fifth_bits32(const uint8_t *qh) {
  uint32_t bits;
  std::memcpy(&bits, qh, sizeof bits);
#if GANTRY_QVNNI
  return _mm256_maskz_mov_epi8(bits, _mm256_set1_epi8(0x10));
#else
  // Byte i gets byte i / 8 of the word, then keeps only bit i % 8.
  const __m256i spread =
      _mm256_shuffle_epi8(_mm256_set1_epi32(static_cast<int>(bits)),
                          _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2,
                                           2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3));
  const __m256i bit = _mm256_set1_epi64x(static_cast<int64_t>(0x8040201008040201ull));
  const __m256i set = _mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit);
  return _mm256_and_si256(set, _mm256_set1_epi8(0x10));
#endif
}

// ---- 32-element blocks x Q8 -------------------------------------------------------------------

template <TensorType kType> struct Block32;
template <> struct Block32<TensorType::kQ4_1> { using T = BlockQ4_1; };
template <> struct Block32<TensorType::kQ5_0> { using T = BlockQ5_0; };
template <> struct Block32<TensorType::kQ5_1> { using T = BlockQ5_1; };
template <> struct Block32<TensorType::kIQ4_NL> { using T = BlockIQ4_NL; };

template <TensorType kType>
constexpr bool kHasMin = kType == TensorType::kQ4_1 || kType == TensorType::kQ5_1;

// The int32 lanes of one block against the token's 32 activations.
template <TensorType kType>
GANTRY_QINLINE __m256i block_lanes(const typename Block32<kType>::T &b, __m256i x) {
  if constexpr (kType == TensorType::kQ4_1) {
    return dot_u8i8(nibbles32(b.qs), x);
  } else if constexpr (kType == TensorType::kQ5_1) {
    return dot_u8i8(_mm256_or_si256(nibbles32(b.qs), fifth_bits32(b.qh)), x);
  } else if constexpr (kType == TensorType::kQ5_0) {
    const __m256i u = _mm256_or_si256(nibbles32(b.qs), fifth_bits32(b.qh));
    return dot_i8i8(_mm256_sub_epi8(u, _mm256_set1_epi8(16)), x);
  } else {
    const __m256i table = _mm256_broadcastsi128_si256(
        _mm_loadu_si128(reinterpret_cast<const __m128i *>(kIq4nlValues)));
    return dot_i8i8(_mm256_shuffle_epi8(table, nibbles32(b.qs)), x);
  }
}

template <TensorType kType>
GANTRY_QINLINE float dot_32(const void *row, const Activations &a, int64_t t) {
  using B = typename Block32<kType>::T;
  const int64_t nb = a.cols / kQK;
  const auto *b = static_cast<const B *>(row);
  const int8_t *q = a.qs + t * a.cols;
  const float *xd = a.d + t * nb;
  __m256 acc = _mm256_setzero_ps();
  float accm = 0;
  for (int64_t i = 0; i < nb; ++i) {
    const __m256i lanes = block_lanes<kType>(b[i], load32(q + i * kQK));
    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(lanes), _mm256_set1_ps(h2f(b[i].d) * xd[i]), acc);
    if constexpr (kHasMin<kType>)
      accm = std::fma(h2f(b[i].m), xd[i] * static_cast<float>(a.sums[t * nb + i]), accm);
  }
  return hsum(acc) + accm;
}

// ---- K-quants x Q8_K --------------------------------------------------------------------------

GANTRY_QINLINE float dot_q2_k(const void *row, const Activations &a, int64_t t) {
  const int64_t n = a.cols, nb = n / kQKK;
  const auto *b = static_cast<const BlockQ2_K *>(row);
  const int8_t *q = a.qs + t * n;
  const float *xd = a.d + t * nb;
  const int16_t *bs = a.bsums + t * n / 16;
  const __m256i m3 = _mm256_set1_epi8(3);
  __m256 acc = _mm256_setzero_ps();
  float accm = 0;
  for (int64_t i = 0; i < nb; ++i, q += kQKK, bs += 16) {
    const uint8_t *sc = b[i].scales;
    int summ = 0;
    for (int g = 0; g < 16; ++g)
      summ += (sc[g] >> 4) * bs[g];
    __m256i sumi = _mm256_setzero_si256();
#pragma GCC unroll 2
    for (int h = 0; h < 2; ++h) {
      const __m256i packed = load32(b[i].qs + 32 * h);
#pragma GCC unroll 4
      for (int j = 0; j < 4; ++j) {
        // Elements 128h + 32j + l: bits 2j..2j+1 of byte l; the first 16 take scale 8h + 2j.
        const __m256i u = _mm256_and_si256(_mm256_srli_epi16(packed, 2 * j), m3);
        const int g = 8 * h + 2 * j;
        sumi = _mm256_add_epi32(
            sumi, dot_u8i8_scaled(u, load32(q + 128 * h + 32 * j), sc[g] & 0x0F, sc[g + 1] & 0x0F));
      }
    }
    const float d = h2f(b[i].d) * xd[i];
    acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    accm = std::fma(h2f(b[i].dmin) * xd[i], static_cast<float>(summ), accm);
  }
  return hsum(acc) - accm;
}

// Q3_K's value is u - 4 with u = low 2 bits + 4 * high bit in 0..7, so sum(v * x) over 16
// elements is sum(u * x) - 4 * bsum: the offset goes into a scalar sum, like the K-quant mins.
GANTRY_QINLINE float dot_q3_k(const void *row, const Activations &a, int64_t t) {
  const int64_t n = a.cols, nb = n / kQKK;
  const auto *b = static_cast<const BlockQ3_K *>(row);
  const int8_t *q = a.qs + t * n;
  const float *xd = a.d + t * nb;
  const int16_t *bs = a.bsums + t * n / 16;
  const __m256i m3 = _mm256_set1_epi8(3), one = _mm256_set1_epi8(1);
  __m256 acc = _mm256_setzero_ps();
  float acco = 0;
  for (int64_t i = 0; i < nb; ++i, q += kQKK, bs += 16) {
    int sc[16];
    int off = 0;
    for (int g = 0; g < 16; ++g) {
      sc[g] = q3_k_scale(g, b[i].scales);
      off += sc[g] * bs[g];
    }
    const __m256i hm = load32(b[i].hmask);
    __m256i sumi = _mm256_setzero_si256();
#pragma GCC unroll 2
    for (int h = 0; h < 2; ++h) {
      const __m256i packed = load32(b[i].qs + 32 * h);
#pragma GCC unroll 4
      for (int j = 0; j < 4; ++j) {
        const __m256i low = _mm256_and_si256(_mm256_srli_epi16(packed, 2 * j), m3);
        const __m256i high = _mm256_and_si256(_mm256_srli_epi16(hm, 4 * h + j), one);
        const __m256i u = _mm256_or_si256(low, _mm256_slli_epi16(high, 2));
        const int g = 8 * h + 2 * j;
        sumi = _mm256_add_epi32(sumi,
                                dot_u8i8_scaled(u, load32(q + 128 * h + 32 * j), sc[g], sc[g + 1]));
      }
    }
    const float d = h2f(b[i].d) * xd[i];
    acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    acco = std::fma(d, static_cast<float>(4 * off), acco);
  }
  return hsum(acc) - acco;
}

GANTRY_QINLINE float dot_q5_k(const void *row, const Activations &a, int64_t t) {
  const int64_t n = a.cols, nb = n / kQKK;
  const auto *b = static_cast<const BlockQ5_K *>(row);
  const int8_t *q = a.qs + t * n;
  const float *xd = a.d + t * nb;
  const int16_t *bs = a.bsums + t * n / 16;
  const __m256i m4 = _mm256_set1_epi8(0x0F), one = _mm256_set1_epi8(1);
  __m256 acc = _mm256_setzero_ps();
  float accm = 0;
  for (int64_t i = 0; i < nb; ++i, q += kQKK, bs += 16) {
    uint8_t sc[8], m[8];
    int summ = 0;
    for (int j = 0; j < 8; ++j) {
      scale_min_k4(j, b[i].scales, &sc[j], &m[j]);
      summ += m[j] * (bs[2 * j] + bs[2 * j + 1]);
    }
    const __m256i hb = load32(b[i].qh);
    __m256i sumi = _mm256_setzero_si256();
#pragma GCC unroll 4
    for (int c = 0; c < 4; ++c) {
      // Sub-blocks 2c (low nibbles, fifth bit 2c of qh[l]) and 2c + 1 (high nibbles, bit 2c + 1).
      const __m256i packed = load32(b[i].qs + 32 * c);
      const __m256i h0 = _mm256_and_si256(_mm256_srli_epi16(hb, 2 * c), one);
      const __m256i h1 = _mm256_and_si256(_mm256_srli_epi16(hb, 2 * c + 1), one);
      const __m256i u0 = _mm256_or_si256(_mm256_and_si256(packed, m4), _mm256_slli_epi16(h0, 4));
      const __m256i u1 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(packed, 4), m4),
                                         _mm256_slli_epi16(h1, 4));
      const __m256i p0 = dot_u8i8_scaled(u0, load32(q + 64 * c), sc[2 * c], sc[2 * c]);
      const __m256i p1 = dot_u8i8_scaled(u1, load32(q + 64 * c + 32), sc[2 * c + 1], sc[2 * c + 1]);
      sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p0, p1));
    }
    const float d = h2f(b[i].d) * xd[i];
    acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    accm = std::fma(h2f(b[i].dmin) * xd[i], static_cast<float>(summ), accm);
  }
  return hsum(acc) - accm;
}

template <TensorType kType>
GANTRY_QINLINE float dot_one(const void *row, const Activations &a, int64_t t) {
  if constexpr (kType == TensorType::kQ2_K) {
    return dot_q2_k(row, a, t);
  } else if constexpr (kType == TensorType::kQ3_K) {
    return dot_q3_k(row, a, t);
  } else if constexpr (kType == TensorType::kQ5_K) {
    return dot_q5_k(row, a, t);
  } else {
    return dot_32<kType>(row, a, t);
  }
}

// Each weight row stays in L1 while it meets every token of the chunk.
template <TensorType kType>
GANTRY_QTARGET void rows_quants(const WeightView &w, const Activations &a, int64_t t0, int64_t t1,
                                int64_t r0, int64_t r1, float *y, int64_t ldy) {
  for (int64_t r = r0; r < r1; ++r) {
    const void *row = w.row(r);
    for (int64_t t = t0; t < t1; ++t)
      y[t * ldy + r] = dot_one<kType>(row, a, t);
  }
}

} // namespace

GANTRY_QTARGET void matmul_rows_quants(const WeightView &w, const Activations &a, int64_t t0,
                                       int64_t t1, int64_t r0, int64_t r1, float *y, int64_t ldy) {
  switch (w.type) {
  case TensorType::kQ4_1: rows_quants<TensorType::kQ4_1>(w, a, t0, t1, r0, r1, y, ldy); return;
  case TensorType::kQ5_0: rows_quants<TensorType::kQ5_0>(w, a, t0, t1, r0, r1, y, ldy); return;
  case TensorType::kQ5_1: rows_quants<TensorType::kQ5_1>(w, a, t0, t1, r0, r1, y, ldy); return;
  case TensorType::kIQ4_NL: rows_quants<TensorType::kIQ4_NL>(w, a, t0, t1, r0, r1, y, ldy); return;
  case TensorType::kQ2_K: rows_quants<TensorType::kQ2_K>(w, a, t0, t1, r0, r1, y, ldy); return;
  case TensorType::kQ3_K: rows_quants<TensorType::kQ3_K>(w, a, t0, t1, r0, r1, y, ldy); return;
  case TensorType::kQ5_K: rows_quants<TensorType::kQ5_K>(w, a, t0, t1, r0, r1, y, ldy); return;
  default: return;
  }
}

#undef GANTRY_QINLINE
