// AVX2 decode over repacked weights (kernels.h, "repacked weights"): the 32-element block types
// (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL), for calls of up to 8 tokens (one sequence
// decoding, or a batched decode step); the K-quants' are in kernels_avx2_kpacked.cpp. Machines
// without AVX-512 (Zen 2/3, most client CPUs) decoded from row-major weights, 8 rows side by side,
// which is 8 concurrent streams per core plus a horizontal-add tree and a scale gather per block; a
// packed 16-row group is one stream whose 64-byte chunks hold 4 bytes of every row, so a product
// leaves each row's partial sum in its own lane.
//
// Bits: those of kernels_avx2.cpp's row-major kernels (and so of every batch size and ISA): per
// 32-block the exact int32 dot product, then acc = fma(float(isum), d_w * d_x, acc) over the
// blocks in order (Q4_1/Q5_1: accm = fma(m_w, d_x * sum_x, accm), output acc + accm). F16/BF16
// are kernels_avx2_half.cpp's.
//
// Without VNNI, products go through maddubs (unsigned x signed bytes into saturating int16
// pairs): the 4- and 5-bit types' unsigned values u fit it directly; Q8_0's bytes (stored as
// w + 128) and IQ4_NL's table values are signed and take the sign trick maddubs(|w|, sign(x, w)),
// whose pairs stay within 2 x 128 x 127.
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#include "engine/kernels/kernels_impl.h"

namespace gantry::engine::kernels::avx2 {
namespace {

#include "engine/kernels/kernels_avx2_inl.h"

constexpr int64_t kGroupRows = 16;

// Q4_0/Q4_1 (u <= 15): a block's 8 maddubs results per row pair sum in int16 without overflow
// (8 x 2 x 15 x 127 = 30,480); the others widen at each product.
template <TensorType kType>
constexpr bool kInt16Sums = kType == TensorType::kQ4_0 || kType == TensorType::kQ4_1;

// Q5_0/Q5_1: 0x10 in byte i of each row's dword where bit bit0 + i of that row's qh dword is set
// (byte i holds element bit0 + i). Each dword's byte bit0 / 8 is spread over its 4 bytes, and
// byte i keeps bit (bit0 % 8) + i of it.
GANTRY_AVX2_INLINE __m256i fifth_bits(__m256i qh, int bit0) {
  const __m256i pick = _mm256_add_epi8(_mm256_set_epi32(0x0C0C0C0C, 0x08080808, 0x04040404, 0,
                                                        0x0C0C0C0C, 0x08080808, 0x04040404, 0),
                                       _mm256_set1_epi8(static_cast<char>(bit0 / 8)));
  const __m256i bits = _mm256_set1_epi32(0x08040201 << (bit0 % 8));
  const __m256i spread = _mm256_and_si256(_mm256_shuffle_epi8(qh, pick), bits);
  return _mm256_and_si256(_mm256_cmpeq_epi8(spread, bits), _mm256_set1_epi8(0x10));
}

// A chunk half's nibbles (elements bit0..bit0 + 3 of 8 rows) as the values the products take:
// IQ4_NL's through its table (signed), Q5_0/Q5_1's with their fifth bits, the others as stored.
template <TensorType kType>
GANTRY_AVX2_INLINE __m256i nibble_values(__m256i nib, __m256i qh, int bit0) {
  if constexpr (kType == TensorType::kIQ4_NL) {
    (void)qh;
    (void)bit0;
    const __m256i table = _mm256_broadcastsi128_si256(
        _mm_loadu_si128(reinterpret_cast<const __m128i *>(kIq4nlValues)));
    return _mm256_shuffle_epi8(table, nib);
  } else if constexpr (block_fifth_bit(kType)) {
    return _mm256_or_si256(nib, fifth_bits(qh, bit0));
  } else {
    (void)qh;
    (void)bit0;
    return nib;
  }
}

// The products of 8 rows' 4 values each (v; |v| in av for the signed types) with the token's 4
// bytes x: int16 pairs for kInt16Sums, otherwise one int32 per row.
template <TensorType kType> GANTRY_AVX2_INLINE __m256i products(__m256i v, __m256i av, __m256i x) {
  const __m256i ones = _mm256_set1_epi16(1);
  if constexpr (kSigned<kType>) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(av, _mm256_sign_epi8(x, v)), ones);
  } else if constexpr (kInt16Sums<kType>) {
    (void)av;
    (void)ones;
    return _mm256_maddubs_epi16(v, x);
  } else {
    (void)av;
    return _mm256_madd_epi16(_mm256_maddubs_epi16(v, x), ones);
  }
}

template <TensorType kType> GANTRY_AVX2_INLINE __m256i accumulate(__m256i sum, __m256i p) {
  return kInt16Sums<kType> ? _mm256_add_epi16(sum, p) : _mm256_add_epi32(sum, p);
}

// Groups g..g + NG - 1 (rows 16g..) x tokens [t0, t0 + T): lanes of half h are rows 16g + 8h + i.
// T <= 2 keeps every accumulator in the 16 ymm registers. NG = 2 (Q8_0 decode) streams two
// groups side by side, block by block: the synthetic TinyLlama Q8_0 decoded at 28.96 against
// 26.52 tok/s (medians of 5 alternating rounds, 7 of 8 rounds ahead); Q4_0, whose nibbles cost
// more work per byte, 42.96 against 42.49, so it keeps one group. Every group's sums are the same
// either way.
template <TensorType kType, int T, int NG = 1>
GANTRY_AVX2_INLINE void group_q(const WeightView &w, const Activations &a, int64_t g, int64_t t0,
                                float *y, int64_t ldy) {
  const int64_t nb = w.cols / kQK;
  constexpr int64_t kQuantBytes = packed_block_chunks(kType) * 64;
  const char *groups[NG], *minss[NG], *quantss[NG];
#pragma GCC unroll 2
  for (int q = 0; q < NG; ++q) {
    groups[q] =
        static_cast<const char *>(w.data) + static_cast<size_t>(g + q) * kGroupRows * w.row_stride;
    minss[q] = groups[q] + nb * 32;
    quantss[q] = groups[q] + packed_quants_at(kType, nb);
  }
  const __m256i ones = _mm256_set1_epi16(1);
  const int8_t *xq[T];
  const float *xd[T];
  const int32_t *xs[T];
  __m256 accs[NG][T][2], accms[NG][T][2];
#pragma GCC unroll 2
  for (int j = 0; j < T; ++j) {
    const int64_t t = t0 + j;
    xq[j] = a.qs + t * w.cols;
    xd[j] = a.d + t * nb;
    xs[j] = a.sum8 + (t / kTokGroup) * nb * kTokGroup + t % kTokGroup;
    for (int q = 0; q < NG; ++q) {
      for (int h = 0; h < 2; ++h) {
        accs[q][j][h] = _mm256_setzero_ps();
        accms[q][j][h] = _mm256_setzero_ps();
      }
    }
  }
  for (int64_t b = 0; b < nb; ++b) {
#pragma GCC unroll 2
    for (int q = 0; q < NG; ++q) {
      const char *group = groups[q], *mins = minss[q];
      auto &acc = accs[q];
      auto &accm = accms[q];
      const char *qb = quantss[q] + b * kQuantBytes;
      // Each stream prefetches its own lines 1 KiB ahead (the scales and mins 256 bytes, 8
      // blocks), unrolled: the next group's lines spread over this group's blocks
      // (NextGroupPrefetch) cost a loop with a test per line, 10-15 % of the kernel's time from
      // L2; Q8_0 decode read its weights at 86 % of a plain read of them (median of 10
      // alternating rounds) against 88.5 % this way.
#pragma GCC unroll 8
      for (int64_t l = 0; l < kQuantBytes; l += 64)
        _mm_prefetch(qb + 1024 + l, _MM_HINT_T0);
      if ((b & 1) == 0) {
        _mm_prefetch(group + b * 32 + 256, _MM_HINT_T0);
        if constexpr (block_has_min(kType))
          _mm_prefetch(mins + b * 32 + 256, _MM_HINT_T0);
      }
      __m256i isum[T][2];
#pragma GCC unroll 2
      for (int j = 0; j < T; ++j) {
        isum[j][0] = _mm256_setzero_si256();
        isum[j][1] = _mm256_setzero_si256();
      }
      if constexpr (kType == TensorType::kQ8_0) {
#pragma GCC unroll 8
        for (int k = 0; k < 8; ++k) {
#pragma GCC unroll 2
          for (int h = 0; h < 2; ++h) {
            const __m256i v = _mm256_xor_si256(
                _mm256_loadu_si256(reinterpret_cast<const __m256i *>(qb + 64 * k + 32 * h)),
                _mm256_set1_epi8(static_cast<char>(0x80)));
            const __m256i av = _mm256_abs_epi8(v);
#pragma GCC unroll 2
            for (int j = 0; j < T; ++j) {
              isum[j][h] = accumulate<kType>(
                  isum[j][h], products<kType>(v, av, broadcast4(xq[j] + b * kQK + 4 * k)));
            }
          }
        }
      } else {
        const char *nibbles = qb + (block_fifth_bit(kType) ? 64 : 0);
#pragma GCC unroll 4
        for (int k = 0; k < 4; ++k) {
#pragma GCC unroll 2
          for (int h = 0; h < 2; ++h) {
            const __m256i qh =
                block_fifth_bit(kType)
                    ? _mm256_loadu_si256(reinterpret_cast<const __m256i *>(qb + 32 * h))
                    : _mm256_setzero_si256();
            const __m256i v =
                _mm256_loadu_si256(reinterpret_cast<const __m256i *>(nibbles + 64 * k + 32 * h));
            const __m256i lo =
                nibble_values<kType>(_mm256_and_si256(v, _mm256_set1_epi8(0x0F)), qh, 4 * k);
            const __m256i hi = nibble_values<kType>(
                _mm256_and_si256(_mm256_srli_epi16(v, 4), _mm256_set1_epi8(0x0F)), qh, 16 + 4 * k);
            const __m256i alo = kSigned<kType> ? _mm256_abs_epi8(lo) : lo;
            const __m256i ahi = kSigned<kType> ? _mm256_abs_epi8(hi) : hi;
#pragma GCC unroll 2
            for (int j = 0; j < T; ++j) {
              const int8_t *xl = xq[j] + b * kQK + 4 * k;
              const __m256i p = accumulate<kType>(products<kType>(lo, alo, broadcast4(xl)),
                                                  products<kType>(hi, ahi, broadcast4(xl + 16)));
              isum[j][h] = accumulate<kType>(isum[j][h], p);
            }
          }
        }
      }
#pragma GCC unroll 2
      for (int h = 0; h < 2; ++h) {
        const __m256 dw = _mm256_cvtph_ps(
            _mm_loadu_si128(reinterpret_cast<const __m128i *>(group + b * 32 + 16 * h)));
        __m256 mw = _mm256_setzero_ps();
        if constexpr (block_has_min(kType))
          mw = _mm256_cvtph_ps(
              _mm_loadu_si128(reinterpret_cast<const __m128i *>(mins + b * 32 + 16 * h)));
#pragma GCC unroll 2
        for (int j = 0; j < T; ++j) {
          __m256i s = isum[j][h];
          if constexpr (kInt16Sums<kType>)
            s = _mm256_madd_epi16(s, ones);
          if constexpr (kOffset<kType> != 0)
            s = _mm256_sub_epi32(s, _mm256_set1_epi32(kOffset<kType> * xs[j][b * kTokGroup]));
          const __m256 scale = _mm256_mul_ps(dw, _mm256_set1_ps(xd[j][b]));
          acc[j][h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), scale, acc[j][h]);
          if constexpr (block_has_min(kType)) {
            const float sx = xd[j][b] * static_cast<float>(xs[j][b * kTokGroup]);
            accm[j][h] = _mm256_fmadd_ps(mw, _mm256_set1_ps(sx), accm[j][h]);
          }
        }
      }
    }
  }
#pragma GCC unroll 2
  for (int q = 0; q < NG; ++q) {
#pragma GCC unroll 2
    for (int j = 0; j < T; ++j) {
      for (int h = 0; h < 2; ++h) {
        __m256 out = accs[q][j][h];
        if constexpr (block_has_min(kType))
          out = _mm256_add_ps(accs[q][j][h], accms[q][j][h]);
        _mm256_storeu_ps(y + (t0 + j) * ldy + (g + q) * kGroupRows + 8 * h, out);
      }
    }
  }
}

// Calls of kPackedBlockTokens tokens or more over the packed 32-element block types: prefill of
// Q4_0, Q4_1, Q5_0 and Q5_1, and batched decode steps of 4-8 tokens of every one of them. As
// kernels_avx2_kpacked.cpp's gemm_k, per 8 blocks of a group's half (8 rows) the values are
// decoded to bytes once and every token of the call meets them in blocks of 4, weights and the
// tokens' activations in L1, each row's float sums in scratch between the 8-block pieces. The
// row-major tiles of kernels_avx2.cpp (4 rows x 8 tokens) load a broadcast per row and product;
// here one load of 8 rows' bytes serves 4 tokens. Same integer sums and float steps per block as
// group_q, so the same bits. Q8_0 and IQ4_NL are signed and take the sign trick (a vpsignb and a
// madd per product) either way: their prefill measured the same from either layout
// (kernels_bench, 64 tokens: 35-52 against 37-54 GMAC/s) and stays on unpacked rows, while 8
// tokens gain from the decode passes' 29-39 to 38-43.
struct HalfBlocks {
  alignas(32) uint8_t u[64][32]; // block i's pieces at 8i: elements 4p..4p + 3 of the 8 rows
  alignas(32) int8_t w[64][32];  // the signed types: the values, u holding their magnitudes
  __m256 d[8], m[8];
};

thread_local HalfBlocks t_blocks;

// Blocks [b0, b0 + nbb) of half h of group g decoded.
template <TensorType kType>
GANTRY_AVX2_INLINE void decode_blocks(const char *group, int64_t nb, int64_t b0, int nbb, int h,
                                      HalfBlocks &o) {
  constexpr int64_t kQuantBytes = packed_block_chunks(kType) * 64;
  const char *quants = group + packed_quants_at(kType, nb);
  const __m256i m4 = _mm256_set1_epi8(0x0F);
  for (int i = 0; i < nbb; ++i) {
    const int64_t b = b0 + i;
    o.d[i] = _mm256_cvtph_ps(
        _mm_loadu_si128(reinterpret_cast<const __m128i *>(group + b * 32 + 16 * h)));
    if constexpr (block_has_min(kType)) {
      o.m[i] = _mm256_cvtph_ps(
          _mm_loadu_si128(reinterpret_cast<const __m128i *>(group + nb * 32 + b * 32 + 16 * h)));
    }
    const char *qb = quants + b * kQuantBytes;
    if constexpr (kType == TensorType::kQ8_0) {
      // Chunk k: elements 4k..4k + 3, stored as w + 128.
#pragma GCC unroll 8
      for (int k = 0; k < 8; ++k) {
        const __m256i v = _mm256_xor_si256(
            _mm256_loadu_si256(reinterpret_cast<const __m256i *>(qb + 64 * k + 32 * h)),
            _mm256_set1_epi8(static_cast<char>(0x80)));
        _mm256_store_si256(reinterpret_cast<__m256i *>(o.w[8 * i + k]), v);
        _mm256_store_si256(reinterpret_cast<__m256i *>(o.u[8 * i + k]), _mm256_abs_epi8(v));
      }
      continue;
    }
    const char *nibbles = qb + (block_fifth_bit(kType) ? 64 : 0);
    const __m256i qh = block_fifth_bit(kType)
                           ? _mm256_loadu_si256(reinterpret_cast<const __m256i *>(qb + 32 * h))
                           : _mm256_setzero_si256();
#pragma GCC unroll 4
    for (int k = 0; k < 4; ++k) {
      const __m256i v =
          _mm256_loadu_si256(reinterpret_cast<const __m256i *>(nibbles + 64 * k + 32 * h));
      const __m256i lo = nibble_values<kType>(_mm256_and_si256(v, m4), qh, 4 * k);
      const __m256i hi =
          nibble_values<kType>(_mm256_and_si256(_mm256_srli_epi16(v, 4), m4), qh, 16 + 4 * k);
      if constexpr (kSigned<kType>) {
        _mm256_store_si256(reinterpret_cast<__m256i *>(o.w[8 * i + k]), lo);
        _mm256_store_si256(reinterpret_cast<__m256i *>(o.w[8 * i + 4 + k]), hi);
        _mm256_store_si256(reinterpret_cast<__m256i *>(o.u[8 * i + k]), _mm256_abs_epi8(lo));
        _mm256_store_si256(reinterpret_cast<__m256i *>(o.u[8 * i + 4 + k]), _mm256_abs_epi8(hi));
      } else {
        _mm256_store_si256(reinterpret_cast<__m256i *>(o.u[8 * i + k]), lo);
        _mm256_store_si256(reinterpret_cast<__m256i *>(o.u[8 * i + 4 + k]), hi);
      }
    }
  }
}

// Tokens [t, t + T) against decoded blocks [b0, b0 + nbb): lane i of acc[j] (accm[j]) is row
// 8h + i's sum (min sum) for token t + j, read from and written back to scratch.
template <TensorType kType, int T>
GANTRY_AVX2_INLINE void tokens_blocks(const HalfBlocks &hb, const Activations &a, int64_t cols,
                                      int64_t b0, int nbb, int64_t t, float *acc, float *accm) {
  const int64_t nb = cols / kQK;
  const __m256i ones = _mm256_set1_epi16(1);
  // Q4_0/Q4_1 sum a block's 8 products in int16 (8 x 2 x 15 x 127); Q5_0/Q5_1 4 (u <= 31).
  constexpr int kRun = kInt16Sums<kType> ? 8 : 4;
  const int8_t *xq[T];
  const float *xd[T];
  const int32_t *xs[T];
  __m256 sum[T], summ[T];
#pragma GCC unroll 4
  for (int j = 0; j < T; ++j) {
    xq[j] = a.qs + (t + j) * cols;
    xd[j] = a.d + (t + j) * nb;
    xs[j] = a.sum8 + ((t + j) / kTokGroup) * nb * kTokGroup + (t + j) % kTokGroup;
    sum[j] = _mm256_loadu_ps(acc + j * kGroupRows);
    summ[j] = block_has_min(kType) ? _mm256_loadu_ps(accm + j * kGroupRows) : _mm256_setzero_ps();
  }
#pragma GCC unroll 1
  for (int i = 0; i < nbb; ++i) {
    const int64_t b = b0 + i;
    const int8_t *xb[T];
#pragma GCC unroll 4
    for (int j = 0; j < T; ++j)
      xb[j] = xq[j] + b * kQK;
    __m256i isum[T];
#pragma GCC unroll 4
    for (int j = 0; j < T; ++j)
      isum[j] = _mm256_setzero_si256();
    if constexpr (kSigned<kType>) {
      // The sign trick per product (pairs up to 2 x 128 x 127: no int16 sums).
#pragma GCC unroll 8
      for (int p = 0; p < 8; ++p) {
        const __m256i u = _mm256_load_si256(reinterpret_cast<const __m256i *>(hb.u[8 * i + p]));
        const __m256i w = _mm256_load_si256(reinterpret_cast<const __m256i *>(hb.w[8 * i + p]));
#pragma GCC unroll 4
        for (int j = 0; j < T; ++j) {
          isum[j] = _mm256_add_epi32(isum[j], products<kType>(w, u, broadcast4(xb[j] + 4 * p)));
          __asm__("" : "+x"(isum[j])); // as piece_products: no hoisted, spilled products
        }
      }
    } else {
#pragma GCC unroll 2
      for (int run = 0; run < 8 / kRun; ++run) {
        __m256i p16[T];
#pragma GCC unroll 4
        for (int j = 0; j < T; ++j)
          p16[j] = _mm256_setzero_si256();
        piece_products<T, kRun>(hb.u + 8 * i, run * kRun, xb, p16);
#pragma GCC unroll 4
        for (int j = 0; j < T; ++j)
          isum[j] = _mm256_add_epi32(isum[j], _mm256_madd_epi16(p16[j], ones));
      }
    }
#pragma GCC unroll 4
    for (int j = 0; j < T; ++j) {
      __m256i s = isum[j];
      if constexpr (kOffset<kType> != 0)
        s = _mm256_sub_epi32(s, _mm256_set1_epi32(kOffset<kType> * xs[j][b * kTokGroup]));
      sum[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s),
                               _mm256_mul_ps(hb.d[i], _mm256_set1_ps(xd[j][b])), sum[j]);
      if constexpr (block_has_min(kType)) {
        const float sx = xd[j][b] * static_cast<float>(xs[j][b * kTokGroup]);
        summ[j] = _mm256_fmadd_ps(hb.m[i], _mm256_set1_ps(sx), summ[j]);
      }
    }
  }
#pragma GCC unroll 4
  for (int j = 0; j < T; ++j) {
    _mm256_storeu_ps(acc + j * kGroupRows, sum[j]);
    if constexpr (block_has_min(kType))
      _mm256_storeu_ps(accm + j * kGroupRows, summ[j]);
  }
}

template <TensorType kType>
GANTRY_AVX2 void gemm_q(const WeightView &w, const Activations &a, int64_t t0, int64_t t1,
                        int64_t r0, int64_t r1, float *y, int64_t ldy) {
  const int64_t n = t1 - t0, nb = w.cols / kQK;
  float *acc = group_sums_scratch(n), *accm = acc + n * kGroupRows;
  HalfBlocks &hb = t_blocks;
  for (int64_t g = r0 / kGroupRows; g < r1 / kGroupRows; ++g) {
    const char *group =
        static_cast<const char *>(w.data) + static_cast<size_t>(g) * kGroupRows * w.row_stride;
    std::fill(acc, acc + 2 * n * kGroupRows, 0.0f);
    NextGroupPrefetch prefetch(w, g, (nb + 7) / 8 * 2);
    for (int64_t b0 = 0; b0 < nb; b0 += 8) {
      const int nbb = static_cast<int>(std::min<int64_t>(8, nb - b0));
#pragma GCC unroll 1
      for (int h = 0; h < 2; ++h) {
        prefetch.step();
        decode_blocks<kType>(group, nb, b0, nbb, h, hb);
        token_blocks(t0, t1, [&](auto tokens, int64_t t) GANTRY_AVX2_LAMBDA {
          const int64_t o = (t - t0) * kGroupRows + 8 * h;
          tokens_blocks<kType, decltype(tokens)::value>(hb, a, w.cols, b0, nbb, t, acc + o,
                                                        accm + o);
        });
      }
    }
    store_group_sums<block_has_min(kType) ? 1 : 0>(acc, accm, n, g, t0, y, ldy);
  }
}

template <TensorType kType>
GANTRY_AVX2 void gemv_q(const WeightView &w, const Activations &a, int64_t t0, int64_t t1,
                        int64_t r0, int64_t r1, float *y, int64_t ldy) {
  if (t1 - t0 >= kPackedBlockTokens) {
    gemm_q<kType>(w, a, t0, t1, r0, r1, y, ldy);
    return;
  }
  int64_t g = r0 / kGroupRows;
  if (kType == TensorType::kQ8_0 && t1 - t0 == 1) {
    for (; g + 2 <= r1 / kGroupRows; g += 2)
      group_q<kType, 1, 2>(w, a, g, t0, y, ldy);
  }
  for (; g < r1 / kGroupRows; ++g) {
    int64_t t = t0;
    for (; t + 2 <= t1; t += 2)
      group_q<kType, 2>(w, a, g, t, y, ldy);
    if (t < t1)
      group_q<kType, 1>(w, a, g, t, y, ldy);
  }
}

} // namespace

bool packed_prefill(TensorType type) {
  switch (type) {
  case TensorType::kQ4_0:
  case TensorType::kQ4_1:
  case TensorType::kQ5_0:
  case TensorType::kQ5_1:
  case TensorType::kQ2_K:
  case TensorType::kQ3_K:
  case TensorType::kQ4_K:
  case TensorType::kQ5_K:
  case TensorType::kQ6_K:
  case TensorType::kF16:
  case TensorType::kBF16: return true;
  default: return false;
  }
}

bool packs_rows16(TensorType type) {
  switch (type) {
  case TensorType::kQ8_0:
  case TensorType::kQ4_0:
  case TensorType::kQ4_1:
  case TensorType::kQ5_0:
  case TensorType::kQ5_1:
  case TensorType::kIQ4_NL:
  case TensorType::kQ2_K:
  case TensorType::kQ3_K:
  case TensorType::kQ4_K:
  case TensorType::kQ5_K:
  case TensorType::kQ6_K:
  case TensorType::kF16:
  case TensorType::kBF16: return true;
  default: return false;
  }
}

bool matmul_rows_packed(const WeightView &w, const Activations &a, int64_t t0, int64_t t1,
                        int64_t r0, int64_t r1, float *y, int64_t ldy) {
  if (!w.packed16 || r0 % kGroupRows != 0 || r1 % kGroupRows != 0 ||
      (t1 - t0 > kPackedMaxTokens && !packed_prefill(w.type)))
    return false;
  switch (w.type) {
  case TensorType::kQ8_0: gemv_q<TensorType::kQ8_0>(w, a, t0, t1, r0, r1, y, ldy); return true;
  case TensorType::kQ4_0: gemv_q<TensorType::kQ4_0>(w, a, t0, t1, r0, r1, y, ldy); return true;
  case TensorType::kQ4_1: gemv_q<TensorType::kQ4_1>(w, a, t0, t1, r0, r1, y, ldy); return true;
  case TensorType::kQ5_0: gemv_q<TensorType::kQ5_0>(w, a, t0, t1, r0, r1, y, ldy); return true;
  case TensorType::kQ5_1: gemv_q<TensorType::kQ5_1>(w, a, t0, t1, r0, r1, y, ldy); return true;
  case TensorType::kIQ4_NL: gemv_q<TensorType::kIQ4_NL>(w, a, t0, t1, r0, r1, y, ldy); return true;
  case TensorType::kF16:
  case TensorType::kBF16: return matmul_rows_half(w, a, t0, t1, r0, r1, y, ldy);
  default: return matmul_rows_k_packed(w, a, t0, t1, r0, r1, y, ldy);
  }
}

} // namespace gantry::engine::kernels::avx2
