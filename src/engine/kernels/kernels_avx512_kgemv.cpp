// AVX-512 VNNI matrix x vector kernels for decode (1-3 tokens per call) of Q4_K and Q6_K weights
// x Q8_K activations: the types of Q4_K_M files. Like kernels_avx512_gemv.cpp's Q8_0/Q4_0
// kernels they must keep the memory system busy, which the per-row dot products of
// quant_dots_inl.h (256-bit, a horizontal sum and scalar scale decoding per super-block) do not.
//
// Bits: exactly those of the dot products (and so of the AVX2, scalar and batch-tile paths, and
// of every batch size): per super-block the exact int32 isum (and for Q4_K imin), then
// sum = fma(float(isum), d * d_x, sum) and summ = fma(float(imin), dmin * d_x, summ) over the
// super-blocks in order; the output is sum - summ. Integer sums are exact however they are
// grouped, so only the lane layout differs.
//
// Layout of the work: a tile of 16 consecutive rows against one token. Per row and super-block,
// 64 quants per zmm go through vpdpbusd against the token's activations; each int32 lane (4
// products, |sum| < 2^15) is multiplied by its sub-block scale and accumulated by vpdpwssd, the
// scale sitting in the low int16 of the lane with a zero high half. The 16 rows' registers are
// folded by a permute tree into one whose lane j is row j's isum, without horizontal adds. The
// 16 fp16 d (and dmin) come with 16 dword loads (load_dwords16), and so do Q4_K's packed mins,
// decoded for all 16 rows at once (imin needs them in row lanes, the scales are needed per row).
// The next tile's rows are prefetched while this one computes.
//
// Q4_K's quants come 64 bytes at a time: the low nibbles are elements 0..31 and 64..95 of those
// 128, the high nibbles 32..63 and 96..127, so the activations are reordered once per call to
// match. Q6_K's ql/qh halves already give elements in order (see unsigned_q6).
#include <immintrin.h>

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <vector>

#include "engine/kernels/kernels_impl.h"

// See kernels_avx512.cpp: GCC 12's AVX-512 intrinsics trip -Wmaybe-uninitialized (bug 105593).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#define GANTRY_VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")))
#define GANTRY_VNNI_INLINE                                                                         \
  __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c"),                     \
                 always_inline)) inline

namespace gantry::engine::kernels::avx512vnni {
namespace {

constexpr int kTileRows = 16;
#include "engine/kernels/kernels_avx512_rows_inl.h"

template <TensorType kType>
constexpr size_t kBlockBytes = kType == TensorType::kQ4_K ? sizeof(BlockQ4_K) : sizeof(BlockQ6_K);
// Per-token integers the tile needs besides the quants: Q4_K's 8 sums of 32 activations per
// super-block (the mins multiply them), Q6_K's 16 sums of 16 times -32 (its offset).
template <TensorType kType> constexpr int kSumsPerBlock = kType == TensorType::kQ4_K ? 8 : 16;

// Per-thread scratch: the reordered activations (Q4_K) and the sums above, for the call's tokens.
struct KGemvScratch {
  std::vector<int8_t> x;
  std::vector<int32_t> sums;
};
thread_local KGemvScratch t_kgemv;

GANTRY_VNNI_INLINE __m512i load64(const void *p) { return _mm512_loadu_si512(p); }

// Row pair halves: low half = a's two 256-bit halves added, high half = b's.
GANTRY_VNNI_INLINE __m512i halves(__m512i a, __m512i b) {
  return _mm512_add_epi32(_mm512_shuffle_i64x2(a, b, 0x44), _mm512_shuffle_i64x2(a, b, 0xEE));
}

// As in kernels_avx512_gemv.cpp: folds pairs of registers holding 2k partial sums per row into
// one holding k per row.
GANTRY_VNNI_INLINE __m512i fold(__m512i a, __m512i b, __m512i lo, __m512i hi) {
  return _mm512_add_epi32(_mm512_permutex2var_epi32(a, lo, b), _mm512_permutex2var_epi32(a, hi, b));
}

// vpshufb index giving, per int32 lane, byte j0 (lanes 0..7) or j1 (lanes 8..15) of each 128-bit
// lane zero-extended: a sub-block scale as an int16 with a zero high half.
GANTRY_VNNI_INLINE __m512i scale_index(int j0, int j1) {
  const __m256i lo =
      _mm256_set1_epi32(static_cast<int32_t>(0x80808000u | static_cast<unsigned>(j0)));
  const __m256i hi =
      _mm256_set1_epi32(static_cast<int32_t>(0x80808000u | static_cast<unsigned>(j1)));
  return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
}

// One Q4_K super-block of one row against the reordered activations xs: 16 lanes summing to isum.
GANTRY_VNNI_INLINE __m512i row_q4k(const char *blk, const int8_t *xs, const __m512i *idx) {
  uint32_t u[3];
  std::memcpy(u, blk + 4, sizeof u);
  // The 8 6-bit scales (scale_min_k4) as bytes: the first four plainly in bytes 0..3, the last
  // four from the low nibbles of bytes 8..11 and the top bits of bytes 0..3.
  const uint64_t lo = u[0] & 0x3F3F3F3Fu;
  const uint64_t hi = (u[2] & 0x0F0F0F0Fu) | ((u[0] >> 2) & 0x30303030u);
  const __m512i sc = _mm512_set1_epi64(static_cast<int64_t>(lo | (hi << 32)));
  const __m512i m4 = _mm512_set1_epi8(0x0F);
  __m512i acc = _mm512_setzero_si512();
#pragma GCC unroll 2
  for (int c = 0; c < 2; ++c) {
    const __m512i q = load64(blk + 16 + 64 * c);
    const __m512i plo =
        _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_and_si512(q, m4), load64(xs + 128 * c));
    const __m512i phi =
        _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_and_si512(_mm512_srli_epi16(q, 4), m4),
                            load64(xs + 128 * c + 64));
    acc = _mm512_dpwssd_epi32(acc, plo, _mm512_shuffle_epi8(sc, idx[2 * c]));
    acc = _mm512_dpwssd_epi32(acc, phi, _mm512_shuffle_epi8(sc, idx[2 * c + 1]));
  }
  return acc;
}

// One Q6_K super-block of one row against the activations xs (in order) and nbs (-32 x the 16
// sums of 16): 16 lanes summing to isum.
GANTRY_VNNI_INLINE __m512i row_q6k(const char *blk, const int8_t *xs, const int32_t *nbs,
                                   const __m512i *idx) {
  const auto &b = *reinterpret_cast<const BlockQ6_K *>(blk);
  const __m512i s =
      _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i *>(b.scales)));
  const __m512i sp = _mm512_and_si512(s, _mm512_set1_epi32(0xFFFF));
  const __m512i m4 = _mm512_set1_epi8(0x0F);
  // Both halves' high 2 bits masked and moved to bits 4..5: elements 0..31 take bits 0..1 of qh,
  // 32..63 bits 2..3 (the first register), 64..95 bits 4..5, 96..127 bits 6..7 (the second).
  const __m512i mask_a = _mm512_inserti64x4(_mm512_set1_epi8(0x03), _mm256_set1_epi8(0x0C), 1);
  const __m512i mask_b =
      _mm512_inserti64x4(_mm512_set1_epi8(0x30), _mm256_set1_epi8(static_cast<char>(0xC0)), 1);
  const __m512i sh_a = _mm512_setr_epi64(4, 4, 4, 4, 2, 2, 2, 2);
  const __m512i sh_b = _mm512_setr_epi64(0, 0, 0, 0, 2, 2, 2, 2);
  __m512i acc = _mm512_mullo_epi32(s, load64(nbs));
#pragma GCC unroll 2
  for (int h = 0; h < 2; ++h) {
    const __m512i l = load64(b.ql + 64 * h);
    const __m512i hb = _mm512_broadcast_i64x4(
        _mm256_loadu_si256(reinterpret_cast<const __m256i *>(b.qh + 32 * h)));
    // Bit select (0xE4): the low nibble from the first operand, bits 4..5 from the second.
    const __m512i ua = _mm512_ternarylogic_epi32(
        l, _mm512_sllv_epi64(_mm512_and_si512(hb, mask_a), sh_a), m4, 0xE4);
    const __m512i ub = _mm512_ternarylogic_epi32(
        _mm512_srli_epi16(l, 4), _mm512_srlv_epi64(_mm512_and_si512(hb, mask_b), sh_b), m4, 0xE4);
    const __m512i pa = _mm512_dpbusd_epi32(_mm512_setzero_si512(), ua, load64(xs + 128 * h));
    const __m512i pb = _mm512_dpbusd_epi32(_mm512_setzero_si512(), ub, load64(xs + 128 * h + 64));
    acc = _mm512_dpwssd_epi32(acc, pa, _mm512_permutexvar_epi32(idx[2 * h], sp));
    acc = _mm512_dpwssd_epi32(acc, pb, _mm512_permutexvar_epi32(idx[2 * h + 1], sp));
  }
  return acc;
}

// Q4_K's imin for 16 rows: w2, w3 = bytes 8..11 and 12..15 of each row's block (scales[4..11]),
// bsum = the token's 8 sums of 32 for this super-block.
GANTRY_VNNI_INLINE __m512i imin_q4k(__m512i w2, __m512i w3, const int32_t *bsum) {
  const __m512i m6 = _mm512_set1_epi32(63), m4 = _mm512_set1_epi32(15), m2 = _mm512_set1_epi32(3);
  __m512i imin = _mm512_setzero_si512();
#pragma GCC unroll 4
  for (int j = 0; j < 4; ++j) {
    // Min j: scales[j + 4] & 63; min j + 4: scales[j + 8] >> 4 | (scales[j + 4] >> 6) << 4.
    const __m512i mj = _mm512_and_si512(_mm512_srli_epi32(w2, 8 * j), m6);
    const __m512i mj4 = _mm512_or_si512(
        _mm512_and_si512(_mm512_srli_epi32(w3, 8 * j + 4), m4),
        _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(w2, 8 * j + 6), m2), 4));
    imin = _mm512_add_epi32(imin, _mm512_mullo_epi32(mj, _mm512_set1_epi32(bsum[j])));
    imin = _mm512_add_epi32(imin, _mm512_mullo_epi32(mj4, _mm512_set1_epi32(bsum[j + 4])));
  }
  return imin;
}

// 16 rows [r, r + 16) (clamped to r1 - 1: the extra lanes are computed and dropped) x one token:
// xs its activations (reordered for Q4_K), sums its per-super-block sums, xd its scales.
template <TensorType kType>
GANTRY_VNNI_INLINE void tile16(const WeightView &w, const int8_t *xs, const int32_t *sums,
                               const float *xd, int64_t r, int64_t r1, float *yt) {
  const int64_t nbk = w.cols / kQKK;
  // Row-major only: packed matrices go to gemv_k_packed.
  const char *rows[kTileRows];
  const size_t step = kBlockBytes<kType>;
#pragma GCC unroll 16
  for (int i = 0; i < kTileRows; ++i) {
    const int64_t ri = std::min(r + i, r1 - 1);
    rows[i] = static_cast<const char *>(w.row(ri));
  }
  const char *next = static_cast<const char *>(w.row(std::min(r + kTileRows, r1 - 1)));
  const int64_t next_rows = std::max<int64_t>(0, std::min<int64_t>(kTileRows, r1 - r - kTileRows));
  const int64_t next_bytes = next_rows * static_cast<int64_t>(w.row_stride);
  const int64_t pf_per_block = (next_bytes + nbk * 64 - 1) / (nbk * 64);

  __m512i idx[4];
  if constexpr (kType == TensorType::kQ4_K) {
    idx[0] = scale_index(0, 2);
    idx[1] = scale_index(1, 3);
    idx[2] = scale_index(4, 6);
    idx[3] = scale_index(5, 7);
  } else {
    // Lane i of a register of 64 quants holds 4 of group (first group) + i / 4.
    const __m512i quarter = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
    for (int k = 0; k < 4; ++k)
      idx[k] = _mm512_add_epi32(quarter, _mm512_set1_epi32(4 * k));
  }
  const __m512i l1lo = _mm512_setr_epi32(0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27);
  const __m512i l1hi = _mm512_add_epi32(l1lo, _mm512_set1_epi32(4));
  const __m512i l2lo = _mm512_setr_epi32(0, 1, 4, 5, 8, 9, 12, 13, 16, 17, 20, 21, 24, 25, 28, 29);
  const __m512i l2hi = _mm512_add_epi32(l2lo, _mm512_set1_epi32(2));
  const __m512i l3lo = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i l3hi = _mm512_add_epi32(l3lo, _mm512_set1_epi32(1));
  __m512 acc = _mm512_setzero_ps(), accm = _mm512_setzero_ps();
  int64_t pf = 0;
  for (int64_t s = 0; s < nbk; ++s) {
    const size_t at = static_cast<size_t>(s) * step;
    for (int64_t k = 0; k < pf_per_block; ++k, pf += 64) {
      if (pf < next_bytes)
        _mm_prefetch(next + pf, _MM_HINT_T0);
    }
    const int8_t *xb = xs + s * kQKK;
    const int32_t *sb = sums + s * kSumsPerBlock<kType>;
    __m512i p[8];
#pragma GCC unroll 8
    for (int i = 0; i < 8; ++i) {
      if constexpr (kType == TensorType::kQ4_K) {
        p[i] = halves(row_q4k(rows[2 * i] + at, xb, idx), row_q4k(rows[2 * i + 1] + at, xb, idx));
      } else {
        p[i] = halves(row_q6k(rows[2 * i] + at, xb, sb, idx),
                      row_q6k(rows[2 * i + 1] + at, xb, sb, idx));
      }
    }
    const __m512i q0 = fold(p[0], p[1], l1lo, l1hi), q1 = fold(p[2], p[3], l1lo, l1hi);
    const __m512i q2 = fold(p[4], p[5], l1lo, l1hi), q3 = fold(p[6], p[7], l1lo, l1hi);
    const __m512i o0 = fold(q0, q1, l2lo, l2hi), o1 = fold(q2, q3, l2lo, l2hi);
    const __m512i isum = fold(o0, o1, l3lo, l3hi);
    const __m512 dx = _mm512_set1_ps(xd[s]);
    if constexpr (kType == TensorType::kQ4_K) {
      // d and dmin lead the block; the packed mins are scales[4..11], bytes 8..15.
      const __m512i dd = load_dwords16(rows, at);
      const __m512i w2 = load_dwords16(rows, at + 8);
      const __m512i w3 = load_dwords16(rows, at + 12);
      const __m512 d = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(dd));
      const __m512 dmin = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(dd, 16)));
      acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), _mm512_mul_ps(d, dx), acc);
      accm =
          _mm512_fmadd_ps(_mm512_cvtepi32_ps(imin_q4k(w2, w3, sb)), _mm512_mul_ps(dmin, dx), accm);
    } else {
      // d is the block's last 2 bytes: read it with the two scales before it, staying inside.
      const __m512i dd = load_dwords16(rows, at + offsetof(BlockQ6_K, d) - 2);
      const __m512 d = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(dd, 16)));
      acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), _mm512_mul_ps(d, dx), acc);
    }
  }
  alignas(64) float out[kTileRows];
  _mm512_store_ps(out, _mm512_sub_ps(acc, accm));
  const int64_t n = std::min<int64_t>(kTileRows, r1 - r);
  for (int64_t i = 0; i < n; ++i)
    yt[r + i] = out[i];
}

// The per-token inputs of tile16 for token t: Q4_K's activations reordered into x (cols bytes),
// and the sums (kSumsPerBlock per super-block).
template <TensorType kType>
void prepare_token(const Activations &a, int64_t t, int8_t *x, int32_t *sums) {
  const int64_t cols = a.cols, nbk = cols / kQKK;
  const int8_t *q = a.qs + t * cols;
  const int16_t *bs = a.bsums + t * cols / 16;
  for (int64_t s = 0; s < nbk; ++s) {
    if constexpr (kType == TensorType::kQ4_K) {
      for (int c = 0; c < 2; ++c) {
        const int8_t *src = q + s * kQKK + 128 * c;
        int8_t *dst = x + s * kQKK + 128 * c;
        std::memcpy(dst, src, 32);
        std::memcpy(dst + 32, src + 64, 32);
        std::memcpy(dst + 64, src + 32, 32);
        std::memcpy(dst + 96, src + 96, 32);
      }
      for (int j = 0; j < 8; ++j)
        sums[s * 8 + j] = bs[s * 16 + 2 * j] + bs[s * 16 + 2 * j + 1];
    } else {
      for (int g = 0; g < 16; ++g)
        sums[s * 16 + g] = -32 * bs[s * 16 + g];
    }
  }
}

template <TensorType kType>
GANTRY_VNNI void gemv_k(const WeightView &w, const Activations &a, int64_t t0, int64_t t1,
                        int64_t r0, int64_t r1, float *y, int64_t ldy) {
  const int64_t n = t1 - t0, cols = w.cols, nbk = cols / kQKK;
  auto &s = t_kgemv;
  if (kType == TensorType::kQ4_K && static_cast<int64_t>(s.x.size()) < n * cols)
    s.x.resize(static_cast<size_t>(n * cols));
  if (static_cast<int64_t>(s.sums.size()) < n * nbk * kSumsPerBlock<kType>)
    s.sums.resize(static_cast<size_t>(n * nbk * kSumsPerBlock<kType>));
  for (int64_t t = t0; t < t1; ++t) {
    prepare_token<kType>(a, t, s.x.data() + (t - t0) * cols,
                         s.sums.data() + (t - t0) * nbk * kSumsPerBlock<kType>);
  }
  for (int64_t r = r0; r < r1; r += kTileRows) {
    for (int64_t t = t0; t < t1; ++t) {
      const int8_t *xs =
          kType == TensorType::kQ4_K ? s.x.data() + (t - t0) * cols : a.qs + t * cols;
      tile16<kType>(w, xs, s.sums.data() + (t - t0) * nbk * kSumsPerBlock<kType>, a.d + t * nbk, r,
                    r1, y + t * ldy);
    }
  }
}

// ---- packed Q4_K (kernels_impl.h, packed_k_pieces) ---------------------------------------------
//
// A 16-row group's super-block is one stream of 2304 bytes, and every chunk holds 4 bytes of each
// row: one vpdpbusd per chunk and token leaves every row's partial sum in its own lane, so the
// loads, nibble splits and scale decoding are shared by up to 4 tokens and nothing is folded.
// Per sub-block the exact int32 sum is multiplied by the 16 rows' 6-bit scales (vpmulld), the
// mins by the token's sums of 32 (vpdpwssd of (min 2q, min 2q + 1) pairs): the exact isum and
// imin of the dot products, then their float steps, so the bits are theirs.

// The 16 rows' 6-bit scale (kMin: min) of sub-block j, from the scale dwords u0 (bytes 0-3),
// u1 (4-7), u2 (8-11): scale_min_k4 in lanes.
template <bool kMin>
GANTRY_VNNI_INLINE __m512i scale_q4k(__m512i u0, __m512i u1, __m512i u2, int j) {
  const __m512i lowbits = kMin ? u1 : u0;
  if (j < 4)
    return _mm512_and_si512(_mm512_srli_epi32(lowbits, 8 * j), _mm512_set1_epi32(63));
  const int jj = j - 4;
  const __m512i lo4 =
      _mm512_and_si512(_mm512_srli_epi32(u2, 8 * jj + (kMin ? 4 : 0)), _mm512_set1_epi32(15));
  const __m512i hi2 =
      _mm512_and_si512(_mm512_srli_epi32(lowbits, 8 * jj + 6), _mm512_set1_epi32(3));
  return _mm512_or_si512(lo4, _mm512_slli_epi32(hi2, 4));
}

// Group g x tokens [t0, t0 + T): x the activations, pairs the tokens' sums of 32 in int16 pairs
// (4 per super-block, nbk * 4 per token), xd the scales.
// kQ5: Q5_K, whose fifth bits (bit j of qh byte l: element 32j + l) are or-ed into the nibbles
// from its 8 qh chunks; the rest of its arithmetic is Q4_K's (the row-major kernels share it).
template <int T, bool kQ5 = false>
GANTRY_VNNI_INLINE void group_q4k_packed(const WeightView &w, const Activations &a,
                                         const int32_t *pairs, int64_t g, int64_t t0, float *y,
                                         int64_t ldy, int part, int parts) {
  const int64_t cols = w.cols, nbk = cols / kQKK;
  // Four prefetch steps a super-block: a burst of a whole step's lines (2.3 KiB at 2048
  // columns) fills the core's miss buffers and stalls it (a quarter of an 8-sequence profile).
  NextGroupPrefetch prefetch(w, g, nbk * 4, part, parts);
  const __m512i m4 = _mm512_set1_epi8(0x0F);
  __m512 acc[T], accm[T];
#pragma GCC unroll 4
  for (int j = 0; j < T; ++j) {
    acc[j] = _mm512_setzero_ps();
    accm[j] = _mm512_setzero_ps();
  }
  for (int64_t s = 0; s < nbk; ++s) {
    const uint8_t *sb =
        kQ5 ? packed_k_super<BlockQ5_K>(w, g, s) : packed_k_super<BlockQ4_K>(w, g, s);
    const __m512i u0 = _mm512_loadu_si512(sb + 64), u1 = _mm512_loadu_si512(sb + 128);
    const __m512i u2 = _mm512_loadu_si512(sb + 192);
    __m512i isum[T];
#pragma GCC unroll 4
    for (int j = 0; j < T; ++j)
      isum[j] = _mm512_setzero_si512();
#pragma GCC unroll 1
    for (int c = 0; c < 4; ++c) {
      prefetch.step();
      __m512i plo[T], phi[T];
#pragma GCC unroll 4
      for (int j = 0; j < T; ++j) {
        plo[j] = _mm512_setzero_si512();
        phi[j] = _mm512_setzero_si512();
      }
      const uint8_t *chunks = sb + 256 + 512 * c;
#pragma GCC unroll 8
      for (int k = 0; k < 8; ++k) {
        const __m512i v = _mm512_loadu_si512(chunks + 64 * k);
        __m512i lo = _mm512_and_si512(v, m4);
        __m512i hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
        if constexpr (kQ5) {
          const __m512i qh = _mm512_loadu_si512(sb + 2304 + 64 * k);
          const __m512i one = _mm512_set1_epi8(1);
          lo = _mm512_or_si512(
              lo, _mm512_slli_epi16(_mm512_and_si512(_mm512_srli_epi16(qh, 2 * c), one), 4));
          hi = _mm512_or_si512(
              hi, _mm512_slli_epi16(_mm512_and_si512(_mm512_srli_epi16(qh, 2 * c + 1), one), 4));
        }
#pragma GCC unroll 4
        for (int j = 0; j < T; ++j) {
          const int8_t *x = a.qs + (t0 + j) * cols + s * kQKK + 64 * c + 4 * k;
          plo[j] = dpbusd_x4(plo[j], lo, x);
          phi[j] = dpbusd_x4(phi[j], hi, x + 32);
        }
      }
      const __m512i sc0 = scale_q4k<false>(u0, u1, u2, 2 * c);
      const __m512i sc1 = scale_q4k<false>(u0, u1, u2, 2 * c + 1);
#pragma GCC unroll 4
      for (int j = 0; j < T; ++j) {
        isum[j] = _mm512_add_epi32(isum[j], _mm512_mullo_epi32(plo[j], sc0));
        isum[j] = _mm512_add_epi32(isum[j], _mm512_mullo_epi32(phi[j], sc1));
      }
    }
    const __m512i dd = _mm512_loadu_si512(sb);
    const __m512 d = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(dd));
    const __m512 dmin = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(dd, 16)));
    __m512i imin[T];
#pragma GCC unroll 4
    for (int j = 0; j < T; ++j) {
      const __m512 dx = _mm512_set1_ps(a.d[(t0 + j) * nbk + s]);
      acc[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[j]), _mm512_mul_ps(d, dx), acc[j]);
      imin[j] = _mm512_setzero_si512();
    }
#pragma GCC unroll 4
    for (int q = 0; q < 4; ++q) {
      const __m512i mp =
          _mm512_or_si512(scale_q4k<true>(u0, u1, u2, 2 * q),
                          _mm512_slli_epi32(scale_q4k<true>(u0, u1, u2, 2 * q + 1), 16));
#pragma GCC unroll 4
      for (int j = 0; j < T; ++j) {
        imin[j] = _mm512_dpwssd_epi32(imin[j], mp, _mm512_set1_epi32(pairs[(j * nbk + s) * 4 + q]));
      }
    }
#pragma GCC unroll 4
    for (int j = 0; j < T; ++j) {
      const __m512 dx = _mm512_set1_ps(a.d[(t0 + j) * nbk + s]);
      accm[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(imin[j]), _mm512_mul_ps(dmin, dx), accm[j]);
    }
  }
#pragma GCC unroll 4
  for (int j = 0; j < T; ++j)
    _mm512_storeu_ps(y + (t0 + j) * ldy + g * kTileRows, _mm512_sub_ps(acc[j], accm[j]));
}

// ---- packed Q6_K (kernels_impl.h, packed_k_pieces) ---------------------------------------------
//
// As for Q4_K: one vpdpbusd per chunk and token gives every row's partial sum in its lane. Piece k
// of half h holds, per row, elements 128h + 4k + 32m (m = 0..3: ql's low nibbles of the first and
// second 32 bytes, then their high nibbles; qh's bit pairs 2m) of sub-block 8h + 2m + k / 4. Each
// sub-block's sum starts at -32 x the token's sum of its 16 activations (the offset) and is
// multiplied by the rows' signed scales: the exact isum of the dot products, then their float
// step, so the bits are theirs.
template <int T>
GANTRY_VNNI_INLINE void group_q6k_packed(const WeightView &w, const Activations &a,
                                         const int32_t *nbs, int64_t g, int64_t t0, float *y,
                                         int64_t ldy, int part, int parts) {
  const int64_t cols = w.cols, nbk = cols / kQKK;
  NextGroupPrefetch prefetch(w, g, nbk * 4, part, parts); // four steps a super-block, as for Q4_K
  const __m512i m4 = _mm512_set1_epi8(0x0F), m2 = _mm512_set1_epi8(0x03);
  __m512 acc[T];
#pragma GCC unroll 4
  for (int j = 0; j < T; ++j)
    acc[j] = _mm512_setzero_ps();
  for (int64_t s = 0; s < nbk; ++s) {
    const uint8_t *sb = packed_k_super<BlockQ6_K>(w, g, s);
    __m512i isum[T];
#pragma GCC unroll 4
    for (int j = 0; j < T; ++j)
      isum[j] = _mm512_setzero_si512();
#pragma GCC unroll 1
    for (int h = 0; h < 2; ++h) {
#pragma GCC unroll 1
      for (int half = 0; half < 2; ++half) {
        prefetch.step();
#pragma GCC unroll 4
        for (int m = 0; m < 4; ++m) {
          const int sub = 8 * h + 2 * m + half;
          __m512i p[T];
#pragma GCC unroll 4
          for (int j = 0; j < T; ++j)
            p[j] = _mm512_set1_epi32(nbs[(j * nbk + s) * 16 + sub]);
#pragma GCC unroll 4
          for (int kk = 0; kk < 4; ++kk) {
            const int k = 4 * half + kk;
            const uint8_t *piece = sb + 288 + (8 * h + k) * 192;
            const __m512i ql = _mm512_loadu_si512(piece + 64 * (m & 1));
            const __m512i qh = _mm512_loadu_si512(piece + 128);
            const __m512i lo4 =
                m < 2 ? _mm512_and_si512(ql, m4) : _mm512_and_si512(_mm512_srli_epi16(ql, 4), m4);
            const __m512i hi2 = _mm512_and_si512(_mm512_srli_epi16(qh, 2 * m), m2);
            const __m512i u = _mm512_or_si512(lo4, _mm512_slli_epi16(hi2, 4));
#pragma GCC unroll 4
            for (int j = 0; j < T; ++j) {
              p[j] =
                  dpbusd_x4(p[j], u, a.qs + (t0 + j) * cols + s * kQKK + 128 * h + 4 * k + 32 * m);
            }
          }
          // The rows' signed scale of this sub-block: byte sub % 4 of dword array sub / 4.
          const __m512i sc = _mm512_srai_epi32(
              _mm512_slli_epi32(_mm512_loadu_si512(sb + 32 + 64 * (sub / 4)), 24 - 8 * (sub % 4)),
              24);
#pragma GCC unroll 4
          for (int j = 0; j < T; ++j)
            isum[j] = _mm512_add_epi32(isum[j], _mm512_mullo_epi32(p[j], sc));
        }
      }
    }
    const __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(sb)));
#pragma GCC unroll 4
    for (int j = 0; j < T; ++j) {
      const __m512 dx = _mm512_set1_ps(a.d[(t0 + j) * nbk + s]);
      acc[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[j]), _mm512_mul_ps(d, dx), acc[j]);
    }
  }
#pragma GCC unroll 4
  for (int j = 0; j < T; ++j) {
    // As tile16's output (acc - accm, accm zero for Q6_K).
    _mm512_storeu_ps(y + (t0 + j) * ldy + g * kTileRows,
                     _mm512_sub_ps(acc[j], _mm512_setzero_ps()));
  }
}

// One packed pass of T tokens from t (token_passes); sums holds the tokens' integers from t0
// (kPackedSums per super-block and token).
template <TensorType kType> constexpr int kPackedSums = kType == TensorType::kQ6_K ? 16 : 4;
constexpr int kKPassTokens = 4; // tokens per pass over a group (their accumulators in registers)
template <TensorType kType> struct KPackedPass {
  const WeightView &w;
  const Activations &a;
  const int32_t *sums;
  int64_t t0, g;
  float *y;
  int64_t ldy;
  int parts; // passes over the group: each prefetches its share of the next one
  template <int T> GANTRY_VNNI_INLINE void run(int64_t t) {
    const int32_t *at = sums + (t - t0) * (w.cols / kQKK) * kPackedSums<kType>;
    const int part = static_cast<int>((t - t0) / kKPassTokens);
    if constexpr (kType == TensorType::kQ4_K)
      group_q4k_packed<T>(w, a, at, g, t, y, ldy, part, parts);
    else if constexpr (kType == TensorType::kQ5_K)
      group_q4k_packed<T, true>(w, a, at, g, t, y, ldy, part, parts);
    else
      group_q6k_packed<T>(w, a, at, g, t, y, ldy, part, parts);
  }
};

// Rows [r0, r1) (whole groups) x tokens [t0, t1) of a packed Q4_K or Q6_K matrix, up to 4 tokens
// per pass over a group (a Q4_K group of 2048 columns is 18 KiB: further passes read it from L1).
template <TensorType kType>
GANTRY_VNNI void gemv_k_packed(const WeightView &w, const Activations &a, int64_t t0, int64_t t1,
                               int64_t r0, int64_t r1, float *y, int64_t ldy) {
  const int64_t n = t1 - t0, nbk = w.cols / kQKK;
  constexpr int kSums = kPackedSums<kType>;
  auto &s = t_kgemv;
  if (static_cast<int64_t>(s.sums.size()) < n * nbk * kSums)
    s.sums.resize(static_cast<size_t>(n * nbk * kSums));
  for (int64_t t = t0; t < t1; ++t) {
    const int16_t *bs = a.bsums + t * w.cols / 16;
    int32_t *out = s.sums.data() + (t - t0) * nbk * kSums;
    for (int64_t b = 0; b < nbk; ++b) {
      if constexpr (kType != TensorType::kQ6_K) {
        // Q4_K, Q5_K: the sums of 32 (two Q8_K sums of 16 each) as int16 pairs (2q, 2q + 1).
        for (int q = 0; q < 4; ++q) {
          const int32_t lo = bs[b * 16 + 4 * q] + bs[b * 16 + 4 * q + 1];
          const int32_t hi = bs[b * 16 + 4 * q + 2] + bs[b * 16 + 4 * q + 3];
          out[b * 4 + q] = static_cast<int32_t>((static_cast<uint32_t>(lo) & 0xFFFFu) |
                                                (static_cast<uint32_t>(hi) << 16));
        }
      } else {
        // Q6_K: -32 x the sums of 16 (its offset).
        for (int i = 0; i < 16; ++i)
          out[b * 16 + i] = -32 * bs[b * 16 + i];
      }
    }
  }
  for (int64_t g = r0 / kTileRows; g < r1 / kTileRows; ++g) {
    KPackedPass<kType> pass{
        w, a, s.sums.data(), t0,
        g, y, ldy,           static_cast<int>((n + kKPassTokens - 1) / kKPassTokens)};
    token_passes<kKPassTokens>(t0, t1, pass);
  }
}

} // namespace

bool matmul_rows_k_gemv(const WeightView &w, const Activations &a, int64_t t0, int64_t t1,
                        int64_t r0, int64_t r1, float *y, int64_t ldy) {
  if (w.packed16 &&
      (w.type == TensorType::kQ4_K || w.type == TensorType::kQ5_K || w.type == TensorType::kQ6_K) &&
      t1 - t0 <= kTokGroup) {
    if (w.type == TensorType::kQ4_K)
      gemv_k_packed<TensorType::kQ4_K>(w, a, t0, t1, r0, r1, y, ldy);
    else if (w.type == TensorType::kQ5_K)
      gemv_k_packed<TensorType::kQ5_K>(w, a, t0, t1, r0, r1, y, ldy);
    else
      gemv_k_packed<TensorType::kQ6_K>(w, a, t0, t1, r0, r1, y, ldy);
    return true;
  }
  if (t1 - t0 >= 4)
    return false;
  switch (w.type) {
  case TensorType::kQ4_K: gemv_k<TensorType::kQ4_K>(w, a, t0, t1, r0, r1, y, ldy); return true;
  case TensorType::kQ6_K: gemv_k<TensorType::kQ6_K>(w, a, t0, t1, r0, r1, y, ldy); return true;
  default: return false;
  }
}

} // namespace gantry::engine::kernels::avx512vnni
