// AVX2 decode over repacked K-quant weights (Q2_K..Q6_K in the layout of kernels_impl.h's
// packed_k_pieces) for calls of up to kPackedMaxTokens tokens, and their prefill: the types of
// Q2_K, Q3_K_M, Q4_K_M and Q5_K_M files on machines without AVX-512. The per-row dot products
// (quant_dots_inl.h) read 8 rows as 8 streams and end each super-block of each row with a
// horizontal sum and scalar scale decoding; that left Q4_K_M decode compute-bound at about half of
// the host's read bandwidth on a Zen 3. Here a 16-row group's super-block is one stream whose
// 64-byte chunks hold 4 bytes of every row, so a product leaves each row's partial sum in its own
// lane (rows 8h..8h + 7 in the ymm of half h), and the scales are decoded for 8 rows per
// instruction.
//
// Bits: exactly those of the dot products (and so of every batch size and ISA): per super-block
// the exact int32 isum (Q4_K/Q5_K also imin), then sum = fma(float(isum), d * d_x, sum) and
// summ = fma(float(imin), dmin * d_x, summ) in super-block order, output sum - summ. Integer sums
// are exact however they are grouped.
//
// Without VNNI, products go through maddubs (unsigned weights x signed activations into int16
// pairs) and are summed in int16 while they cannot overflow, then multiplied by the sub-block
// scale with madd (the scale in both int16 halves of the row's dword): Q4_K sums a 32-element
// sub-block's 8 chunks (8 x 2 x 15 x 128 = 30,720), Q5_K 4 chunks (4 x 2 x 31 x 128 = 31,744),
// Q6_K 2 chunks (2 x 2 x 63 x 128 = 32,256), Q2_K and Q3_K a 16-element sub-block's 4 chunks
// (4 x 2 x 7 x 128 = 7,168).
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

// Per-thread scratch: the tokens' integers besides the quants (kSums per super-block and token).
thread_local std::vector<int32_t> t_ksums;

// Q4_K/Q5_K: the 4 pairs of sums of 32 (int16 pairs 2q, 2q + 1) the mins multiply; Q2_K, Q3_K and
// Q6_K: the 8 pairs of sums of 16 (4p, 4p + 2) and (4p + 1, 4p + 3) that Q2_K's mins and Q3_K's
// and Q6_K's signed scales (for their offsets) multiply.
template <TensorType kType>
constexpr int kSums = kType == TensorType::kQ4_K || kType == TensorType::kQ5_K ? 4 : 8;

int32_t pair16(int32_t lo, int32_t hi) {
  return static_cast<int32_t>((static_cast<uint32_t>(lo) & 0xFFFFu) |
                              (static_cast<uint32_t>(hi) << 16));
}

// 8 rows' fp16 values in the low (kHigh: high) 16 bits of the dwords of dd, as floats.
template <bool kHigh> GANTRY_AVX2_INLINE __m256 half_lanes(__m256i dd) {
  const __m256i v =
      kHigh ? _mm256_srli_epi32(dd, 16) : _mm256_and_si256(dd, _mm256_set1_epi32(0xFFFF));
  return _mm256_cvtph_ps(
      _mm_packus_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1)));
}

// The 8 rows' 6-bit scale (kMin: min) of sub-block j from their scale dwords u0 (bytes 0-3), u1
// (4-7), u2 (8-11): scale_min_k4 in lanes.
template <bool kMin>
GANTRY_AVX2_INLINE __m256i scale_q4k(__m256i u0, __m256i u1, __m256i u2, int j) {
  const __m256i low = kMin ? u1 : u0;
  if (j < 4)
    return _mm256_and_si256(_mm256_srli_epi32(low, 8 * j), _mm256_set1_epi32(63));
  const int jj = j - 4;
  const __m256i lo4 =
      _mm256_and_si256(_mm256_srli_epi32(u2, 8 * jj + (kMin ? 4 : 0)), _mm256_set1_epi32(15));
  const __m256i hi2 = _mm256_and_si256(_mm256_srli_epi32(low, 8 * jj + 6), _mm256_set1_epi32(3));
  return _mm256_or_si256(lo4, _mm256_slli_epi32(hi2, 4));
}

// A non-negative int16 value v in a dword's low half copied to its high half (for madd).
GANTRY_AVX2_INLINE __m256i twice16(__m256i v) {
  return _mm256_or_si256(v, _mm256_slli_epi32(v, 16));
}

// Byte b of each dword of v in both int16 halves of that dword, sign-extended (kSigned) or not:
// a sub-block scale of 8 rows, ready for madd. (vpshufb indexes bytes of the 128-bit lane: dword
// i's byte b is 4i + b.)
template <bool kSigned> GANTRY_AVX2_INLINE __m256i byte_twice16(__m256i v, int b) {
  const auto ub = static_cast<unsigned>(b);
  const __m256i dword = _mm256_setr_epi32(0, 0x04040404, 0x08080808, 0x0C0C0C0C, 0, 0x04040404,
                                          0x08080808, 0x0C0C0C0C);
  if constexpr (kSigned) {
    // Into each int16's high byte, then shifted down.
    const __m256i pick = _mm256_or_si256(
        _mm256_and_si256(dword, _mm256_set1_epi32(0x0F000F00)),
        _mm256_set1_epi32(static_cast<int32_t>(0x00800080u | (ub << 8) | (ub << 24))));
    return _mm256_srai_epi16(_mm256_shuffle_epi8(v, pick), 8);
  } else {
    const __m256i pick =
        _mm256_or_si256(_mm256_and_si256(dword, _mm256_set1_epi32(0x000F000F)),
                        _mm256_set1_epi32(static_cast<int32_t>(0x80008000u | ub | (ub << 16))));
    return _mm256_shuffle_epi8(v, pick);
  }
}

// The sum over a super-block's 16 sub-blocks of (8 rows' per-sub-block factor) x (the token's
// 16-element sum), the factors as signed bytes in 4 dwords per row (f[p] byte b: sub-block
// 4p + b), the sums as the 8 pairs of kSums (Q2_K's mins, Q3_K's and Q6_K's offsets).
GANTRY_AVX2_INLINE __m256i sums16_dot(const __m256i f[4], const int32_t *pairs) {
  __m256i out = _mm256_setzero_si256();
#pragma GCC unroll 4
  for (int p = 0; p < 4; ++p) {
    // int16 pairs of sign-extended bytes 0 and 2, then 1 and 3, of each dword.
    const __m256i even = _mm256_srai_epi16(_mm256_slli_epi16(f[p], 8), 8);
    const __m256i odd = _mm256_srai_epi16(f[p], 8);
    out = _mm256_add_epi32(out, _mm256_madd_epi16(even, _mm256_set1_epi32(pairs[2 * p])));
    out = _mm256_add_epi32(out, _mm256_madd_epi16(odd, _mm256_set1_epi32(pairs[2 * p + 1])));
  }
  return out;
}

// A group's float accumulators for T tokens, lanes of half h = rows 8h..8h + 7: sum and summ of
// the dot products (summ zero for the types without mins), written out as sum - summ.
template <int T> struct GroupAcc {
  __m256 acc[T][2], accm[T][2];
  GANTRY_AVX2_INLINE GroupAcc() {
#pragma GCC unroll 2
    for (int j = 0; j < T; ++j) {
      for (int h = 0; h < 2; ++h) {
        acc[j][h] = _mm256_setzero_ps();
        accm[j][h] = _mm256_setzero_ps();
      }
    }
  }
  GANTRY_AVX2_INLINE void store(float *y, int64_t ldy, int64_t t0, int64_t g) const {
#pragma GCC unroll 2
    for (int j = 0; j < T; ++j) {
      for (int h = 0; h < 2; ++h) {
        _mm256_storeu_ps(y + (t0 + j) * ldy + g * kGroupRows + 8 * h,
                         _mm256_sub_ps(acc[j][h], accm[j][h]));
      }
    }
  }
};

// Q5_K's fifth bits of one chunk half: bit `bit` of each qh byte at bit 4.
GANTRY_AVX2_INLINE __m256i fifth(__m256i qh, int bit) {
  return _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, bit), _mm256_set1_epi8(1)), 4);
}

// Half h of a packed Q4_K/Q5_K super-block's scales, decoded once for its 8 rows: sub-block j's
// scale in both int16 halves of each row's dword (sc[j], for madd), the mins of sub-blocks 2q and
// 2q + 1 in the low and high int16 (mp[q]), and d, dmin.
GANTRY_AVX2_INLINE void half_scales(const uint8_t *sb, int h, __m256i sc[8], __m256i mp[4],
                                    __m256 &d, __m256 &dmin) {
  const __m256i u0 = load32(sb + 64 + 32 * h), u1 = load32(sb + 128 + 32 * h);
  const __m256i u2 = load32(sb + 192 + 32 * h);
#pragma GCC unroll 8
  for (int j = 0; j < 8; ++j)
    sc[j] = twice16(scale_q4k<false>(u0, u1, u2, j));
#pragma GCC unroll 4
  for (int q = 0; q < 4; ++q) {
    mp[q] = _mm256_or_si256(scale_q4k<true>(u0, u1, u2, 2 * q),
                            _mm256_slli_epi32(scale_q4k<true>(u0, u1, u2, 2 * q + 1), 16));
  }
  const __m256i dd = load32(sb + 32 * h);
  d = half_lanes<false>(dd);
  dmin = half_lanes<true>(dd);
}

// Half h of a packed Q2_K (kQ3: Q3_K) super-block's scales as bytes: sc[p] byte b is sub-block
// 4p + b's scale (Q3_K: signed, less its bias of 32; Q2_K: the low nibble), mins[p] Q2_K's mins
// (the high nibbles; zero for Q3_K).
template <bool kQ3>
GANTRY_AVX2_INLINE void scales_q23k(const uint8_t *sb, int h, __m256i sc[4], __m256i mins[4]) {
  if constexpr (kQ3) {
    const __m256i u0 = load32(sb + 32 + 32 * h), u1 = load32(sb + 96 + 32 * h);
    const __m256i u2 = load32(sb + 160 + 32 * h);
    // q3_k_scales6 in lanes: the 6-bit values of Q6_K's layout (low nibbles of u0/u1, bit pairs
    // of u2).
    q6k_values(u0, u1, u2, sc);
#pragma GCC unroll 4
    for (int p = 0; p < 4; ++p) {
      sc[p] = _mm256_sub_epi8(sc[p], _mm256_set1_epi8(32));
      mins[p] = _mm256_setzero_si256();
    }
  } else {
    const __m256i k4 = _mm256_set1_epi8(0x0F);
#pragma GCC unroll 4
    for (int p = 0; p < 4; ++p) {
      const __m256i v = load32(sb + 64 + 64 * p + 32 * h);
      sc[p] = _mm256_and_si256(v, k4);
      mins[p] = _mm256_and_si256(_mm256_srli_epi16(v, 4), k4);
    }
  }
}

// The 8 rows' imin of a token: its kSums pairs against the mins.
GANTRY_AVX2_INLINE __m256i mins_q4k(const __m256i mp[4], const int32_t *pairs) {
  __m256i imin = _mm256_madd_epi16(mp[0], _mm256_set1_epi32(pairs[0]));
#pragma GCC unroll 3
  for (int q = 1; q < 4; ++q)
    imin = _mm256_add_epi32(imin, _mm256_madd_epi16(mp[q], _mm256_set1_epi32(pairs[q])));
  return imin;
}

// Group g (rows 16g..16g + 15) x tokens [t0, t0 + T) of packed Q4_K (kQ5: Q5_K); sums holds the
// tokens' pairs from token t0 (kSums per super-block). Per super-block, rows 0-7 are taken, then
// rows 8-15 (the second halves of the same lines, by then in L1).
template <int T, bool kQ5>
GANTRY_AVX2_INLINE void group_q4k(const WeightView &w, const Activations &a, const int32_t *sums,
                                  int64_t g, int64_t t0, float *y, int64_t ldy) {
  const int64_t cols = w.cols, nbk = cols / kQKK;
  using Block = std::conditional_t<kQ5, BlockQ5_K, BlockQ4_K>;
  constexpr int kRun = kQ5 ? 4 : 8; // chunks summed in int16 before the scale
  NextGroupPrefetch prefetch(w, g, nbk * 8);
  const __m256i m4 = _mm256_set1_epi8(0x0F);
  GroupAcc<T> out;
  for (int64_t s = 0; s < nbk; ++s) {
    const uint8_t *sb = packed_k_super<Block>(w, g, s);
#pragma GCC unroll 1
    for (int h = 0; h < 2; ++h) {
      __m256i sc[8], mp[4];
      __m256 d, dmin;
      half_scales(sb, h, sc, mp, d, dmin);
      __m256i isum[T];
#pragma GCC unroll 2
      for (int j = 0; j < T; ++j)
        isum[j] = _mm256_setzero_si256();
#pragma GCC unroll 1
      for (int c = 0; c < 4; ++c) {
        prefetch.step();
        const __m256i sc0 = sc[2 * c], sc1 = sc[2 * c + 1];
#pragma GCC unroll 2
        for (int run = 0; run < 8 / kRun; ++run) {
          __m256i plo[T], phi[T];
#pragma GCC unroll 2
          for (int j = 0; j < T; ++j) {
            plo[j] = _mm256_setzero_si256();
            phi[j] = _mm256_setzero_si256();
          }
#pragma GCC unroll 8
          for (int kk = 0; kk < kRun; ++kk) {
            const int k = run * kRun + kk;
            const __m256i v = load32(sb + 256 + 64 * (8 * c + k) + 32 * h);
            __m256i lo = _mm256_and_si256(v, m4);
            __m256i hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
            if constexpr (kQ5) {
              const __m256i qh = load32(sb + 2304 + 64 * k + 32 * h);
              lo = _mm256_or_si256(lo, fifth(qh, 2 * c));
              hi = _mm256_or_si256(hi, fifth(qh, 2 * c + 1));
            }
#pragma GCC unroll 2
            for (int j = 0; j < T; ++j) {
              const int8_t *x = a.qs + (t0 + j) * cols + s * kQKK + 64 * c + 4 * k;
              plo[j] = _mm256_add_epi16(plo[j], _mm256_maddubs_epi16(lo, broadcast4(x)));
              phi[j] = _mm256_add_epi16(phi[j], _mm256_maddubs_epi16(hi, broadcast4(x + 32)));
            }
          }
#pragma GCC unroll 2
          for (int j = 0; j < T; ++j) {
            isum[j] = _mm256_add_epi32(isum[j], _mm256_madd_epi16(plo[j], sc0));
            isum[j] = _mm256_add_epi32(isum[j], _mm256_madd_epi16(phi[j], sc1));
          }
        }
      }
#pragma GCC unroll 2
      for (int j = 0; j < T; ++j) {
        const __m256i imin = mins_q4k(mp, sums + (j * nbk + s) * kSums<TensorType::kQ4_K>);
        const __m256 dx = _mm256_set1_ps(a.d[(t0 + j) * nbk + s]);
        out.acc[j][h] =
            _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[j]), _mm256_mul_ps(d, dx), out.acc[j][h]);
        out.accm[j][h] =
            _mm256_fmadd_ps(_mm256_cvtepi32_ps(imin), _mm256_mul_ps(dmin, dx), out.accm[j][h]);
      }
    }
  }
  out.store(y, ldy, t0, g);
}

// Group g x tokens [t0, t0 + T) of packed Q6_K. Piece k of element half eh holds, per row,
// elements 128eh + 4k + 32m (m = 0..3: ql's low nibbles of its first and second 32 bytes, then
// their high nibbles; qh's bit pairs 2m) of sub-block 8eh + 2m + k / 4.
template <int T>
GANTRY_AVX2_INLINE void group_q6k(const WeightView &w, const Activations &a, const int32_t *sums,
                                  int64_t g, int64_t t0, float *y, int64_t ldy) {
  const int64_t cols = w.cols, nbk = cols / kQKK;
  NextGroupPrefetch prefetch(w, g, nbk * 8);
  const __m256i m4 = _mm256_set1_epi8(0x0F), m2 = _mm256_set1_epi8(0x03);
  GroupAcc<T> out;
  for (int64_t s = 0; s < nbk; ++s) {
    const uint8_t *sb = packed_k_super<BlockQ6_K>(w, g, s);
#pragma GCC unroll 1
    for (int h = 0; h < 2; ++h) {
      __m256i isum[T], off[T];
#pragma GCC unroll 2
      for (int j = 0; j < T; ++j) {
        isum[j] = _mm256_setzero_si256();
        off[j] = _mm256_setzero_si256();
      }
      // The rows' signed scales: scale dword p holds sub-blocks 4p..4p + 3. The offset is the
      // sum over sub-blocks of scale x the token's sum of 16.
      __m256i sc[4];
#pragma GCC unroll 4
      for (int p = 0; p < 4; ++p)
        sc[p] = load32(sb + 32 + 64 * p + 32 * h);
#pragma GCC unroll 2
      for (int j = 0; j < T; ++j)
        off[j] = sums16_dot(sc, sums + (j * nbk + s) * kSums<TensorType::kQ6_K>);
#pragma GCC unroll 1
      for (int eh = 0; eh < 2; ++eh) {
#pragma GCC unroll 1
        for (int half = 0; half < 2; ++half) {
          prefetch.step();
#pragma GCC unroll 4
          for (int m = 0; m < 4; ++m) {
            const int sub = 8 * eh + 2 * m + half;
            const __m256i scale = byte_twice16<true>(sc[sub / 4], sub % 4);
#pragma GCC unroll 2
            for (int pair = 0; pair < 2; ++pair) {
              __m256i p16[T];
#pragma GCC unroll 2
              for (int j = 0; j < T; ++j)
                p16[j] = _mm256_setzero_si256();
#pragma GCC unroll 2
              for (int kk = 0; kk < 2; ++kk) {
                const int k = 4 * half + 2 * pair + kk;
                const uint8_t *piece = sb + 288 + (8 * eh + k) * 192 + 32 * h;
                const __m256i ql = load32(piece + 64 * (m & 1));
                const __m256i qh = load32(piece + 128);
                const __m256i lo4 = m < 2 ? _mm256_and_si256(ql, m4)
                                          : _mm256_and_si256(_mm256_srli_epi16(ql, 4), m4);
                const __m256i hi2 = _mm256_and_si256(_mm256_srli_epi16(qh, 2 * m), m2);
                const __m256i u = _mm256_or_si256(lo4, _mm256_slli_epi16(hi2, 4));
#pragma GCC unroll 2
                for (int j = 0; j < T; ++j) {
                  const int8_t *x = a.qs + (t0 + j) * cols + s * kQKK + 128 * eh + 4 * k + 32 * m;
                  p16[j] = _mm256_add_epi16(p16[j], _mm256_maddubs_epi16(u, broadcast4(x)));
                }
              }
#pragma GCC unroll 2
              for (int j = 0; j < T; ++j)
                isum[j] = _mm256_add_epi32(isum[j], _mm256_madd_epi16(p16[j], scale));
            }
          }
        }
      }
      const __m256 d =
          _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i *>(sb + 16 * h)));
#pragma GCC unroll 2
      for (int j = 0; j < T; ++j) {
        const __m256i total = _mm256_sub_epi32(isum[j], _mm256_slli_epi32(off[j], 5));
        const __m256 dx = _mm256_set1_ps(a.d[(t0 + j) * nbk + s]);
        out.acc[j][h] =
            _mm256_fmadd_ps(_mm256_cvtepi32_ps(total), _mm256_mul_ps(d, dx), out.acc[j][h]);
      }
    }
  }
  out.store(y, ldy, t0, g); // accm stays zero: sum - 0, as the dot products
}

// Group g x tokens [t0, t0 + T) of packed Q2_K (kQ3: Q3_K). Chunk k holds qs bytes 4k..4k + 3:
// for n = k / 8 and l = 4 (k % 8), bits 2j..2j + 1 of each byte are element 128n + 32j + l (+0..3)
// of sub-block 8n + 2j + (k % 8) / 4; Q3_K's high bit of that element is bit 4n + j of hmask
// byte l, and its value is u - 4 with u = low bits + 4 x high bit (the offset, -4 x the
// scale-weighted 16-element sums, is taken once per super-block).
template <int T, bool kQ3>
GANTRY_AVX2_INLINE void group_q23k(const WeightView &w, const Activations &a, const int32_t *sums,
                                   int64_t g, int64_t t0, float *y, int64_t ldy) {
  const int64_t cols = w.cols, nbk = cols / kQKK;
  using Block = std::conditional_t<kQ3, BlockQ3_K, BlockQ2_K>;
  constexpr size_t kQs = kQ3 ? 736 : 320;
  NextGroupPrefetch prefetch(w, g, nbk * 8);
  const __m256i m3 = _mm256_set1_epi8(3), one = _mm256_set1_epi8(1);
  GroupAcc<T> out;
  for (int64_t s = 0; s < nbk; ++s) {
    const uint8_t *sb = packed_k_super<Block>(w, g, s);
#pragma GCC unroll 1
    for (int h = 0; h < 2; ++h) {
      __m256i sc[4], mins[4];
      scales_q23k<kQ3>(sb, h, sc, mins);
      __m256i isum[T];
#pragma GCC unroll 2
      for (int j = 0; j < T; ++j)
        isum[j] = _mm256_setzero_si256();
#pragma GCC unroll 1
      for (int n = 0; n < 2; ++n) {
#pragma GCC unroll 1
        for (int half = 0; half < 2; ++half) {
          prefetch.step();
#pragma GCC unroll 4
          for (int jb = 0; jb < 4; ++jb) {
            const int sub = 8 * n + 2 * jb + half;
            const __m256i scale = byte_twice16<kQ3>(sc[sub / 4], sub % 4);
            __m256i p16[T];
#pragma GCC unroll 2
            for (int j = 0; j < T; ++j)
              p16[j] = _mm256_setzero_si256();
#pragma GCC unroll 4
            for (int kk = 0; kk < 4; ++kk) {
              const int m = 4 * half + kk; // the chunk's l / 4
              __m256i u = _mm256_and_si256(
                  _mm256_srli_epi16(load32(sb + kQs + 64 * (8 * n + m) + 32 * h), 2 * jb), m3);
              if constexpr (kQ3) {
                const __m256i hm = load32(sb + 224 + 64 * m + 32 * h);
                u = _mm256_or_si256(
                    u,
                    _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hm, 4 * n + jb), one), 2));
              }
#pragma GCC unroll 2
              for (int j = 0; j < T; ++j) {
                const int8_t *x = a.qs + (t0 + j) * cols + s * kQKK + 128 * n + 32 * jb + 4 * m;
                p16[j] = _mm256_add_epi16(p16[j], _mm256_maddubs_epi16(u, broadcast4(x)));
              }
            }
#pragma GCC unroll 2
            for (int j = 0; j < T; ++j)
              isum[j] = _mm256_add_epi32(isum[j], _mm256_madd_epi16(p16[j], scale));
          }
        }
      }
#pragma GCC unroll 2
      for (int j = 0; j < T; ++j) {
        const int32_t *pairs = sums + (j * nbk + s) * kSums<TensorType::kQ2_K>;
        const __m256 dx = _mm256_set1_ps(a.d[(t0 + j) * nbk + s]);
        if constexpr (kQ3) {
          const __m256 d =
              _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i *>(sb + 16 * h)));
          const __m256i total =
              _mm256_sub_epi32(isum[j], _mm256_slli_epi32(sums16_dot(sc, pairs), 2));
          out.acc[j][h] =
              _mm256_fmadd_ps(_mm256_cvtepi32_ps(total), _mm256_mul_ps(d, dx), out.acc[j][h]);
        } else {
          const __m256i dd = load32(sb + 32 * h);
          const __m256 d = half_lanes<false>(dd), dmin = half_lanes<true>(dd);
          out.acc[j][h] =
              _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[j]), _mm256_mul_ps(d, dx), out.acc[j][h]);
          out.accm[j][h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums16_dot(mins, pairs)),
                                           _mm256_mul_ps(dmin, dx), out.accm[j][h]);
        }
      }
    }
  }
  out.store(y, ldy, t0, g);
}

// Calls of kPackedBlockTokens tokens or more over a packed K-quant (prefill, and batched decode
// steps): kernels_bench at 64 tokens, Q4_K 50 -> 85-90 GMAC/s, Q6_K 45-50 -> 60-65 against the
// row-major tiles of kernels_avx2_ktiles.cpp (which pay a maddubs and a madd by the scale per 32
// products and a horizontal sum per super-block); Q4_K at 8 tokens 53 -> 75-85 against the decode
// kernels' passes above (which decode the scales again on every pass). The loops are turned around:
// per half super-block of a group (8 rows; 1.2 KiB of Q4_K) the weights are decoded to bytes and
// the scales to vectors once, and every token of the call meets them in blocks of
// kPackedBlockTokens, weights and the tokens' 256 activations in L1, each row's float sums in
// scratch. The packed layout lets a sub-block's pieces sum in int16 before one madd by the scale,
// with each row in its own lane. Same integer sums and float steps per super-block as the decode
// kernels, so the same bits. A half super-block decoded to bytes once per call: u[p] holds the 8
// rows' unsigned values of elements 4p..4p + 3 (what maddubs multiplies), sc[b] sub-block b's scale
// in both int16 halves of each row's dword (for madd), f what the type's per-token tail multiplies
// the activations' sums by (Q4_K/Q5_K: the mins in int16 pairs; Q2_K: its mins, Q3_K and Q6_K:
// their signed scales, as bytes), and d, dmin.
struct HalfK {
  alignas(32) uint8_t u[64][32];
  __m256i sc[16], f[4];
  __m256 d, dmin;
};

// Elements per sub-block / 4, and pieces summed in int16 before the madd (bounds at the top).
template <TensorType kType>
constexpr int kSubPieces = kType == TensorType::kQ4_K || kType == TensorType::kQ5_K ? 8 : 4;
template <TensorType kType>
constexpr int kRunPieces = kType == TensorType::kQ4_K   ? 8
                           : kType == TensorType::kQ6_K ? 2
                                                        : 4;

GANTRY_AVX2_INLINE void store_u(HalfK &o, int p, __m256i v) {
  _mm256_store_si256(reinterpret_cast<__m256i *>(o.u[p]), v);
}

template <TensorType kType>
GANTRY_AVX2_INLINE void decode_half(const uint8_t *sb, int h, HalfK &o) {
  const __m256i m4 = _mm256_set1_epi8(0x0F);
  if constexpr (kType == TensorType::kQ4_K || kType == TensorType::kQ5_K) {
    half_scales(sb, h, o.sc, o.f, o.d, o.dmin);
    // Chunk 8c + k: elements 64c + 4k.. (low nibbles) and 64c + 32 + 4k.. (high).
#pragma GCC unroll 1
    for (int c = 0; c < 4; ++c) {
#pragma GCC unroll 8
      for (int k = 0; k < 8; ++k) {
        const __m256i v = load32(sb + 256 + 64 * (8 * c + k) + 32 * h);
        __m256i lo = _mm256_and_si256(v, m4);
        __m256i hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
        if constexpr (kType == TensorType::kQ5_K) {
          const __m256i qh = load32(sb + 2304 + 64 * k + 32 * h);
          lo = _mm256_or_si256(lo, fifth(qh, 2 * c));
          hi = _mm256_or_si256(hi, fifth(qh, 2 * c + 1));
        }
        store_u(o, 16 * c + k, lo);
        store_u(o, 16 * c + 8 + k, hi);
      }
    }
  } else if constexpr (kType == TensorType::kQ6_K) {
#pragma GCC unroll 4
    for (int p = 0; p < 4; ++p)
      o.f[p] = load32(sb + 32 + 64 * p + 32 * h);
#pragma GCC unroll 16
    for (int b = 0; b < 16; ++b)
      o.sc[b] = byte_twice16<true>(o.f[b / 4], b % 4);
    o.d = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i *>(sb + 16 * h)));
    o.dmin = _mm256_setzero_ps();
    // Piece k of element half eh: elements 128eh + 32m + 4k.. for m = 0..3 (group_q6k).
#pragma GCC unroll 1
    for (int eh = 0; eh < 2; ++eh) {
#pragma GCC unroll 8
      for (int k = 0; k < 8; ++k) {
        const uint8_t *piece = sb + 288 + (8 * eh + k) * 192 + 32 * h;
        const __m256i ql0 = load32(piece), ql1 = load32(piece + 64), qh = load32(piece + 128);
        __m256i u[4];
        q6k_values(ql0, ql1, qh, u);
#pragma GCC unroll 4
        for (int m = 0; m < 4; ++m)
          store_u(o, 32 * eh + 8 * m + k, u[m]);
      }
    }
  } else {
    static_assert(kType == TensorType::kQ2_K || kType == TensorType::kQ3_K);
    constexpr bool kQ3 = kType == TensorType::kQ3_K;
    constexpr size_t kQs = kQ3 ? 736 : 320;
    __m256i sc[4];
    scales_q23k<kQ3>(sb, h, sc, o.f);
    if constexpr (kQ3) {
      // The offset's factors are the signed scales themselves.
#pragma GCC unroll 4
      for (int p = 0; p < 4; ++p)
        o.f[p] = sc[p];
      o.d = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i *>(sb + 16 * h)));
      o.dmin = _mm256_setzero_ps();
    } else {
      const __m256i dd = load32(sb + 32 * h);
      o.d = half_lanes<false>(dd);
      o.dmin = half_lanes<true>(dd);
    }
#pragma GCC unroll 16
    for (int b = 0; b < 16; ++b)
      o.sc[b] = byte_twice16<kQ3>(sc[b / 4], b % 4);
    // Chunk k (qs bytes 4k..): bits 2j of its bytes are elements 128n + 32j + 4(k % 8).., n = k /
    // 8; Q3_K's high bit of them is bit 4n + j of hmask chunk k % 8.
    const __m256i m3 = _mm256_set1_epi8(3), one = _mm256_set1_epi8(1);
#pragma GCC unroll 1
    for (int k = 0; k < 16; ++k) {
      const int n = k / 8, l4 = k % 8;
      const __m256i q = load32(sb + kQs + 64 * k + 32 * h);
      __m256i hm = _mm256_setzero_si256();
      if constexpr (kQ3)
        hm = load32(sb + 224 + 64 * l4 + 32 * h);
#pragma GCC unroll 4
      for (int j = 0; j < 4; ++j) {
        __m256i u = _mm256_and_si256(_mm256_srli_epi16(q, 2 * j), m3);
        if constexpr (kQ3) {
          u = _mm256_or_si256(
              u, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hm, 4 * n + j), one), 2));
        }
        store_u(o, 32 * n + 8 * j + l4, u);
      }
    }
  }
}

// Tokens x[0..T) (their activations of this super-block) against a decoded half: the int32 sums
// of each row's products, sub-block scales applied.
template <TensorType kType, int T>
GANTRY_AVX2_INLINE void products_k(const HalfK &hk, const int8_t *const *x, __m256i *isum) {
  constexpr int kSub = kSubPieces<kType>, kRun = kRunPieces<kType>;
#pragma GCC unroll 4
  for (int j = 0; j < T; ++j)
    isum[j] = _mm256_setzero_si256();
#pragma GCC unroll 1
  for (int b = 0; b < 64 / kSub; ++b) {
#pragma GCC unroll 4
    for (int run = 0; run < kSub / kRun; ++run) {
      __m256i p16[T];
#pragma GCC unroll 4
      for (int j = 0; j < T; ++j)
        p16[j] = _mm256_setzero_si256();
      piece_products<T, kRun>(hk.u, b * kSub + run * kRun, x, p16);
#pragma GCC unroll 4
      for (int j = 0; j < T; ++j)
        isum[j] = _mm256_add_epi32(isum[j], _mm256_madd_epi16(p16[j], hk.sc[b]));
    }
  }
}

// Tokens [tb, tb + T) of the call (from t0) against decoded half h of super-block s: the float
// steps of the decode kernels per token.
template <TensorType kType, int T>
GANTRY_AVX2_INLINE void block_k(const HalfK &hk, int h, const Activations &a, const int32_t *sums,
                                int64_t s, int64_t t0, int64_t tb, float *acc, float *accm) {
  const int64_t cols = a.cols, nbk = cols / kQKK;
  const int8_t *x[T];
#pragma GCC unroll 4
  for (int j = 0; j < T; ++j)
    x[j] = a.qs + (tb + j) * cols + s * kQKK;
  __m256i isum[T];
  products_k<kType, T>(hk, x, isum);
#pragma GCC unroll 4
  for (int j = 0; j < T; ++j) {
    const int64_t t = tb + j;
    const int32_t *pairs = sums + ((t - t0) * nbk + s) * kSums<kType>;
    const __m256 dx = _mm256_set1_ps(a.d[t * nbk + s]);
    float *oa = acc + (t - t0) * kGroupRows + 8 * h, *om = accm + (t - t0) * kGroupRows + 8 * h;
    __m256i total = isum[j];
    if constexpr (kType == TensorType::kQ6_K || kType == TensorType::kQ3_K)
      total = _mm256_sub_epi32(
          total, _mm256_slli_epi32(sums16_dot(hk.f, pairs), kType == TensorType::kQ6_K ? 5 : 2));
    _mm256_storeu_ps(oa, _mm256_fmadd_ps(_mm256_cvtepi32_ps(total), _mm256_mul_ps(hk.d, dx),
                                         _mm256_loadu_ps(oa)));
    if constexpr (kType == TensorType::kQ4_K || kType == TensorType::kQ5_K ||
                  kType == TensorType::kQ2_K) {
      const __m256i imin =
          kType == TensorType::kQ2_K ? sums16_dot(hk.f, pairs) : mins_q4k(hk.f, pairs);
      _mm256_storeu_ps(om, _mm256_fmadd_ps(_mm256_cvtepi32_ps(imin), _mm256_mul_ps(hk.dmin, dx),
                                           _mm256_loadu_ps(om)));
    }
  }
}

thread_local HalfK t_half;

// Calls of kPackedBlockTokens tokens or more (prefill, batched decode steps) over a packed K-quant.
template <TensorType kType>
GANTRY_AVX2 void gemm_k(const WeightView &w, const Activations &a, const int32_t *sums, int64_t t0,
                        int64_t t1, int64_t r0, int64_t r1, float *y, int64_t ldy) {
  using Block = std::conditional_t<
      kType == TensorType::kQ2_K, BlockQ2_K,
      std::conditional_t<kType == TensorType::kQ3_K, BlockQ3_K,
                         std::conditional_t<kType == TensorType::kQ4_K, BlockQ4_K,
                                            std::conditional_t<kType == TensorType::kQ5_K,
                                                               BlockQ5_K, BlockQ6_K>>>>;
  const int64_t n = t1 - t0, nbk = w.cols / kQKK;
  float *acc = group_sums_scratch(n), *accm = acc + n * kGroupRows;
  HalfK &hk = t_half;
  for (int64_t g = r0 / kGroupRows; g < r1 / kGroupRows; ++g) {
    std::fill(acc, acc + 2 * n * kGroupRows, 0.0f);
    NextGroupPrefetch prefetch(w, g, nbk * 2);
    for (int64_t s = 0; s < nbk; ++s) {
      const uint8_t *sb = packed_k_super<Block>(w, g, s);
#pragma GCC unroll 1
      for (int h = 0; h < 2; ++h) {
        prefetch.step();
        decode_half<kType>(sb, h, hk);
        token_blocks(t0, t1, [&](auto tokens, int64_t t) GANTRY_AVX2_LAMBDA {
          block_k<kType, decltype(tokens)::value>(hk, h, a, sums, s, t0, t, acc, accm);
        });
      }
    }
    store_group_sums<-1>(acc, accm, n, g, t0, y, ldy);
  }
}

template <TensorType kType> void prepare_sums(const Activations &a, int64_t t, int32_t *out) {
  const int64_t nbk = a.cols / kQKK;
  const int16_t *bs = a.bsums + t * a.cols / 16;
  for (int64_t b = 0; b < nbk; ++b, bs += 16, out += kSums<kType>) {
    if constexpr (kSums<kType> == 8) {
      for (int p = 0; p < 4; ++p) {
        out[2 * p] = pair16(bs[4 * p], bs[4 * p + 2]);
        out[2 * p + 1] = pair16(bs[4 * p + 1], bs[4 * p + 3]);
      }
    } else {
      for (int q = 0; q < 4; ++q)
        out[q] = pair16(bs[4 * q] + bs[4 * q + 1], bs[4 * q + 2] + bs[4 * q + 3]);
    }
  }
}

template <TensorType kType, int T>
GANTRY_AVX2 void run_group(const WeightView &w, const Activations &a, const int32_t *sums,
                           int64_t g, int64_t t0, float *y, int64_t ldy) {
  if constexpr (kType == TensorType::kQ6_K)
    group_q6k<T>(w, a, sums, g, t0, y, ldy);
  else if constexpr (kType == TensorType::kQ2_K || kType == TensorType::kQ3_K)
    group_q23k<T, kType == TensorType::kQ3_K>(w, a, sums, g, t0, y, ldy);
  else
    group_q4k<T, kType == TensorType::kQ5_K>(w, a, sums, g, t0, y, ldy);
}

template <TensorType kType>
void gemv_k(const WeightView &w, const Activations &a, int64_t t0, int64_t t1, int64_t r0,
            int64_t r1, float *y, int64_t ldy) {
  const int64_t n = t1 - t0, nbk = w.cols / kQKK, per_token = nbk * kSums<kType>;
  if (static_cast<int64_t>(t_ksums.size()) < n * per_token)
    t_ksums.resize(static_cast<size_t>(n * per_token));
  for (int64_t t = t0; t < t1; ++t)
    prepare_sums<kType>(a, t, t_ksums.data() + (t - t0) * per_token);
  if (n >= kPackedBlockTokens) {
    gemm_k<kType>(w, a, t_ksums.data(), t0, t1, r0, r1, y, ldy);
    return;
  }
  // Two tokens per pass over a group keep every accumulator in the 16 ymm registers; a group
  // (18 KiB of Q4_K at 2048 columns) is read from memory once and from cache by the later passes.
  for (int64_t g = r0 / kGroupRows; g < r1 / kGroupRows; ++g) {
    int64_t t = t0;
    for (; t + 2 <= t1; t += 2)
      run_group<kType, 2>(w, a, t_ksums.data() + (t - t0) * per_token, g, t, y, ldy);
    if (t < t1)
      run_group<kType, 1>(w, a, t_ksums.data() + (t - t0) * per_token, g, t, y, ldy);
  }
}

} // namespace

bool matmul_rows_k_packed(const WeightView &w, const Activations &a, int64_t t0, int64_t t1,
                          int64_t r0, int64_t r1, float *y, int64_t ldy) {
  switch (w.type) {
  case TensorType::kQ2_K: gemv_k<TensorType::kQ2_K>(w, a, t0, t1, r0, r1, y, ldy); return true;
  case TensorType::kQ3_K: gemv_k<TensorType::kQ3_K>(w, a, t0, t1, r0, r1, y, ldy); return true;
  case TensorType::kQ4_K: gemv_k<TensorType::kQ4_K>(w, a, t0, t1, r0, r1, y, ldy); return true;
  case TensorType::kQ5_K: gemv_k<TensorType::kQ5_K>(w, a, t0, t1, r0, r1, y, ldy); return true;
  case TensorType::kQ6_K: gemv_k<TensorType::kQ6_K>(w, a, t0, t1, r0, r1, y, ldy); return true;
  default: return false;
  }
}

} // namespace gantry::engine::kernels::avx2
