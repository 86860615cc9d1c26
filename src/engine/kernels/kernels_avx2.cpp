// AVX2+FMA+F16C kernels. The project is built without -march flags, so every function here
// carries a target attribute and is only called after detected_isa() saw the features.
//
// Matmul tiles: a micro-kernel computes an R-rows x T-tokens tile of outputs, loading each
// weight block once for T tokens and each activation block once for R rows, so the weights
// stream from memory once per call and the arithmetic per byte loaded grows with the batch.
#include <immintrin.h>

#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstring>
#include <vector>

#include "engine/kernels/kernels_impl.h"

namespace gantry::engine::kernels::avx2 {
namespace {

#include "engine/kernels/kernels_avx2_inl.h"

GANTRY_AVX2_INLINE int hsum_i32(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
  return _mm_cvtsi128_si32(s);
}

// ---- Q8_0 / Q4_0 / Q5_0 / IQ4_NL weights x Q8 activations ------------------------------------
//
// Every output is computed with the same arithmetic whatever the tile shape, thread or batch
// (the server promises that a request gives the same text alone or batched): per 32-block the
// exact int32 dot product, then acc = fma(float(isum), d_w * d_x, acc) over the blocks in order,
// starting from 0. Both kernels below follow it; only which lanes hold which outputs differ.
//
// Q4_0 and Q5_0 weights are used as unsigned u = w + 8 (nibbles) or w + 16 (5 bits), so that
// maddubs takes them directly: sum(u * x) - offset * sum(x) = sum(w * x), with sum(x) per block
// precomputed (Activations::sum8). Q8_0 and IQ4_NL weights (signed bytes; IQ4_NL's from its
// table) use the sign trick: maddubs(|w|, sign(x, w)); |w| <= 128 and |x| <= 127 keep the
// pairwise int16 sums below 32768.

template <TensorType kType>
constexpr size_t kBlockBytes = kType == TensorType::kQ8_0   ? sizeof(BlockQ8_0)
                               : kType == TensorType::kQ5_0 ? sizeof(BlockQ5_0)
                               : kType == TensorType::kQ4_1 ? sizeof(BlockQ4_1)
                               : kType == TensorType::kQ5_1 ? sizeof(BlockQ5_1)
                                                            : sizeof(BlockQ4_0);
static_assert(sizeof(BlockIQ4_NL) == sizeof(BlockQ4_0));

// Signed weights (sign trick) or unsigned ones with an offset: kSigned, kOffset
// (kernels_avx2_inl.h).
// Q4_1/Q5_1: value = d * u + m. Their outputs are acc + accm, acc as above and
// accm = fma(m_w, d_x * float(sum(x)), accm) over the blocks in order.
template <TensorType kType> constexpr bool kHasMin = block_has_min(kType);

// The 32 nibbles of a block as unsigned bytes 0..15, in element order. Both 128-bit lanes get
// the 16 packed bytes; shifting the upper lane's 64-bit words right by 4 brings each byte's high
// nibble down (the bits shifted in are masked off).
GANTRY_AVX2_INLINE __m256i unpack_q4(const uint8_t *qs) {
  const __m256i packed =
      _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i *>(qs)));
  return _mm256_and_si256(_mm256_srlv_epi64(packed, _mm256_setr_epi64x(0, 0, 4, 4)),
                          _mm256_set1_epi8(0x0F));
}

// 0x10 in byte i where bit i of Q5_0's little-endian qh word is set: byte i gets byte i / 8 of
// the word, then keeps only bit i % 8.
GANTRY_AVX2_INLINE __m256i fifth_bits(const uint8_t *qh) {
  uint32_t bits;
  std::memcpy(&bits, qh, sizeof bits);
  const __m256i spread =
      _mm256_shuffle_epi8(_mm256_set1_epi32(static_cast<int>(bits)),
                          _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2,
                                           2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3));
  const __m256i bit = _mm256_set1_epi64x(static_cast<int64_t>(0x8040201008040201ull));
  return _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit),
                          _mm256_set1_epi8(0x10));
}

// A block's 32 weights as bytes in element order: w for the signed types, u for the others.
template <TensorType kType> GANTRY_AVX2_INLINE __m256i block_bytes(const void *blk) {
  if constexpr (kType == TensorType::kQ8_0) {
    return _mm256_loadu_si256(
        reinterpret_cast<const __m256i *>(static_cast<const BlockQ8_0 *>(blk)->qs));
  } else if constexpr (kType == TensorType::kQ4_0) {
    return unpack_q4(static_cast<const BlockQ4_0 *>(blk)->qs);
  } else if constexpr (kType == TensorType::kQ5_0) {
    const auto *b = static_cast<const BlockQ5_0 *>(blk);
    return _mm256_or_si256(unpack_q4(b->qs), fifth_bits(b->qh));
  } else if constexpr (kType == TensorType::kQ4_1) {
    return unpack_q4(static_cast<const BlockQ4_1 *>(blk)->qs);
  } else if constexpr (kType == TensorType::kQ5_1) {
    const auto *b = static_cast<const BlockQ5_1 *>(blk);
    return _mm256_or_si256(unpack_q4(b->qs), fifth_bits(b->qh));
  } else {
    const __m256i table = _mm256_broadcastsi128_si256(
        _mm_loadu_si128(reinterpret_cast<const __m128i *>(kIq4nlValues)));
    return _mm256_shuffle_epi8(table, unpack_q4(static_cast<const BlockIQ4_NL *>(blk)->qs));
  }
}

GANTRY_AVX2_INLINE float block_scale(const void *blk) {
  // d is the first member of every one of these block types.
  return half_to_float(*static_cast<const uint16_t *>(blk));
}

// The fp16 min of a Q4_1/Q5_1 block (their second member).
GANTRY_AVX2_INLINE uint16_t block_min16(const void *blk) {
  uint16_t m;
  std::memcpy(&m, static_cast<const char *>(blk) + 2, sizeof m);
  return m;
}

// One row block against one token block: 8 int32 lanes whose sum is sum(w * x) for the signed
// types, sum(u * x) (before the -offset * sum(x) correction) for the others.
template <TensorType kType> GANTRY_AVX2_INLINE __m256i block_dot(const void *blk, __m256i x) {
  const __m256i ones = _mm256_set1_epi16(1);
  const __m256i wv = block_bytes<kType>(blk);
  if constexpr (kSigned<kType>) {
    return _mm256_madd_epi16(
        _mm256_maddubs_epi16(_mm256_sign_epi8(wv, wv), _mm256_sign_epi8(x, wv)), ones);
  } else {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(wv, x), ones);
  }
}

// Rows [r, min(r + 8, r1)) against one token t: lane i of the accumulator is row r + i. Used for
// decode, where each weight byte is used once and memory bandwidth is the limit.
template <TensorType kType>
GANTRY_AVX2_INLINE void rows8_q8(const WeightView &w, const Activations &a, int64_t r, int64_t r1,
                                 int64_t t, float *y, int64_t ldy) {
  const int64_t nb = w.cols / kQK;
  const char *rows[8];
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i)
    rows[i] = static_cast<const char *>(w.row(std::min(r + i, r1 - 1)));
  const int8_t *xq = a.qs + t * w.cols;
  const float *xd = a.d + t * nb;
  const int32_t *xs = a.sum8 + (t / kTokGroup) * nb * kTokGroup + t % kTokGroup;
  // Prefetch the next 8 rows while these compute (see kernels_avx512_gemv.cpp for why): they are
  // contiguous, next_bytes of them, spread evenly over this tile's blocks.
  const char *next = static_cast<const char *>(w.row(std::min(r + 8, r1 - 1)));
  const int64_t next_bytes =
      std::max<int64_t>(0, std::min<int64_t>(8, r1 - r - 8)) * static_cast<int64_t>(w.row_stride);
  const int64_t pf_step = (next_bytes + nb * 64 - 1) / (nb * 64);
  int64_t pf = 0;
  __m256 acc = _mm256_setzero_ps(), accm = _mm256_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    for (int64_t k = 0; k < pf_step; ++k, pf += 64) {
      if (pf < next_bytes)
        _mm_prefetch(next + pf, _MM_HINT_T0);
    }
    const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(xq + b * kQK));
    __m256i m[8];
    alignas(16) uint16_t m16[8];
    // The 8 rows' fp16 scales, gathered through memory: _mm_insert_epi16 needs a constant lane
    // and would only compile where the loop happens to be unrolled (not at -O0).
    alignas(16) uint16_t d16[8];
#pragma GCC unroll 8
    for (int i = 0; i < 8; ++i) {
      const char *blk = rows[i] + b * kBlockBytes<kType>;
      m[i] = block_dot<kType>(blk, xv);
      std::memcpy(&d16[i], blk, sizeof(uint16_t));
      if constexpr (kHasMin<kType>)
        m16[i] = block_min16(blk);
    }
    const __m128i dh = _mm_load_si128(reinterpret_cast<const __m128i *>(d16));
    __m256i isum = hsum8_i32(m);
    if constexpr (kOffset<kType> != 0)
      isum = _mm256_sub_epi32(isum, _mm256_set1_epi32(kOffset<kType> * xs[b * kTokGroup]));
    const __m256 scale = _mm256_mul_ps(_mm256_cvtph_ps(dh), _mm256_set1_ps(xd[b]));
    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), scale, acc);
    if constexpr (kHasMin<kType>) {
      const __m256 mins = _mm256_cvtph_ps(_mm_load_si128(reinterpret_cast<const __m128i *>(m16)));
      accm = _mm256_fmadd_ps(mins, _mm256_set1_ps(xd[b] * static_cast<float>(xs[b * kTokGroup])),
                             accm);
    }
  }
  alignas(32) float out[8];
  _mm256_store_ps(out, _mm256_add_ps(acc, accm));
  for (int64_t i = 0; i < std::min<int64_t>(8, r1 - r); ++i)
    y[t * ldy + r + i] = out[i];
}

// R weight rows unpacked once for all the token groups they meet: per row `cols` bytes of |w|
// (signed types) or u (the others), then for the signed types `cols` bytes of w; and the float
// block scales.
template <int R> struct RowTile {
  const int8_t *q[R];
  const int8_t *sgn[R];
  const float *d[R];
  const float *m[R]; // Q4_1/Q5_1 block mins
};

template <TensorType kType, int R>
GANTRY_AVX2_INLINE RowTile<R> unpack_rows(const WeightView &w, int64_t r, int8_t *qbuf,
                                          float *dbuf) {
  const int64_t nb = w.cols / kQK;
  const int64_t stride = kSigned<kType> ? 2 * w.cols : w.cols;
  RowTile<R> tile;
  for (int i = 0; i < R; ++i) {
    const char *row = static_cast<const char *>(w.row(r + i));
    int8_t *q = qbuf + i * stride;
    float *d = dbuf + i * nb;
    tile.q[i] = q;
    tile.sgn[i] = q + w.cols;
    tile.d[i] = d;
    tile.m[i] = dbuf + (R + i) * nb;
    for (int64_t b = 0; b < nb; ++b) {
      const char *blk = row + b * kBlockBytes<kType>;
      d[b] = block_scale(blk);
      if constexpr (kHasMin<kType>)
        dbuf[(R + i) * nb + b] = half_to_float(block_min16(blk));
      const __m256i wv = block_bytes<kType>(blk);
      if constexpr (kSigned<kType>) {
        _mm256_storeu_si256(reinterpret_cast<__m256i *>(q + b * kQK), _mm256_sign_epi8(wv, wv));
        _mm256_storeu_si256(reinterpret_cast<__m256i *>(q + w.cols + b * kQK), wv);
      } else {
        _mm256_storeu_si256(reinterpret_cast<__m256i *>(q + b * kQK), wv);
      }
    }
  }
  return tile;
}

// R unpacked rows against the 8 tokens of group g, storing only tokens in [t0, t1): lane j of
// acc[i] is row r + i, token 8g + j. Each step broadcasts 4 weights of a row and multiplies them
// with the same 4 elements of all 8 tokens (one 32-byte load of the interleaved activations).
template <TensorType kType, int R>
GANTRY_AVX2_INLINE void tile_q8_group(const RowTile<R> &rt, const Activations &a, int64_t cols,
                                      int64_t r, int64_t g, int64_t t0, int64_t t1, float *y,
                                      int64_t ldy) {
  const int64_t nb = cols / kQK;
  const int8_t *xg = a.qs8 + g * nb * kTokGroup * kQK;
  const float *dg = a.d8 + g * nb * kTokGroup;
  const int32_t *sg = a.sum8 + g * nb * kTokGroup;
  const __m256i ones = _mm256_set1_epi16(1);
  __m256 acc[R], accm[R];
#pragma GCC unroll 4
  for (int i = 0; i < R; ++i) {
    acc[i] = _mm256_setzero_ps();
    accm[i] = _mm256_setzero_ps();
  }
  for (int64_t b = 0; b < nb; ++b) {
    const int8_t *xb = xg + b * kTokGroup * kQK;
    __m256i sum[R];
#pragma GCC unroll 4
    for (int i = 0; i < R; ++i)
      sum[i] = _mm256_setzero_si256();
#pragma GCC unroll 8
    for (int k = 0; k < kQK / 4; ++k) {
      const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(xb + k * 32));
#pragma GCC unroll 4
      for (int i = 0; i < R; ++i) {
        const __m256i wb = broadcast4(rt.q[i] + b * kQK + 4 * k);
        if constexpr (kSigned<kType>) {
          const __m256i ws = broadcast4(rt.sgn[i] + b * kQK + 4 * k);
          const __m256i p = _mm256_maddubs_epi16(wb, _mm256_sign_epi8(x, ws));
          sum[i] = _mm256_add_epi32(sum[i], _mm256_madd_epi16(p, ones));
        } else if constexpr (kType == TensorType::kQ4_0 || kType == TensorType::kQ4_1) {
          // int16 is enough: 8 steps of 2 * 15 * 127.
          sum[i] = _mm256_add_epi16(sum[i], _mm256_maddubs_epi16(wb, x));
        } else {
          // Q5_0/Q5_1's u up to 31 would overflow int16 over 8 steps: widen at each.
          sum[i] = _mm256_add_epi32(sum[i], _mm256_madd_epi16(_mm256_maddubs_epi16(wb, x), ones));
        }
      }
    }
    const __m256 dx = _mm256_loadu_ps(dg + b * kTokGroup);
    __m256i corr = _mm256_setzero_si256();
    if constexpr (kOffset<kType> != 0) {
      // The offsets are 8 and 16: a shift.
      corr = _mm256_slli_epi32(
          _mm256_loadu_si256(reinterpret_cast<const __m256i *>(sg + b * kTokGroup)),
          kOffset<kType> == 8 ? 3 : 4);
    }
#pragma GCC unroll 4
    for (int i = 0; i < R; ++i) {
      __m256i isum = sum[i];
      if constexpr (kType == TensorType::kQ4_0 || kType == TensorType::kQ4_1)
        isum = _mm256_madd_epi16(isum, ones);
      if constexpr (kOffset<kType> != 0)
        isum = _mm256_sub_epi32(isum, corr);
      const __m256 scale = _mm256_mul_ps(_mm256_broadcast_ss(rt.d[i] + b), dx);
      acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), scale, acc[i]);
    }
    if constexpr (kHasMin<kType>) {
      const __m256 xsum =
          _mm256_mul_ps(dx, _mm256_cvtepi32_ps(_mm256_loadu_si256(
                                reinterpret_cast<const __m256i *>(sg + b * kTokGroup))));
#pragma GCC unroll 4
      for (int i = 0; i < R; ++i)
        accm[i] = _mm256_fmadd_ps(_mm256_broadcast_ss(rt.m[i] + b), xsum, accm[i]);
    }
  }
  const int64_t j0 = std::max<int64_t>(t0 - g * kTokGroup, 0);
  const int64_t j1 = std::min<int64_t>(t1 - g * kTokGroup, kTokGroup);
#pragma GCC unroll 4
  for (int i = 0; i < R; ++i) {
    alignas(32) float out[kTokGroup];
    _mm256_store_ps(out, _mm256_add_ps(acc[i], accm[i]));
    for (int64_t j = j0; j < j1; ++j)
      y[(g * kTokGroup + j) * ldy + r + i] = out[j];
  }
}

// Scratch of the unpacked rows, per thread (pool workers run matmul_rows concurrently).
struct UnpackScratch {
  std::vector<int8_t> q;
  std::vector<float> d;
};
thread_local UnpackScratch t_unpack;

template <TensorType kType, int R>
GANTRY_AVX2 void rows_q8_groups(const WeightView &w, const Activations &a, int64_t r, int64_t t0,
                                int64_t t1, float *y, int64_t ldy) {
  auto &s = t_unpack;
  const auto need_q = static_cast<size_t>(R * 2 * w.cols);
  const auto need_d = static_cast<size_t>(2 * R * w.cols / kQK); // scales, then mins
  if (s.q.size() < need_q)
    s.q.resize(need_q);
  if (s.d.size() < need_d)
    s.d.resize(need_d);
  const RowTile<R> rt = unpack_rows<kType, R>(w, r, s.q.data(), s.d.data());
  for (int64_t g = t0 / kTokGroup; g * kTokGroup < t1; ++g)
    tile_q8_group<kType, R>(rt, a, w.cols, r, g, t0, t1, y, ldy);
}

// ---- float weights (F32 / F16 / BF16) x float activations -------------------------------------

// An output from its 8 lane sums over columns [0, k) and the columns [k, n) left over. Every
// float kernel ends this way, so that an output has the same bits whichever computed it.
template <TensorType kType>
GANTRY_AVX2_INLINE float finish_float(__m256 acc, const void *row, const float *x, int64_t k,
                                      int64_t n) {
  float s = hsum(acc);
  for (int64_t kk = k; kk < n; ++kk)
    s += load1<kType>(row, kk) * x[kk];
  return s;
}

template <TensorType kType, int R, int T>
GANTRY_AVX2_INLINE void tile_float(const WeightView &w, const Activations &a, int64_t r, int64_t t,
                                   float *y, int64_t ldy) {
  const int64_t n = w.cols;
  const void *rows[R];
#pragma GCC unroll 8
  for (int i = 0; i < R; ++i)
    rows[i] = w.row(r + i);
  const float *x[T];
#pragma GCC unroll 8
  for (int j = 0; j < T; ++j)
    x[j] = a.x + (t + j) * n;
  __m256 acc[R][T];
#pragma GCC unroll 8
  for (int i = 0; i < R; ++i) {
#pragma GCC unroll 8
    for (int j = 0; j < T; ++j)
      acc[i][j] = _mm256_setzero_ps();
  }
  int64_t k = 0;
  for (; k + 8 <= n; k += 8) {
    __m256 wv[R];
#pragma GCC unroll 8
    for (int i = 0; i < R; ++i)
      wv[i] = load8<kType>(rows[i], k);
#pragma GCC unroll 8
    for (int j = 0; j < T; ++j) {
      const __m256 xv = _mm256_loadu_ps(x[j] + k);
#pragma GCC unroll 8
      for (int i = 0; i < R; ++i)
        acc[i][j] = _mm256_fmadd_ps(wv[i], xv, acc[i][j]);
    }
  }
#pragma GCC unroll 8
  for (int i = 0; i < R; ++i) {
#pragma GCC unroll 8
    for (int j = 0; j < T; ++j)
      y[(t + j) * ldy + r + i] = finish_float<kType>(acc[i][j], rows[i], x[j], k, n);
  }
}

// ---- tiling drivers -------------------------------------------------------------------------

// Below this many tokens the 8-token groups would mostly multiply padding.
constexpr int64_t kMinGroupTokens = 4;

template <TensorType kType>
GANTRY_AVX2 void matmul_q8(const WeightView &w, const Activations &a, int64_t t0, int64_t t1,
                           int64_t r0, int64_t r1, float *y, int64_t ldy) {
  if (t1 - t0 < kMinGroupTokens) {
    for (int64_t r = r0; r < r1; r += 8) {
      for (int64_t t = t0; t < t1; ++t)
        rows8_q8<kType>(w, a, r, r1, t, y, ldy);
    }
    return;
  }
  int64_t r = r0;
  for (; r + 4 <= r1; r += 4)
    rows_q8_groups<kType, 4>(w, a, r, t0, t1, y, ldy);
  for (; r < r1; ++r)
    rows_q8_groups<kType, 1>(w, a, r, t0, t1, y, ldy);
}

template <TensorType kType, int R>
GANTRY_AVX2 void rows_float(const WeightView &w, const Activations &a, int64_t t0, int64_t t1,
                            int64_t r, float *y, int64_t ldy) {
  int64_t t = t0;
  for (; t + 4 <= t1; t += 4)
    tile_float<kType, R, 4>(w, a, r, t, y, ldy);
  switch (t1 - t) {
  case 3: tile_float<kType, R, 3>(w, a, r, t, y, ldy); break;
  case 2: tile_float<kType, R, 2>(w, a, r, t, y, ldy); break;
  case 1: tile_float<kType, R, 1>(w, a, r, t, y, ldy); break;
  default: break;
  }
}

// Tiles of 3 rows x 4 tokens: 12 accumulators, 3 weight vectors and one activation vector fill
// the 16 ymm registers without spilling. Decode (one token) takes 4 rows at a time instead.
// F16/BF16 come here only for the row tails the AVX-512 float kernels forward (their order);
// under AVX2 they are kernels_avx2_half.cpp's.
// Every tile shape accumulates an output the same way (8 lanes over the columns, then hsum), so
// the result does not depend on the tiling.
template <TensorType kType>
GANTRY_AVX2 void matmul_float(const WeightView &w, const Activations &a, int64_t t0, int64_t t1,
                              int64_t r0, int64_t r1, float *y, int64_t ldy) {
  int64_t r = r0;
  if (t1 - t0 == 1) {
    for (; r + 4 <= r1; r += 4)
      tile_float<kType, 4, 1>(w, a, r, t0, y, ldy);
  } else {
    for (; r + 3 <= r1; r += 3)
      rows_float<kType, 3>(w, a, t0, t1, r, y, ldy);
  }
  for (; r < r1; ++r)
    rows_float<kType, 1>(w, a, t0, t1, r, y, ldy);
}

// 32 floats -> 32 int8 (rounded to nearest even, like the scalar path's nearbyint).
GANTRY_AVX2_INLINE void quantize32(const float *x, float id, int8_t *out) {
  const __m256 m = _mm256_set1_ps(id);
  __m256i i[4];
#pragma GCC unroll 4
  for (int k = 0; k < 4; ++k) {
    const __m256 v = _mm256_mul_ps(_mm256_loadu_ps(x + 8 * k), m);
    i[k] = _mm256_cvtps_epi32(_mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
  // packs interleave 128-bit lanes; the permute puts the 8 groups of 4 back in order.
  const __m256i p =
      _mm256_packs_epi16(_mm256_packs_epi32(i[0], i[1]), _mm256_packs_epi32(i[2], i[3]));
  const __m256i fixed = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
  _mm256_storeu_si256(reinterpret_cast<__m256i *>(out), fixed);
}

GANTRY_AVX2_INLINE float abs_max(const float *x, int64_t n) {
  const __m256 sign = _mm256_set1_ps(-0.0f);
  __m256 m = _mm256_setzero_ps();
  for (int64_t i = 0; i < n; i += 8)
    m = _mm256_max_ps(m, _mm256_andnot_ps(sign, _mm256_loadu_ps(x + i)));
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

} // namespace

GANTRY_AVX2 void matmul_rows(const WeightView &w, const Activations &a, int64_t t0, int64_t t1,
                             int64_t r0, int64_t r1, float *y, int64_t ldy) {
  if (w.packed16) {
    // matmul.cpp hands packed rows only to calls matmul_rows_packed takes (packed_kernels_take;
    // the AVX-512 kernels read their own packed F16/BF16 groups and forward only row-major tails).
    [[maybe_unused]] const bool done = matmul_rows_packed(w, a, t0, t1, r0, r1, y, ldy);
    assert(done);
    return;
  }
  switch (w.type) {
  case TensorType::kQ8_0: matmul_q8<TensorType::kQ8_0>(w, a, t0, t1, r0, r1, y, ldy); return;
  case TensorType::kQ4_0: matmul_q8<TensorType::kQ4_0>(w, a, t0, t1, r0, r1, y, ldy); return;
  case TensorType::kQ5_0: matmul_q8<TensorType::kQ5_0>(w, a, t0, t1, r0, r1, y, ldy); return;
  case TensorType::kIQ4_NL: matmul_q8<TensorType::kIQ4_NL>(w, a, t0, t1, r0, r1, y, ldy); return;
  case TensorType::kQ4_1: matmul_q8<TensorType::kQ4_1>(w, a, t0, t1, r0, r1, y, ldy); return;
  case TensorType::kQ5_1: matmul_q8<TensorType::kQ5_1>(w, a, t0, t1, r0, r1, y, ldy); return;
  case TensorType::kF32: matmul_float<TensorType::kF32>(w, a, t0, t1, r0, r1, y, ldy); return;
  case TensorType::kF16:
  case TensorType::kBF16:
    // Under AVX2 the column-order outer products (kernels_avx2_half.cpp); the 8-lane dot
    // products below are the AVX-512 float kernels' order, for the row tails they forward here.
    if (active_isa() == Isa::kAvx2) {
      [[maybe_unused]] const bool done = matmul_rows_half(w, a, t0, t1, r0, r1, y, ldy);
      assert(done);
    } else if (w.type == TensorType::kF16) {
      matmul_float<TensorType::kF16>(w, a, t0, t1, r0, r1, y, ldy);
    } else {
      matmul_float<TensorType::kBF16>(w, a, t0, t1, r0, r1, y, ldy);
    }
    return;
  default:
    // The K-quants: prefill tiles (kernels_avx2_ktiles.cpp), else the dot products
    // (kernels_avx2_quants.cpp).
    if (!matmul_rows_k_tiles(w, a, t0, t1, r0, r1, y, ldy))
      matmul_rows_quants(w, a, t0, t1, r0, r1, y, ldy);
    return;
  }
}

GANTRY_AVX2 void quantize_act_q8(const float *x, int8_t *qs, float *d, int64_t n) {
  for (int64_t b = 0; b < n / kQK; ++b, x += kQK, qs += kQK) {
    const float amax = abs_max(x, kQK);
    d[b] = amax / 127.0f;
    quantize32(x, amax != 0 ? 127.0f / amax : 0.0f, qs);
  }
}

GANTRY_AVX2 void quantize_act_q8k(const float *x, int8_t *qs, float *d, int16_t *bsums, int64_t n) {
  for (int64_t b = 0; b < n / kQKK; ++b, x += kQKK, qs += kQKK) {
    const float amax = abs_max(x, kQKK);
    d[b] = amax / 127.0f;
    const float id = amax != 0 ? 127.0f / amax : 0.0f;
    for (int k = 0; k < kQKK; k += 32)
      quantize32(x + k, id, qs + k);
    for (int g = 0; g < kQKK / 16; ++g) {
      // Sum 16 int8 via widening to int16 and a pairwise multiply-add by 1.
      const __m256i v =
          _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i *>(qs + 16 * g)));
      *bsums++ = static_cast<int16_t>(hsum_i32(_mm256_madd_epi16(v, _mm256_set1_epi16(1))));
    }
  }
}

GANTRY_AVX2 void fp16_to_fp32_row(const uint16_t *src, float *dst, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(dst + i,
                     _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i *>(src + i))));
  }
  for (; i < n; ++i)
    dst[i] = half_to_float(src[i]);
}

GANTRY_AVX2 void fp32_to_fp16_row(const float *src, uint16_t *dst, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm_storeu_si128(reinterpret_cast<__m128i *>(dst + i),
                     _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
  }
  for (; i < n; ++i)
    dst[i] = kernels::fp32_to_fp16(src[i]);
}

// Loads of 8 and of 1 element from float or fp16 rows; fp16 -> fp32 is exact, so a kernel
// written once over these gives the same bits on a row and on its fp16 copy.
GANTRY_AVX2_INLINE __m256 load8f(const float *p) { return _mm256_loadu_ps(p); }
GANTRY_AVX2_INLINE __m256 load8f(const uint16_t *p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i *>(p)));
}
GANTRY_AVX2_INLINE float load1f(const float *p) { return *p; }
GANTRY_AVX2_INLINE float load1f(const uint16_t *p) { return _cvtsh_ss(*p); }

template <typename T> GANTRY_AVX2_INLINE float dot_any(const float *a, const T *b, int64_t n) {
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), load8f(b + i), s0);
    s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), load8f(b + i + 8), s1);
  }
  for (; i + 8 <= n; i += 8)
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), load8f(b + i), s0);
  float s = hsum(_mm256_add_ps(s0, s1));
  for (; i < n; ++i)
    s += a[i] * load1f(b + i);
  return s;
}

template <typename T> GANTRY_AVX2_INLINE void axpy_any(float a, const T *x, float *y, int64_t n) {
  const __m256 va = _mm256_set1_ps(a);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, load8f(x + i), _mm256_loadu_ps(y + i)));
  }
  for (; i < n; ++i)
    y[i] += a * load1f(x + i);
}

GANTRY_AVX2 float dot_f32(const float *a, const float *b, int64_t n) { return dot_any(a, b, n); }

// softmax is left to the scalar code (libm's expf): a small share of a token's time next to the
// matmuls.
void softmax(float *x, int64_t n) { scalar::softmax(x, n); }

GANTRY_AVX2 void add(const float *a, const float *b, float *out, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(out + i, _mm256_add_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i)));
  }
  for (; i < n; ++i)
    out[i] = a[i] + b[i];
}

GANTRY_AVX2 void scale(float *x, float s, int64_t n) {
  const __m256 v = _mm256_set1_ps(s);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), v));
  for (; i < n; ++i)
    x[i] *= s;
}

GANTRY_AVX2 void axpy(float a, const float *x, float *y, int64_t n) { axpy_any(a, x, y, n); }

GANTRY_AVX2 void dot_rows(const float *q, const float *rows, int64_t stride, int64_t n_rows,
                          int64_t n, float scale, float *out) {
  for (int64_t r = 0; r < n_rows; ++r)
    out[r] = dot_any(q, rows + r * stride, n) * scale;
}

GANTRY_AVX2 void axpy_rows(const float *w, const float *rows, int64_t stride, int64_t n_rows,
                           int64_t n, float *y) {
  for (int64_t r = 0; r < n_rows; ++r)
    axpy_any(w[r], rows + r * stride, y, n);
}

GANTRY_AVX2 void dot_rows(const float *q, const uint16_t *rows, int64_t stride, int64_t n_rows,
                          int64_t n, float scale, float *out) {
  for (int64_t r = 0; r < n_rows; ++r)
    out[r] = dot_any(q, rows + r * stride, n) * scale;
}

GANTRY_AVX2 void axpy_rows(const float *w, const uint16_t *rows, int64_t stride, int64_t n_rows,
                           int64_t n, float *y) {
  for (int64_t r = 0; r < n_rows; ++r)
    axpy_any(w[r], rows + r * stride, y, n);
}

GANTRY_AVX2_INLINE __m256 load8h(const uint16_t *p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i *>(p)));
}
GANTRY_AVX2_INLINE void store8h(uint16_t *p, __m256 v) {
  _mm_storeu_si128(reinterpret_cast<__m128i *>(p), _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
}

GANTRY_AVX2_INLINE __m256 round16(__m256 x) {
  return _mm256_cvtph_ps(_mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT));
}

// ---- expf, glibc's bits (kernels_avx512_attend.cpp exp16 explains the steps) ---------------

// 4 lanes through glibc's double steps.
GANTRY_AVX2_INLINE __m128 exp4(__m128 x, const long long *tab) {
  const __m256d xd = _mm256_cvtps_pd(x);
  const __m256d shift = _mm256_set1_pd(0x1.8p+52);
  const __m256d inv_ln2 = _mm256_set1_pd(0x1.71547652b82fep+5); // 32 / ln 2
  const __m256d z = _mm256_fmadd_pd(inv_ln2, xd, shift);
  const __m256i ki = _mm256_castpd_si256(z);
  const __m256d kd = _mm256_sub_pd(z, shift);
  const __m256d r = _mm256_fmsub_pd(inv_ln2, xd, kd);
  const __m256i idx = _mm256_and_si256(ki, _mm256_set1_epi64x(31));
  const __m256i t = _mm256_i64gather_epi64(tab, idx, 8);
  const __m256d s = _mm256_castsi256_pd(_mm256_add_epi64(t, _mm256_slli_epi64(ki, 47)));
  const __m256d c = _mm256_fmadd_pd(r, _mm256_set1_pd(0x1.c6af84b912394p-20),
                                    _mm256_set1_pd(0x1.ebfce50fac4f3p-13));
  const __m256d r2 = _mm256_mul_pd(r, r);
  const __m256d y = _mm256_fmadd_pd(r, _mm256_set1_pd(0x1.62e42ff0c52d6p-6), _mm256_set1_pd(1.0));
  return _mm256_cvtpd_ps(_mm256_mul_pd(_mm256_fmadd_pd(c, r2, y), s));
}

GANTRY_AVX2_INLINE __m256 exp8(__m256 x, const long long *tab) {
  __m256 y =
      _mm256_set_m128(exp4(_mm256_extractf128_ps(x, 1), tab), exp4(_mm256_castps256_ps128(x), tab));
  // glibc's own path for |x| >= 88.0f and non-finite x (its top 12 bits' test; they are at most
  // 0x7ff, so the signed compare is the unsigned one).
  const __m256i top =
      _mm256_and_si256(_mm256_srli_epi32(_mm256_castps_si256(x), 20), _mm256_set1_epi32(0x7ff));
  const int special =
      _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(top, _mm256_set1_epi32(0x42a))));
  if (special != 0) [[unlikely]] {
    alignas(32) float xs[8], ys[8];
    _mm256_store_ps(xs, x);
    _mm256_store_ps(ys, y);
    exp_special_lanes(static_cast<unsigned>(special), xs, ys, 8);
    y = _mm256_load_ps(ys);
  }
  return y;
}

// attend_weights (kernels_impl.h) with the exponentials 8 rows at a time, as the AVX-512
// attend_weights16: the running max before each row first, then the rows' weights, then the
// running sums in order (the serial loops over the heads innermost: n_q independent chains).
// rescaled[r]: whether any head's accumulator is rescaled at row r (rare after the first rows).
GANTRY_AVX2_INLINE void attend_weights8(const float *s, int64_t s_stride, int n_q, int64_t nr,
                                        float *m, float *sum, float (*ms)[kAttendChunk],
                                        float (*vs)[kAttendChunk], bool *rescaled) {
  alignas(32) float before[64][kAttendChunk];
  float mx[64], sm[64]; // local: m and sum might alias s for all the compiler knows
  std::copy(m, m + n_q, mx);
  std::copy(sum, sum + n_q, sm);
  for (int64_t r = 0; r < nr; ++r) {
    bool any = false;
    for (int h = 0; h < n_q; ++h) {
      before[h][r] = mx[h];
      const float x = s[h * s_stride + r];
      if (x > mx[h]) {
        mx[h] = x;
        any = true;
      }
    }
    rescaled[r] = any;
  }
  std::copy(mx, mx + n_q, m);
  const auto *tab = reinterpret_cast<const long long *>(exp_table().t);
  const __m256 one = _mm256_set1_ps(1.0f);
  for (int64_t r0 = 0; r0 < nr; r0 += 8) {
    const int live = static_cast<int>(std::min<int64_t>(8, nr - r0));
    const __m256i mask =
        _mm256_cmpgt_epi32(_mm256_set1_epi32(live), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    for (int h = 0; h < n_q; ++h) {
      const __m256 sv = _mm256_maskload_ps(s + h * s_stride + r0, mask);
      const __m256 pv = _mm256_load_ps(before[h] + r0);
      const __m256 up = _mm256_cmp_ps(sv, pv, _CMP_GT_OQ);
      // up: exp(max - score) rescales, the row weighs 1; else the row weighs exp(score - max).
      const __m256 e =
          exp8(_mm256_blendv_ps(_mm256_sub_ps(sv, pv), _mm256_sub_ps(pv, sv), up), tab);
      _mm256_store_ps(ms[h] + r0, _mm256_blendv_ps(one, e, up));
      _mm256_store_ps(vs[h] + r0, _mm256_blendv_ps(e, one, up));
    }
  }
  for (int64_t r = 0; r < nr; ++r) {
    for (int h = 0; h < n_q; ++h)
      sm[h] = std::fma(sm[h], ms[h][r], vs[h][r]);
  }
  std::copy(sm, sm + n_q, sum);
}

// 8 lanes of NH heads (accumulators n apart) over nr rows, kept in registers.
template <int NH>
GANTRY_AVX2_INLINE void attend_lanes(const float (*ms)[16], const float (*vs)[16],
                                     const bool *rescaled, const uint16_t *v0, int64_t stride,
                                     int64_t nr, uint16_t *acc, int64_t n) {
  __m256 a[NH];
#pragma GCC unroll 8
  for (int k = 0; k < NH; ++k)
    a[k] = load8h(acc + k * n);
  for (int64_t r = 0; r < nr; ++r) {
    const __m256 v = load8h(v0 + r * stride);
#pragma GCC unroll 8
    for (int k = 0; k < NH; ++k) {
      // A rescale by exactly 1 changes nothing (a holds fp16 values): skipped.
      if (rescaled[r] && ms[k][r] != 1.0f)
        a[k] = round16(_mm256_mul_ps(a[k], _mm256_set1_ps(ms[k][r])));
      a[k] = round16(_mm256_fmadd_ps(v, _mm256_set1_ps(vs[k][r]), a[k]));
    }
  }
#pragma GCC unroll 8
  for (int k = 0; k < NH; ++k)
    store8h(acc + k * n, a[k]);
}

// The same arithmetic as the scalar version lane by lane (fma, round to nearest even), so the
// two agree bit for bit. The weights depend only on the scores, so they are computed first for a
// chunk of rows; then each group of 8 lanes of up to 8 heads (a GQA group of Llama-style models)
// stays in registers across the chunk: independent chains hide the latency of rounding to fp16
// and back after every step, and each V row is converted once for all of them.
GANTRY_AVX2 void attend_rows_f16(const float *s, int64_t s_stride, int n_q, const uint16_t *rows,
                                 int64_t stride, int64_t n_rows, int64_t n, float *m, float *sum,
                                 uint16_t *acc) {
  constexpr int64_t kChunk = kAttendChunk;
  alignas(32) float ms[64][kChunk], vs[64][kChunk];
  bool rescaled[kChunk];
  for (int64_t r0 = 0; r0 < n_rows; r0 += kChunk) {
    const int64_t nr = std::min(kChunk, n_rows - r0);
    attend_weights8(s + r0, s_stride, n_q, nr, m, sum, ms, vs, rescaled);
    const uint16_t *v0 = rows + r0 * stride;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
      int h0 = 0;
      for (; h0 + 8 <= n_q; h0 += 8)
        attend_lanes<8>(ms + h0, vs + h0, rescaled, v0 + i, stride, nr, acc + h0 * n + i, n);
      if (n_q - h0 >= 4) {
        attend_lanes<4>(ms + h0, vs + h0, rescaled, v0 + i, stride, nr, acc + h0 * n + i, n);
        h0 += 4;
      }
      switch (n_q - h0) {
      case 3:
        attend_lanes<3>(ms + h0, vs + h0, rescaled, v0 + i, stride, nr, acc + h0 * n + i, n);
        break;
      case 2:
        attend_lanes<2>(ms + h0, vs + h0, rescaled, v0 + i, stride, nr, acc + h0 * n + i, n);
        break;
      case 1:
        attend_lanes<1>(ms + h0, vs + h0, rescaled, v0 + i, stride, nr, acc + h0 * n + i, n);
        break;
      default: break;
      }
    }
    for (; i < n; ++i) {
      for (int h = 0; h < n_q; ++h) {
        float a = half_to_float(acc[h * n + i]);
        for (int64_t r = 0; r < nr; ++r) {
          if (ms[h][r] != 1.0f)
            a = half_to_float(kernels::fp32_to_fp16(a * ms[h][r]));
          a = half_to_float(
              kernels::fp32_to_fp16(std::fma(half_to_float(v0[r * stride + i]), vs[h][r], a)));
        }
        acc[h * n + i] = kernels::fp32_to_fp16(a);
      }
    }
  }
}

GANTRY_AVX2 void exp_lanes(const float *x, float *y, int64_t n) {
  const auto *tab = reinterpret_cast<const long long *>(exp_table().t);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(y + i, exp8(_mm256_loadu_ps(x + i), tab));
  if (i < n) {
    alignas(32) float xs[8] = {}, ys[8];
    std::copy(x + i, x + n, xs);
    _mm256_store_ps(ys, exp8(_mm256_load_ps(xs), tab));
    std::copy(ys, ys + (n - i), y + i);
  }
}

} // namespace gantry::engine::kernels::avx2
