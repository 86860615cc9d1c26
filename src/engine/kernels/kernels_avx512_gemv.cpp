// AVX-512 VNNI matrix x vector kernels for decode (1-3 tokens per call): Q8_0 and Q4_0 weights x Q8
// activations with vpdpbusd, F32/F16/BF16 weights with 512-bit fma. One sequence decoding reads
// every weight byte once per token, so these kernels must keep the memory system busy rather than
// the core: the AVX2 decode kernel (kernels_avx2.cpp, rows8_q8) spends most of its instructions
// on sign tricks, int16 pair sums and per-row scale loads, and measured about half of the
// machine's read bandwidth on a 2-core EPYC.
//
// Bits: exactly those of the AVX2 kernels (and so of every batch size): per 32-block the exact
// int32 dot product, then acc = fma(float(isum), d_w * d_x, acc) over the blocks in order; for the
// float types 8 lanes over the columns per output, fma in column order, then kernels_avx2.cpp's
// hsum. Integer sums are exact however they are formed, so only the lane layout differs.
//
// Layout of the work: a tile of 16 consecutive rows against one token. Per block, two rows share
// a zmm (row 2i's 32 weights in the low half, row 2i + 1's in the high half) against the token's
// block in both halves, and vpdpbusd leaves 8 partial sums per row; a tree of 2-source permutes
// folds the 8 registers into one whose lane j is row j's block sum, without any horizontal adds.
// The 16 fp16 scales come with 16 dword loads (load_dwords16). The next tile's rows are
// prefetched while this one computes: rows are contiguous, a tile of Q8_0 rows 2048 wide is 34 KiB,
// and without it every row starts a fresh stream that the hardware prefetcher has to discover (a
// 2048-wide F16 row is exactly one 4 KiB page, which hardware prefetchers do not cross).
#include <immintrin.h>

#include <algorithm>
#include <cstring>

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

template <TensorType kType>
constexpr size_t kBlockBytes = kType == TensorType::kQ8_0 ? sizeof(BlockQ8_0) : sizeof(BlockQ4_0);
// u = w + 128 (Q8_0, by flipping the sign bit) or the stored nibble w + 8 (Q4_0).
template <TensorType kType> constexpr int kOffsetShift = block_offset_shift(kType);

#include "engine/kernels/kernels_avx512_rows_inl.h"

// Block b of rows r0 (low half) and r1 (high half) as unsigned bytes, in element order per half.
template <TensorType kType>
GANTRY_VNNI_INLINE __m512i unsigned_pair(const char *blk0, const char *blk1) {
  if constexpr (kType == TensorType::kQ8_0) {
    const __m512i both = _mm512_inserti64x4(
        _mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(blk0 + 2))),
        _mm256_loadu_si256(reinterpret_cast<const __m256i *>(blk1 + 2)), 1);
    return _mm512_xor_si512(both, _mm512_set1_epi8(static_cast<char>(0x80)));
  } else {
    // [qs0, qs0, qs1, qs1]: the upper copy of each pair shifted right by 4 gives the high
    // nibbles (elements 16..31).
    const __m512i both = _mm512_inserti64x4(
        _mm512_castsi256_si512(_mm256_broadcastsi128_si256(
            _mm_loadu_si128(reinterpret_cast<const __m128i *>(blk0 + 2)))),
        _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i *>(blk1 + 2))),
        1);
    return _mm512_and_si512(_mm512_srlv_epi64(both, _mm512_setr_epi64(0, 0, 4, 4, 0, 0, 4, 4)),
                            _mm512_set1_epi8(0x0F));
  }
}

// Folds pairs of registers holding 2k partial sums per row into one holding k per row:
// out lane block j (of width k) = a's (j < 16 / 2k) or b's row block, the two halves added.
GANTRY_VNNI_INLINE __m512i fold(__m512i a, __m512i b, __m512i lo, __m512i hi) {
  return _mm512_add_epi32(_mm512_permutex2var_epi32(a, lo, b), _mm512_permutex2var_epi32(a, hi, b));
}

// 16 rows [r, r + 16) (clamped to r1 - 1: the extra lanes are computed and dropped) x token t.
template <TensorType kType>
GANTRY_VNNI_INLINE void tile16(const WeightView &w, const Activations &a, int64_t r, int64_t r1,
                               int64_t t, float *y, int64_t ldy) {
  const int64_t nb = w.cols / kQK;
  const char *rows[kTileRows];
#pragma GCC unroll 16
  for (int i = 0; i < kTileRows; ++i) {
    const int64_t ri = std::min(r + i, r1 - 1);
    rows[i] = static_cast<const char *>(w.row(ri));
  }
  // Prefetch the next tile (clamped to the last row, a harmless repeat at the end).
  const char *next = static_cast<const char *>(w.row(std::min(r + kTileRows, r1 - 1)));
  const int64_t next_rows = std::max<int64_t>(0, std::min<int64_t>(kTileRows, r1 - r - kTileRows));
  const int64_t next_bytes = next_rows * static_cast<int64_t>(w.row_stride);
  // Cache lines of the next tile per block step, rounded up: the next tile arrives as this one
  // ends.
  const int64_t pf_per_block = (next_bytes + nb * 64 - 1) / (nb * 64);

  const int8_t *xq = a.qs + t * w.cols;
  const float *xd = a.d + t * nb;
  const int32_t *xs = a.sum8 + (t / kTokGroup) * nb * kTokGroup + t % kTokGroup;
  const __m512i l1lo = _mm512_setr_epi32(0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27);
  const __m512i l1hi = _mm512_add_epi32(l1lo, _mm512_set1_epi32(4));
  const __m512i l2lo = _mm512_setr_epi32(0, 1, 4, 5, 8, 9, 12, 13, 16, 17, 20, 21, 24, 25, 28, 29);
  const __m512i l2hi = _mm512_add_epi32(l2lo, _mm512_set1_epi32(2));
  const __m512i l3lo = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i l3hi = _mm512_add_epi32(l3lo, _mm512_set1_epi32(1));
  __m512 acc = _mm512_setzero_ps();
  int64_t pf = 0;
  for (int64_t b = 0; b < nb; ++b) {
    const size_t at = static_cast<size_t>(b) * kBlockBytes<kType>;
    for (int64_t k = 0; k < pf_per_block; ++k, pf += 64) {
      if (pf < next_bytes)
        _mm_prefetch(next + pf, _MM_HINT_T0);
    }
    const __m512i xx =
        _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(xq + b * kQK)));
    __m512i p[8];
#pragma GCC unroll 8
    for (int i = 0; i < 8; ++i) {
      p[i] = _mm512_dpbusd_epi32(_mm512_setzero_si512(),
                                 unsigned_pair<kType>(rows[2 * i] + at, rows[2 * i + 1] + at), xx);
    }
    const __m512i q0 = fold(p[0], p[1], l1lo, l1hi), q1 = fold(p[2], p[3], l1lo, l1hi);
    const __m512i q2 = fold(p[4], p[5], l1lo, l1hi), q3 = fold(p[6], p[7], l1lo, l1hi);
    const __m512i o0 = fold(q0, q1, l2lo, l2hi), o1 = fold(q2, q3, l2lo, l2hi);
    __m512i isum = fold(o0, o1, l3lo, l3hi);
    isum = _mm512_sub_epi32(isum, _mm512_set1_epi32(xs[b * kTokGroup] << kOffsetShift<kType>));
    // d is the first member of both block types; each load reads it with the first two quants.
    const __m512i dw = load_dwords16(rows, at);
    const __m512 scale =
        _mm512_mul_ps(_mm512_cvtph_ps(_mm512_cvtepi32_epi16(dw)), _mm512_set1_ps(xd[b]));
    acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), scale, acc);
  }
  alignas(64) float out[kTileRows];
  _mm512_store_ps(out, acc);
  const int64_t n = std::min<int64_t>(kTileRows, r1 - r);
  for (int64_t i = 0; i < n; ++i)
    y[t * ldy + r + i] = out[i];
}

template <TensorType kType>
GANTRY_VNNI void gemv_q8(const WeightView &w, const Activations &a, int64_t t0, int64_t t1,
                         int64_t r0, int64_t r1, float *y, int64_t ldy) {
  for (int64_t r = r0; r < r1; r += kTileRows) {
    for (int64_t t = t0; t < t1; ++t)
      tile16<kType>(w, a, r, r1, t, y, ldy);
  }
}

// ---- packed 32-element block types (kernels.h, "repacked weights") ------------------------------
//
// A 16-row group is one stream: per block, 16 fp16 scales (Q4_1/Q5_1: and 16 mins, after all the
// group's scales), then 8 (Q8_0) or 4 (the 4-bit types; Q5_0/Q5_1 first a chunk of their fifth
// bits) 64-byte chunks, each holding 4 bytes of every row, so one vpdpbusd against the token's 4
// activation bytes broadcast leaves every row's partial sum in its own lane: no folding of
// partial sums, and T tokens share each weight load. The weights are made unsigned as the
// row-major kernels make them (u = w + offset; Q8_0 is stored so), lane i of a token's result is
// row 16g + i's exact block sum less offset x the token's block sum, then
// acc = fma(float(isum), d_w * d_x, acc), and for Q4_1/Q5_1 accm = fma(m_w, d_x * sum_x, accm),
// as in the row-major tiles: their bits.

// A chunk's nibbles (elements bit0..bit0 + 3 of every row) made unsigned (rows_inl.h): Q5_0's
// and Q5_1's fifth bits are bits bit0 + i of the row's qh dword for byte i.
template <TensorType kType>
GANTRY_VNNI_INLINE __m512i packed_nibbles(__m512i nib, __m512i qh, int bit0) {
  if constexpr (kType == TensorType::kIQ4_NL) {
    (void)qh;
    (void)bit0;
    return iq4nl_unsigned(nib);
  } else if constexpr (block_fifth_bit(kType)) {
    return add_fifth_bits(nib, qh, bit0 / 8, _mm512_set1_epi32(0x08040201 << (bit0 % 8)));
  } else {
    (void)qh;
    (void)bit0;
    return nib;
  }
}

template <TensorType kType, int T>
GANTRY_VNNI_INLINE void group_packed(const WeightView &w, const Activations &a, int64_t g,
                                     int64_t t0, float *y, int64_t ldy) {
  const int64_t nb = w.cols / kQK;
  constexpr int64_t kQuantBytes = packed_block_chunks(kType) * 64;
  const char *group =
      static_cast<const char *>(w.data) + static_cast<size_t>(g) * kTileRows * w.row_stride;
  const char *mins = group + nb * 32;
  const char *quants = group + packed_quants_at(kType, nb);
  NextGroupPrefetch prefetch(w, g, nb);
  const int8_t *xq[T];
  const float *xd[T];
  const int32_t *xs[T];
  __m512 acc[T], accm[block_has_min(kType) ? T : 1];
#pragma GCC unroll 8
  for (int j = 0; j < T; ++j) {
    const int64_t t = t0 + j;
    xq[j] = a.qs + t * w.cols;
    xd[j] = a.d + t * nb;
    xs[j] = a.sum8 + (t / kTokGroup) * nb * kTokGroup + t % kTokGroup;
    acc[j] = _mm512_setzero_ps();
    if constexpr (block_has_min(kType))
      accm[j] = _mm512_setzero_ps();
  }
  for (int64_t b = 0; b < nb; ++b) {
    prefetch.step();
    const char *qb = quants + b * kQuantBytes;
    // With few tokens, two chains of vpdpbusd per token (even and odd chunks; the 4-bit types'
    // low and high nibbles), so that a block's 8 products are not one dependent chain of 8
    // latencies; 4 or more tokens are independent chains enough (and need the registers).
    constexpr bool kTwo = T < 4;
    __m512i isum[T], isum2[kTwo ? T : 1];
#pragma GCC unroll 8
    for (int j = 0; j < T; ++j) {
      if constexpr (block_has_min(kType))
        isum[j] = _mm512_setzero_si512();
      else
        isum[j] = _mm512_set1_epi32(-(xs[j][b * kTokGroup] << kOffsetShift<kType>));
      if constexpr (kTwo)
        isum2[j] = _mm512_setzero_si512();
    }
    if constexpr (kType == TensorType::kQ8_0) {
#pragma GCC unroll 8
      for (int k = 0; k < 8; ++k) {
        const __m512i u = _mm512_loadu_si512(qb + 64 * k);
#pragma GCC unroll 8
        for (int j = 0; j < T; ++j) {
          const int8_t *x4 = xq[j] + b * kQK + 4 * k;
          if (!kTwo || k % 2 == 0)
            isum[j] = dpbusd_x4(isum[j], u, x4);
          else
            isum2[kTwo ? j : 0] = dpbusd_x4(isum2[kTwo ? j : 0], u, x4);
        }
      }
    } else {
      const char *nibbles = qb + (block_fifth_bit(kType) ? 64 : 0);
      const __m512i qh = block_fifth_bit(kType) ? _mm512_loadu_si512(qb) : _mm512_setzero_si512();
#pragma GCC unroll 8
      for (int k = 0; k < 4; ++k) {
        const __m512i v = _mm512_loadu_si512(nibbles + 64 * k);
        const __m512i lo =
            packed_nibbles<kType>(_mm512_and_si512(v, _mm512_set1_epi8(0x0F)), qh, 4 * k);
        const __m512i hi = packed_nibbles<kType>(
            _mm512_and_si512(_mm512_srli_epi16(v, 4), _mm512_set1_epi8(0x0F)), qh, 16 + 4 * k);
#pragma GCC unroll 8
        for (int j = 0; j < T; ++j) {
          const int8_t *xl = xq[j] + b * kQK + 4 * k, *xh = xl + 16;
          isum[j] = dpbusd_x4(isum[j], lo, xl);
          if constexpr (kTwo)
            isum2[j] = dpbusd_x4(isum2[j], hi, xh);
          else
            isum[j] = dpbusd_x4(isum[j], hi, xh);
        }
      }
    }
    if constexpr (kTwo) {
#pragma GCC unroll 8
      for (int j = 0; j < T; ++j)
        isum[j] = _mm512_add_epi32(isum[j], isum2[j]);
    }
    const __m512 dw = _mm512_cvtph_ps(
        _mm256_loadu_si256(reinterpret_cast<const __m256i *>(group + b * kTileRows * 2)));
#pragma GCC unroll 8
    for (int j = 0; j < T; ++j) {
      const __m512 scale = _mm512_mul_ps(dw, _mm512_set1_ps(xd[j][b]));
      acc[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[j]), scale, acc[j]);
    }
    if constexpr (block_has_min(kType)) {
      const __m512 mw = _mm512_cvtph_ps(
          _mm256_loadu_si256(reinterpret_cast<const __m256i *>(mins + b * kTileRows * 2)));
#pragma GCC unroll 8
      for (int j = 0; j < T; ++j) {
        const float sx = xd[j][b] * static_cast<float>(xs[j][b * kTokGroup]);
        accm[j] = _mm512_fmadd_ps(mw, _mm512_set1_ps(sx), accm[j]);
      }
    }
  }
#pragma GCC unroll 8
  for (int j = 0; j < T; ++j) {
    __m512 out = acc[j];
    if constexpr (block_has_min(kType))
      out = _mm512_add_ps(acc[j], accm[j]);
    _mm512_storeu_ps(y + (t0 + j) * ldy + g * kTileRows, out);
  }
}

// One group_packed pass of T tokens from t (token_passes).
template <TensorType kType> struct PackedPass {
  const WeightView &w;
  const Activations &a;
  int64_t g;
  float *y;
  int64_t ldy;
  template <int T> GANTRY_VNNI_INLINE void run(int64_t t) {
    group_packed<kType, T>(w, a, g, t, y, ldy);
  }
};

// Rows [r0, r1) (whole 16-row groups) x tokens [t0, t1), up to 8 tokens per pass over a group:
// decode of one sequence and batched decode steps (8 sequences: one token each). Unlike the
// prefill tiles, nothing is unpacked first, which at 8 tokens would cost as much as the products.
template <TensorType kType>
GANTRY_VNNI void gemv_packed(const WeightView &w, const Activations &a, int64_t t0, int64_t t1,
                             int64_t r0, int64_t r1, float *y, int64_t ldy) {
  for (int64_t g = r0 / kTileRows; g < r1 / kTileRows; ++g) {
    PackedPass<kType> pass{w, a, g, y, ldy};
    token_passes<8>(t0, t1, pass);
  }
}

// ---- float weights ----------------------------------------------------------------------------

#include "engine/kernels/kernels_avx512_float_inl.h"

constexpr int kFloatRows = 8; // 4 pairs: 4 accumulators, 4 weight vectors in flight

// Rows [r, r + 8) x token t, cols a multiple of 8; prefetches the next 8 rows.
template <TensorType kType>
GANTRY_VNNI_INLINE void tile_float8(const WeightView &w, const Activations &a, int64_t r,
                                    int64_t r1, int64_t t, float *y, int64_t ldy) {
  const int64_t n = w.cols;
  const char *rows[kFloatRows];
#pragma GCC unroll 8
  for (int i = 0; i < kFloatRows; ++i)
    rows[i] = static_cast<const char *>(w.row(r + i));
  const char *next = static_cast<const char *>(w.row(std::min(r + kFloatRows, r1 - 1)));
  const int64_t next_bytes =
      std::max<int64_t>(0, std::min<int64_t>(kFloatRows, r1 - r - kFloatRows)) *
      static_cast<int64_t>(w.row_stride);
  constexpr int64_t kElem = kType == TensorType::kF32 ? 4 : 2;
  // One step reads 8 columns of 8 rows: 64 * kElem bytes, so prefetch kElem lines per step.
  const float *x = a.x + t * n;
  __m512 acc[4];
#pragma GCC unroll 4
  for (int p = 0; p < 4; ++p)
    acc[p] = _mm512_setzero_ps();
  int64_t pf = 0;
  for (int64_t k = 0; k < n; k += 8) {
#pragma GCC unroll 4
    for (int64_t j = 0; j < kElem; ++j, pf += 64) {
      if (pf < next_bytes)
        _mm_prefetch(next + pf, _MM_HINT_T0);
    }
    const __m512 xv =
        _mm512_castpd_ps(_mm512_broadcast_f64x4(_mm256_castps_pd(_mm256_loadu_ps(x + k))));
#pragma GCC unroll 4
    for (int p = 0; p < 4; ++p)
      acc[p] = _mm512_fmadd_ps(load8x2<kType>(rows[2 * p], rows[2 * p + 1], k), xv, acc[p]);
  }
#pragma GCC unroll 4
  for (int p = 0; p < 4; ++p) {
    float *yt = y + t * ldy + r + 2 * p;
    yt[0] = hsum8(_mm512_castps512_ps256(acc[p]));
    yt[1] = hsum8(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(acc[p]), 1)));
  }
}

// Group g (16 rows) of a packed F16/BF16 matrix x token t: a column step of the 16 rows is 256
// contiguous bytes, one row pair per 32, so the group is one stream; each pair accumulates and
// reduces exactly as tile_float8 does.
template <TensorType kType>
GANTRY_VNNI_INLINE void group_float_packed(const WeightView &w, const Activations &a, int64_t g,
                                           int64_t t, float *y, int64_t ldy) {
  const int64_t n = w.cols;
  const char *group = packed_pair(w, g * 16);
  NextGroupPrefetch prefetch(w, g, n / 8);
  const float *x = a.x + t * n;
  __m512 acc[8];
#pragma GCC unroll 8
  for (int p = 0; p < 8; ++p)
    acc[p] = _mm512_setzero_ps();
  for (int64_t k = 0; k < n; k += 8) {
    prefetch.step(); // a step reads 256 bytes, 4 lines of the next group
    const __m512 xv =
        _mm512_castpd_ps(_mm512_broadcast_f64x4(_mm256_castps_pd(_mm256_loadu_ps(x + k))));
    const char *step = group + k * 32;
#pragma GCC unroll 8
    for (int p = 0; p < 8; ++p)
      acc[p] = _mm512_fmadd_ps(load8x2_packed<kType>(step + 32 * p), xv, acc[p]);
  }
#pragma GCC unroll 8
  for (int p = 0; p < 8; ++p) {
    float *yt = y + t * ldy + g * 16 + 2 * p;
    yt[0] = hsum8(_mm512_castps512_ps256(acc[p]));
    yt[1] = hsum8(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(acc[p]), 1)));
  }
}

template <TensorType kType>
GANTRY_VNNI void gemv_float(const WeightView &w, const Activations &a, int64_t t0, int64_t t1,
                            int64_t r0, int64_t r1, float *y, int64_t ldy) {
  if constexpr (kType != TensorType::kF32) {
    if (w.packed16) {
      for (int64_t g = r0 / 16; g < r1 / 16; ++g) {
        for (int64_t t = t0; t < t1; ++t)
          group_float_packed<kType>(w, a, g, t, y, ldy);
      }
      return;
    }
  }
  int64_t r = r0;
  for (; r + kFloatRows <= r1; r += kFloatRows) {
    for (int64_t t = t0; t < t1; ++t)
      tile_float8<kType>(w, a, r, r1, t, y, ldy);
  }
  if (r < r1)
    avx2::matmul_rows(w, a, t0, t1, r, r1, y, ldy);
}

// gemv_packed for whichever of kTypes w is; false for the others.
template <TensorType... kTypes>
GANTRY_VNNI bool gemv_packed_of(const WeightView &w, const Activations &a, int64_t t0, int64_t t1,
                                int64_t r0, int64_t r1, float *y, int64_t ldy) {
  return ((w.type == kTypes && (gemv_packed<kTypes>(w, a, t0, t1, r0, r1, y, ldy), true)) || ...);
}

} // namespace

bool matmul_rows_gemv(const WeightView &w, const Activations &a, int64_t t0, int64_t t1, int64_t r0,
                      int64_t r1, float *y, int64_t ldy) {
  if (w.packed16 &&
      gemv_packed_of<TensorType::kQ8_0, TensorType::kQ4_0, TensorType::kQ4_1, TensorType::kQ5_0,
                     TensorType::kQ5_1, TensorType::kIQ4_NL>(w, a, t0, t1, r0, r1, y, ldy))
    return true;
  switch (w.type) {
  case TensorType::kQ8_0: gemv_q8<TensorType::kQ8_0>(w, a, t0, t1, r0, r1, y, ldy); return true;
  case TensorType::kQ4_0: gemv_q8<TensorType::kQ4_0>(w, a, t0, t1, r0, r1, y, ldy); return true;
  case TensorType::kF32:
  case TensorType::kF16:
  case TensorType::kBF16:
    // Two or three tokens: kernels_avx512.cpp's float tiles read each weight once for all.
    if (w.cols % 8 != 0 || t1 - t0 != 1)
      return false;
    if (w.type == TensorType::kF32)
      gemv_float<TensorType::kF32>(w, a, t0, t1, r0, r1, y, ldy);
    else if (w.type == TensorType::kF16)
      gemv_float<TensorType::kF16>(w, a, t0, t1, r0, r1, y, ldy);
    else
      gemv_float<TensorType::kBF16>(w, a, t0, t1, r0, r1, y, ldy);
    return true;
  default: return false;
  }
}

} // namespace gantry::engine::kernels::avx512vnni
