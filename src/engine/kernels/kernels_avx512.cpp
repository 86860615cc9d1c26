// AVX-512 (F/BW/VL/VNNI) matmul tiles for batches: Q8_0/Q4_0/Q5_0/IQ4_NL weights x Q8 activations
// with vpdpbusd, and F32/F16/BF16 weights with 512-bit fma. Q4_K/Q5_K/Q6_K batches go to the tiles
// of kernels_avx512_kquants.cpp; the other types of quants.h and K-quant decode to their VNNI
// dot products (kernels_avx512_quants.cpp). Q8_0/Q4_0/float decode goes to the matrix x vector
// kernels of kernels_avx512_gemv.cpp; odd shapes to the AVX2 kernels, which give the same bits.
//
// Like kernels_avx2.cpp this file uses per-function target attributes rather than per-file
// -mavx512* flags: with file flags, inline functions from headers (std::vector, std::min, ...)
// instantiated here could be compiled with AVX-512 and picked by the linker for the whole
// program, which would then crash on CPUs without it.
//
// Why VNNI helps: vpdpbusd multiplies unsigned x signed bytes and adds groups of 4 straight into
// int32 lanes. The AVX2 tile needs sign + maddubs + madd + add per 4 columns of a Q8_0 row (and
// maddubs + add for Q4_0) where this needs one instruction, so at 8 tokens, where the matmul is
// compute-bound, the integer work per weight byte drops 2-4x.
//
// The results are bit-identical to the AVX2 path: per 32-block the exact int32 dot product,
// then acc = fma(float(isum), d_w * d_x, acc) over the blocks in order, as documented in
// kernels_avx2.cpp. Integer sums are exact whichever way they are formed, so only the lane
// layout differs.
#include <immintrin.h>

#include <algorithm>
#include <cassert>
#include <cstring>
#include <vector>

#include "engine/kernels/kernels_impl.h"

// GCC 12's AVX-512 intrinsics (cvtph_ps, insert/extract/broadcast of 256-bit halves) start from
// a deliberately self-initialised "undefined" vector, which -Wmaybe-uninitialized flags where
// they are inlined (GCC bug 105593, fixed in GCC 13). Only this file uses them.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#define GANTRY_VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")))
#define GANTRY_VNNI_INLINE                                                                         \
  __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c"),                     \
                 always_inline)) inline

namespace gantry::engine::kernels::avx512vnni {
namespace {

// Same threshold as the AVX2 driver: below it the 8-token groups would mostly multiply padding.
constexpr int64_t kMinGroupTokens = 4;

template <TensorType kType>
constexpr size_t kBlockBytes = kType == TensorType::kQ8_0   ? sizeof(BlockQ8_0)
                               : kType == TensorType::kQ5_0 ? sizeof(BlockQ5_0)
                               : kType == TensorType::kQ4_1 ? sizeof(BlockQ4_1)
                               : kType == TensorType::kQ5_1 ? sizeof(BlockQ5_1)
                                                            : sizeof(BlockQ4_0);
// Q4_1/Q5_1 (value = d * u + m): no offset, and a second accumulator of the mins (see
// kernels_avx2.cpp); their outputs are acc + accm.
template <TensorType kType> constexpr bool kHasMin = block_has_min(kType);

// vpdpbusd wants the weights as the unsigned operand (the activations are the signed one):
// u = w + offset (kernels_impl.h, block_offset_shift), with sum(x) per token block precomputed
// (Activations::sum8). No int16 stage can saturate: a block's sum is at most 32 * 255 * 127 in
// magnitude.
template <TensorType kType> constexpr int kOffsetShift = block_offset_shift(kType);

// The 32 weights of one block as unsigned bytes u, in element order.
template <TensorType kType> GANTRY_VNNI_INLINE __m256i unsigned_block(const char *blk) {
  if constexpr (kHasMin<kType>) {
    const size_t at =
        kType == TensorType::kQ4_1 ? offsetof(BlockQ4_1, qs) : offsetof(BlockQ5_1, qs);
    const __m256i packed =
        _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i *>(blk + at)));
    const __m256i nib = _mm256_and_si256(_mm256_srlv_epi64(packed, _mm256_setr_epi64x(0, 0, 4, 4)),
                                         _mm256_set1_epi8(0x0F));
    if constexpr (kType == TensorType::kQ4_1) {
      return nib;
    } else {
      uint32_t qh;
      std::memcpy(&qh, blk + offsetof(BlockQ5_1, qh), sizeof qh);
      return _mm256_or_si256(nib, _mm256_maskz_mov_epi8(qh, _mm256_set1_epi8(0x10)));
    }
  } else if constexpr (kType == TensorType::kQ5_0 || kType == TensorType::kIQ4_NL) {
    const uint8_t *qs = reinterpret_cast<const uint8_t *>(
        blk + (kType == TensorType::kQ5_0 ? offsetof(BlockQ5_0, qs) : offsetof(BlockIQ4_NL, qs)));
    const __m256i packed =
        _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i *>(qs)));
    const __m256i nib = _mm256_and_si256(_mm256_srlv_epi64(packed, _mm256_setr_epi64x(0, 0, 4, 4)),
                                         _mm256_set1_epi8(0x0F));
    if constexpr (kType == TensorType::kQ5_0) {
      uint32_t qh;
      std::memcpy(&qh, blk + offsetof(BlockQ5_0, qh), sizeof qh);
      return _mm256_or_si256(nib, _mm256_maskz_mov_epi8(qh, _mm256_set1_epi8(0x10)));
    } else {
      const __m256i table = _mm256_broadcastsi128_si256(
          _mm_loadu_si128(reinterpret_cast<const __m128i *>(kIq4nlValues)));
      return _mm256_xor_si256(_mm256_shuffle_epi8(table, nib),
                              _mm256_set1_epi8(static_cast<char>(0x80)));
    }
  } else if constexpr (kType == TensorType::kQ8_0) {
    const __m256i wv =
        _mm256_loadu_si256(reinterpret_cast<const __m256i *>(blk + offsetof(BlockQ8_0, qs)));
    return _mm256_xor_si256(wv, _mm256_set1_epi8(static_cast<char>(0x80)));
  } else {
    // Both 128-bit lanes get the 16 packed bytes; shifting the upper lane's 64-bit words right
    // by 4 brings each byte's high nibble (elements 16..31) down.
    const __m256i packed = _mm256_broadcastsi128_si256(
        _mm_loadu_si128(reinterpret_cast<const __m128i *>(blk + offsetof(BlockQ4_0, qs))));
    return _mm256_and_si256(_mm256_srlv_epi64(packed, _mm256_setr_epi64x(0, 0, 4, 4)),
                            _mm256_set1_epi8(0x0F));
  }
}

GANTRY_VNNI_INLINE float block_scale(const char *blk) {
  uint16_t h; // d is the first member of both block types
  std::memcpy(&h, blk, sizeof h);
  return _cvtsh_ss(h);
}

GANTRY_VNNI_INLINE __m256i broadcast4(const uint8_t *p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return _mm256_set1_epi32(v);
}

// Rows are unpacked once per tile (for all the token groups they meet) to unsigned bytes and
// float scales, two rows interleaved 4 bytes at a time:
//   q[(b * 8 + k) * 8 + h * 4 + i] = u of row 2p + h, element 32b + 4k + i   (per pair p)
//   d[b * 2 + h] = scale of row 2p + h, block b
// so that one 8-byte broadcast puts row 2p's 4 weights in the even int32 lanes of a zmm and row
// 2p + 1's in the odd ones.
template <int P> struct PairTile {
  const uint8_t *q[P];
  const float *d[P];
  const float *m[P]; // Q4_1/Q5_1: the mins, laid out like d
};

// The unsigned bytes of one block of each of two rows in the PairTile order (row0's 4 bytes,
// row1's 4 bytes, for k = 0..7), built in one zmm and placed by one dword permute.
template <TensorType kType>
GANTRY_VNNI_INLINE __m512i unsigned_pair(const char *blk0, const char *blk1) {
  if constexpr (kType == TensorType::kQ5_0 || kType == TensorType::kIQ4_NL || kHasMin<kType>) {
    const __m512i both = _mm512_inserti64x4(_mm512_castsi256_si512(unsigned_block<kType>(blk0)),
                                            unsigned_block<kType>(blk1), 1);
    return _mm512_permutexvar_epi32(
        _mm512_setr_epi32(0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15), both);
  } else if constexpr (kType == TensorType::kQ8_0) {
    const auto *q0 = reinterpret_cast<const __m256i *>(blk0 + offsetof(BlockQ8_0, qs));
    const auto *q1 = reinterpret_cast<const __m256i *>(blk1 + offsetof(BlockQ8_0, qs));
    const __m512i both = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256(q0)),
                                            _mm256_loadu_si256(q1), 1);
    const __m512i u = _mm512_xor_si512(both, _mm512_set1_epi8(static_cast<char>(0x80)));
    return _mm512_permutexvar_epi32(
        _mm512_setr_epi32(0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15), u);
  } else {
    const auto *q0 = reinterpret_cast<const __m128i *>(blk0 + offsetof(BlockQ4_0, qs));
    const auto *q1 = reinterpret_cast<const __m128i *>(blk1 + offsetof(BlockQ4_0, qs));
    const __m256i packed = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128(q0)),
                                                   _mm_loadu_si128(q1), 1);
    // Low nibbles (elements 0..15) from the lower copy, high nibbles (16..31) from the upper one,
    // whose 64-bit words are shifted right by 4: dwords 0-3 = row0 k0-3, 4-7 = row1 k0-3,
    // 8-11 = row0 k4-7, 12-15 = row1 k4-7.
    const __m512i u = _mm512_and_si512(_mm512_srlv_epi64(_mm512_broadcast_i64x4(packed),
                                                         _mm512_setr_epi64(0, 0, 0, 0, 4, 4, 4, 4)),
                                       _mm512_set1_epi8(0x0F));
    return _mm512_permutexvar_epi32(
        _mm512_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7, 8, 12, 9, 13, 10, 14, 11, 15), u);
  }
}

#include "engine/kernels/kernels_avx512_rows_inl.h"

// 32 bytes at c0 in the low half, 32 at c1 in the high half.
GANTRY_VNNI_INLINE __m512i load_two(const char *c0, const char *c1) {
  return _mm512_inserti64x4(
      _mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(c0))),
      _mm256_loadu_si256(reinterpret_cast<const __m256i *>(c1)), 1);
}

// Rows r..r + 7 (r a multiple of 8, so one group's half) of a packed 32-element block matrix as 4
// pairs in the PairTile order, pair p's quants at qbuf + p * 2 * cols and fp16 scales at
// hbuf + p * 2 * nb. Per block, the 8 rows' pieces of chunk k are 32 contiguous bytes (4 pairs
// x 8): two chunks per zmm, then a 4 x 8 transpose of 8-byte pieces (two 2-source permutes and
// two 128-bit shuffles per pair of pairs) leaves each pair's 64 bytes in one zmm.
template <TensorType kType>
GANTRY_VNNI_INLINE void unpack_packed_quad(const WeightView &w, int64_t r, uint8_t *qbuf,
                                           uint16_t *hbuf) {
  const int64_t nb = w.cols / kQK;
  const char *group =
      static_cast<const char *>(w.data) + static_cast<size_t>(r / 16) * 16 * w.row_stride;
  const int64_t i0 = r % 16;
  constexpr int64_t kGroupBlock = packed_block_chunks(kType) * 64; // the 16 rows' quants
  const char *quants = group + packed_quants_at(kType, nb) + 4 * i0;
  // Pair p's pieces from (a, b): [a[p], a[4 + p], b[p], b[4 + p]] in the low half, pair p + 1's
  // in the high half.
  const __m512i sel01 = _mm512_setr_epi64(0, 4, 8, 12, 1, 5, 9, 13);
  const __m512i sel23 = _mm512_setr_epi64(2, 6, 10, 14, 3, 7, 11, 15);
  const __m512i m4 = _mm512_set1_epi8(0x0F);
  for (int64_t b = 0; b < nb; ++b) {
    for (int p = 0; p < 4; ++p)
      std::memcpy(&hbuf[p * 2 * nb + 2 * b], group + (b * 16 + i0 + 2 * p) * 2, 4);
    __m512i z[4]; // z[m]: slots 2m and 2m + 1, 4 pairs each
    if constexpr (kType == TensorType::kQ8_0) {
      const char *blk = quants + b * 512;
#pragma GCC unroll 4
      for (int m = 0; m < 4; ++m)
        z[m] = load_two(blk + 128 * m, blk + 128 * m + 64);
    } else {
      const char *blk = quants + b * kGroupBlock + (block_fifth_bit(kType) ? 64 : 0);
      const __m512i c01 = load_two(blk, blk + 64), c23 = load_two(blk + 128, blk + 192);
      z[0] = _mm512_and_si512(c01, m4);
      z[1] = _mm512_and_si512(c23, m4);
      z[2] = _mm512_and_si512(_mm512_srli_epi16(c01, 4), m4);
      z[3] = _mm512_and_si512(_mm512_srli_epi16(c23, 4), m4);
      if constexpr (block_fifth_bit(kType)) {
        // z[m] holds elements 8m + 4h + i (h: the half, i: byte of the dword) of each row,
        // whose fifth bits are bits 4h + i of byte m of the row's qh dword.
        const char *qh = quants + b * kGroupBlock;
        const __m512i qh2 = load_two(qh, qh);
        const __m512i bits = _mm512_inserti64x4(
            _mm512_set1_epi32(0x08040201), _mm256_set1_epi32(static_cast<int>(0x80402010u)), 1);
#pragma GCC unroll 4
        for (int m = 0; m < 4; ++m)
          z[m] = add_fifth_bits(z[m], qh2, m, bits);
      } else if constexpr (kType == TensorType::kIQ4_NL) {
#pragma GCC unroll 4
        for (int m = 0; m < 4; ++m)
          z[m] = iq4nl_unsigned(z[m]);
      }
    }
    const __m512i a01 = _mm512_permutex2var_epi64(z[0], sel01, z[1]);
    const __m512i b01 = _mm512_permutex2var_epi64(z[2], sel01, z[3]);
    const __m512i a23 = _mm512_permutex2var_epi64(z[0], sel23, z[1]);
    const __m512i b23 = _mm512_permutex2var_epi64(z[2], sel23, z[3]);
    const int64_t pair = 2 * w.cols; // bytes of one pair's quants
    _mm512_storeu_si512(qbuf + b * 64, _mm512_shuffle_i64x2(a01, b01, 0x44));
    _mm512_storeu_si512(qbuf + pair + b * 64, _mm512_shuffle_i64x2(a01, b01, 0xEE));
    _mm512_storeu_si512(qbuf + 2 * pair + b * 64, _mm512_shuffle_i64x2(a23, b23, 0x44));
    _mm512_storeu_si512(qbuf + 3 * pair + b * 64, _mm512_shuffle_i64x2(a23, b23, 0xEE));
  }
}

template <TensorType kType, int P>
GANTRY_VNNI_INLINE PairTile<P> unpack_pairs(const WeightView &w, int64_t r, uint8_t *qbuf,
                                            float *dbuf, uint16_t *hbuf) {
  const int64_t nb = w.cols / kQK;
  PairTile<P> tile;
  // Every 32-element block type has a packed layout. Packed matrices reach here in whole 16-row
  // groups (matmul.cpp), so always as 8-row tiles.
  const bool packed = w.packed16;
  assert(!packed || (P == 4 && r % 8 == 0));
  if (packed)
    unpack_packed_quad<kType>(w, r, qbuf, hbuf);
  for (int p = 0; p < P; ++p) {
    uint8_t *q = qbuf + p * 2 * w.cols;
    float *d = dbuf + p * 2 * nb;
    float *mins = dbuf + (P + p) * 2 * nb;
    tile.q[p] = q;
    tile.d[p] = d;
    tile.m[p] = mins;
    const char *row0 = static_cast<const char *>(w.row(r + 2 * p));
    const char *row1 = static_cast<const char *>(w.row(r + 2 * p + 1));
    // unpack_packed_quad left every pair's scales in its own part of hbuf.
    const uint16_t *h = packed ? hbuf + p * 2 * nb : hbuf;
    if (!packed) {
      for (int64_t b = 0; b < nb; ++b) {
        const char *blk0 = row0 + b * kBlockBytes<kType>;
        const char *blk1 = row1 + b * kBlockBytes<kType>;
        // d is the first member of both block types. The fp16 scales are converted 16 at a time
        // below: one by one, the conversions would cost nearly as much as the byte shuffling.
        std::memcpy(&hbuf[2 * b], blk0, sizeof(uint16_t));
        std::memcpy(&hbuf[2 * b + 1], blk1, sizeof(uint16_t));
        _mm512_storeu_si512(q + b * 64, unsigned_pair<kType>(blk0, blk1));
      }
    }
    int64_t i = 0;
    for (; i + 16 <= 2 * nb; i += 16) {
      _mm512_storeu_ps(
          d + i, _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(h + i))));
    }
    for (; i < 2 * nb; ++i)
      d[i] = _cvtsh_ss(h[i]);
    if constexpr (kHasMin<kType>) {
      // Packed: the group's mins follow its scales, 16 rows per block.
      const char *packed_mins = static_cast<const char *>(w.data) +
                                static_cast<size_t>(r / 16) * 16 * w.row_stride + nb * 32 +
                                (r % 16 + 2 * p) * 2; // after the scales (packed_quants_at)
      for (int64_t b = 0; b < nb; ++b) {
        for (int h = 0; h < 2; ++h) {
          uint16_t m16;
          std::memcpy(&m16,
                      packed ? packed_mins + b * 32 + 2 * h
                             : (h ? row1 : row0) + b * kBlockBytes<kType> + 2,
                      sizeof m16);
          mins[2 * b + h] = _cvtsh_ss(m16);
        }
      }
    }
  }
  return tile;
}

// P row pairs against the 8 tokens of group g, storing only tokens in [t0, t1). Lane 2j + h of
// acc[p] is row r + 2p + h, token 8g + j: the activations' dword of token j is duplicated into
// lanes 2j and 2j + 1 by one permute per 4 columns, shared by all P pairs.
template <TensorType kType, int P>
GANTRY_VNNI_INLINE void tile_pairs_group(const PairTile<P> &pt, const Activations &a, int64_t cols,
                                         int64_t r, int64_t g, int64_t t0, int64_t t1, float *y,
                                         int64_t ldy) {
  const int64_t nb = cols / kQK;
  const int8_t *xg = a.qs8 + g * nb * kTokGroup * kQK;
  const float *dg = a.d8 + g * nb * kTokGroup;
  const int32_t *sg = a.sum8 + g * nb * kTokGroup;
  const __m512i dup = _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
  __m512 acc[P], accm[P];
#pragma GCC unroll 8
  for (int p = 0; p < P; ++p) {
    acc[p] = _mm512_setzero_ps();
    accm[p] = _mm512_setzero_ps();
  }
  for (int64_t b = 0; b < nb; ++b) {
    const int8_t *xb = xg + b * kTokGroup * kQK;
    const __m512i xsum =
        _mm512_permutexvar_epi32(dup, _mm512_castsi256_si512(_mm256_loadu_si256(
                                          reinterpret_cast<const __m256i *>(sg + b * kTokGroup))));
    // The sums start from -offset * sum(x) rather than 0: the same exact int32 result, one
    // subtraction per pair and block fewer.
    __m512i neg_corr = _mm512_setzero_si512();
    if constexpr (!kHasMin<kType>) {
      neg_corr =
          _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_slli_epi32(xsum, kOffsetShift<kType>));
    }
    __m512i sum[P];
#pragma GCC unroll 8
    for (int p = 0; p < P; ++p)
      sum[p] = neg_corr;
#pragma GCC unroll 8
    for (int k = 0; k < kQK / 4; ++k) {
      const __m512i x =
          _mm512_permutexvar_epi32(dup, _mm512_castsi256_si512(_mm256_loadu_si256(
                                            reinterpret_cast<const __m256i *>(xb + k * 32))));
#pragma GCC unroll 8
      for (int p = 0; p < P; ++p) {
        int64_t wq;
        std::memcpy(&wq, pt.q[p] + b * 64 + k * 8, sizeof wq);
        sum[p] = _mm512_dpbusd_epi32(sum[p], _mm512_set1_epi64(wq), x);
      }
    }
    const __m512 dx =
        _mm512_permutexvar_ps(dup, _mm512_castps256_ps512(_mm256_loadu_ps(dg + b * kTokGroup)));
#pragma GCC unroll 8
    for (int p = 0; p < P; ++p) {
      double dd;
      std::memcpy(&dd, pt.d[p] + 2 * b, sizeof dd);
      const __m512 scale = _mm512_mul_ps(_mm512_castpd_ps(_mm512_set1_pd(dd)), dx);
      acc[p] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum[p]), scale, acc[p]);
    }
    if constexpr (kHasMin<kType>) {
      const __m512 xs = _mm512_mul_ps(dx, _mm512_cvtepi32_ps(xsum));
#pragma GCC unroll 8
      for (int p = 0; p < P; ++p) {
        double mm;
        std::memcpy(&mm, pt.m[p] + 2 * b, sizeof mm);
        accm[p] = _mm512_fmadd_ps(_mm512_castpd_ps(_mm512_set1_pd(mm)), xs, accm[p]);
      }
    }
  }
  const int64_t j0 = std::max<int64_t>(t0 - g * kTokGroup, 0);
  const int64_t j1 = std::min<int64_t>(t1 - g * kTokGroup, kTokGroup);
#pragma GCC unroll 8
  for (int p = 0; p < P; ++p) {
    alignas(64) float out[2 * kTokGroup];
    _mm512_store_ps(out, _mm512_add_ps(acc[p], accm[p]));
    for (int64_t j = j0; j < j1; ++j) {
      float *yt = y + (g * kTokGroup + j) * ldy + r + 2 * p;
      yt[0] = out[2 * j];
      yt[1] = out[2 * j + 1];
    }
  }
}

// R single rows, 256-bit: lane j of acc[i] is row r + i, token 8g + j; the 4 weights of a row
// are broadcast to all tokens. Used for the odd row left after the pairs (R = 1).
template <TensorType kType, int R>
GANTRY_VNNI_INLINE void rows_group(const uint8_t *const *q, const float *const *d,
                                   const Activations &a, int64_t cols, int64_t r, int64_t g,
                                   int64_t t0, int64_t t1, float *y, int64_t ldy) {
  const int64_t nb = cols / kQK;
  const int8_t *xg = a.qs8 + g * nb * kTokGroup * kQK;
  const float *dg = a.d8 + g * nb * kTokGroup;
  const int32_t *sg = a.sum8 + g * nb * kTokGroup;
  __m256 acc[R];
#pragma GCC unroll 8
  for (int i = 0; i < R; ++i)
    acc[i] = _mm256_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    const int8_t *xb = xg + b * kTokGroup * kQK;
    __m256i sum[R];
#pragma GCC unroll 8
    for (int i = 0; i < R; ++i)
      sum[i] = _mm256_setzero_si256();
#pragma GCC unroll 8
    for (int k = 0; k < kQK / 4; ++k) {
      const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(xb + k * 32));
#pragma GCC unroll 8
      for (int i = 0; i < R; ++i)
        sum[i] = _mm256_dpbusd_epi32(sum[i], broadcast4(q[i] + b * kQK + 4 * k), x);
    }
    const __m256i corr =
        _mm256_slli_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(sg + b * kTokGroup)),
                          kOffsetShift<kType>);
    const __m256 dx = _mm256_loadu_ps(dg + b * kTokGroup);
#pragma GCC unroll 8
    for (int i = 0; i < R; ++i) {
      const __m256 scale = _mm256_mul_ps(_mm256_broadcast_ss(d[i] + b), dx);
      acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(sum[i], corr)), scale, acc[i]);
    }
  }
  const int64_t j0 = std::max<int64_t>(t0 - g * kTokGroup, 0);
  const int64_t j1 = std::min<int64_t>(t1 - g * kTokGroup, kTokGroup);
#pragma GCC unroll 8
  for (int i = 0; i < R; ++i) {
    alignas(32) float out[kTokGroup];
    _mm256_store_ps(out, acc[i]);
    for (int64_t j = j0; j < j1; ++j)
      y[(g * kTokGroup + j) * ldy + r + i] = out[j];
  }
}

// Scratch of the unpacked rows, per thread (pool workers run matmul_rows concurrently).
struct UnpackScratch {
  std::vector<uint8_t> q;
  std::vector<float> d;
  std::vector<uint16_t> h;
};
thread_local UnpackScratch t_unpack;

template <TensorType kType, int P>
GANTRY_VNNI void pairs_groups(const WeightView &w, const Activations &a, int64_t r, int64_t t0,
                              int64_t t1, float *y, int64_t ldy) {
  auto &s = t_unpack;
  const auto need_q = static_cast<size_t>(2 * P * w.cols);
  const auto need_d = static_cast<size_t>(2 * P * w.cols / kQK);
  if (s.q.size() < need_q)
    s.q.resize(need_q);
  if (s.d.size() < 2 * need_d) // scales, then mins
    s.d.resize(2 * need_d);
  if (s.h.size() < need_d)
    s.h.resize(need_d);
  const PairTile<P> pt = unpack_pairs<kType, P>(w, r, s.q.data(), s.d.data(), s.h.data());
  for (int64_t g = t0 / kTokGroup; g * kTokGroup < t1; ++g)
    tile_pairs_group<kType, P>(pt, a, w.cols, r, g, t0, t1, y, ldy);
}

template <TensorType kType, int R>
GANTRY_VNNI void single_rows_groups(const WeightView &w, const Activations &a, int64_t r,
                                    int64_t t0, int64_t t1, float *y, int64_t ldy) {
  assert(!w.packed16); // packed matrices have whole 16-row groups: only pairs
  auto &s = t_unpack;
  const int64_t nb = w.cols / kQK;
  if (s.q.size() < static_cast<size_t>(R * w.cols))
    s.q.resize(static_cast<size_t>(R * w.cols));
  if (s.d.size() < static_cast<size_t>(R * nb))
    s.d.resize(static_cast<size_t>(R * nb));
  const uint8_t *q[R];
  const float *d[R];
  for (int i = 0; i < R; ++i) {
    uint8_t *qi = s.q.data() + i * w.cols;
    float *di = s.d.data() + i * nb;
    q[i] = qi;
    d[i] = di;
    const char *row = static_cast<const char *>(w.row(r + i));
    for (int64_t b = 0; b < nb; ++b) {
      const char *blk = row + b * kBlockBytes<kType>;
      di[b] = block_scale(blk);
      _mm256_storeu_si256(reinterpret_cast<__m256i *>(qi + b * kQK), unsigned_block<kType>(blk));
    }
  }
  for (int64_t g = t0 / kTokGroup; g * kTokGroup < t1; ++g)
    rows_group<kType, R>(q, d, a, w.cols, r, g, t0, t1, y, ldy);
}

// 4 row pairs (8 rows) per tile: 4 int32 and 4 float zmm accumulators, the permuted activations
// and the broadcast weights stay far below the 32 zmm registers, and 8 rows match the chunk
// granularity of the matmul driver, so the 2-row and 1-row tails are rare. The same 8 rows as
// 256-bit tiles (rows_group<8>, one ymm per row) measured 10-30% slower on a Xeon (Emerald
// Rapids, 2 threads: 5632x2048 Q8_0 at 8 tokens 2.12 vs 1.90 ms, at 512 tokens 84 vs 65 ms):
// this core has no AVX-512 frequency penalty worth avoiding, and half as many dpbusd win.
template <TensorType kType>
GANTRY_VNNI void matmul_q8(const WeightView &w, const Activations &a, int64_t t0, int64_t t1,
                           int64_t r0, int64_t r1, float *y, int64_t ldy) {
  int64_t r = r0;
  for (; r + 8 <= r1; r += 8)
    pairs_groups<kType, 4>(w, a, r, t0, t1, y, ldy);
  for (; r + 2 <= r1; r += 2)
    pairs_groups<kType, 1>(w, a, r, t0, t1, y, ldy);
  if constexpr (kHasMin<kType>) {
    // The odd row: the AVX2 tile, which gives the same bits.
    if (r < r1)
      avx2::matmul_rows(w, a, t0, t1, r, r1, y, ldy);
  } else {
    for (; r < r1; ++r)
      single_rows_groups<kType, 1>(w, a, r, t0, t1, y, ldy);
  }
}

// ---- float weights (F32 / F16 / BF16) x float activations -------------------------------------
//
// The AVX2 float tiles keep, per output, 8 float lanes over the columns (lane l sums columns
// k + l, k a multiple of 8), then hsum them. A zmm here holds two such 8-lane accumulators, row
// 2p in the low half and row 2p + 1 in the high half, against the activations broadcast to both
// halves: each lane does exactly the fma sequence its AVX2 counterpart does, and the halves are
// reduced with the same hsum, so the bits match while one instruction does twice the work.
// Columns must be a multiple of 8 (the caller sends other shapes to the AVX2 kernels, whose
// scalar column tail we would otherwise have to reproduce).

#include "engine/kernels/kernels_avx512_float_inl.h"

// P row pairs x T tokens: 2 * 8 = 16 accumulators at P = 2, T = 8, plus 2 weight vectors and one
// broadcast activation vector, well within the 32 zmm registers.
// kPacked: w is F16/BF16 in the packed layout (kernels.h), read a row pair at a time.
// kPrefetch: the first pass over packed rows prefetches them (P = 4: 128 contiguous bytes of each
// 256-byte column step) 4 KiB ahead; the hardware prefetchers leave half-read steps to the
// loads, which waited on memory in two thirds of an 8-sequence F16 profile's samples.
template <TensorType kType, int P, int T, bool kPacked, bool kPrefetch = false>
GANTRY_VNNI_INLINE void tile_float_pairs(const WeightView &w, const Activations &a, int64_t r,
                                         int64_t t, float *y, int64_t ldy) {
  static_assert(!kPrefetch || (kPacked && P == 4));
  const int64_t n = w.cols;
  const void *rows[2 * P];
  const char *pairs[P];
  if constexpr (kPacked) {
#pragma GCC unroll 8
    for (int p = 0; p < P; ++p)
      pairs[p] = packed_pair(w, r + 2 * p);
  } else {
#pragma GCC unroll 8
    for (int i = 0; i < 2 * P; ++i)
      rows[i] = w.row(r + i);
  }
  const float *x[T];
#pragma GCC unroll 8
  for (int j = 0; j < T; ++j)
    x[j] = a.x + (t + j) * n;
  __m512 acc[P][T];
#pragma GCC unroll 8
  for (int p = 0; p < P; ++p) {
#pragma GCC unroll 8
    for (int j = 0; j < T; ++j)
      acc[p][j] = _mm512_setzero_ps();
  }
  for (int64_t k = 0; k < n; k += 8) {
    if constexpr (kPrefetch) {
      // Past the end of the rows this runs into the next group (or past the matrix: a
      // prefetch never faults).
      _mm_prefetch(pairs[0] + (k + 256) * 32, _MM_HINT_T0);
      _mm_prefetch(pairs[0] + (k + 256) * 32 + 64, _MM_HINT_T0);
    }
    __m512 wv[P];
#pragma GCC unroll 8
    for (int p = 0; p < P; ++p) {
      if constexpr (kPacked)
        wv[p] = load8x2_packed<kType>(pairs[p] + k * 32);
      else
        wv[p] = load8x2<kType>(rows[2 * p], rows[2 * p + 1], k);
    }
#pragma GCC unroll 8
    for (int j = 0; j < T; ++j) {
      const __m512 xv =
          _mm512_castpd_ps(_mm512_broadcast_f64x4(_mm256_castps_pd(_mm256_loadu_ps(x[j] + k))));
#pragma GCC unroll 8
      for (int p = 0; p < P; ++p)
        acc[p][j] = _mm512_fmadd_ps(wv[p], xv, acc[p][j]);
    }
  }
#pragma GCC unroll 8
  for (int p = 0; p < P; ++p) {
#pragma GCC unroll 8
    for (int j = 0; j < T; ++j) {
      const __m512 v = acc[p][j];
      float *yt = y + (t + j) * ldy + r + 2 * p;
      yt[0] = hsum8(_mm512_castps512_ps256(v));
      yt[1] = hsum8(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
    }
  }
}

template <TensorType kType, int P, bool kPacked>
GANTRY_VNNI void rows_float_pairs_of(const WeightView &w, const Activations &a, int64_t t0,
                                     int64_t t1, int64_t r, float *y, int64_t ldy) {
  int64_t t = t0;
  for (; t + 8 <= t1; t += 8)
    tile_float_pairs<kType, P, 8, kPacked>(w, a, r, t, y, ldy);
  if (t1 - t >= 4) {
    tile_float_pairs<kType, P, 4, kPacked>(w, a, r, t, y, ldy);
    t += 4;
  }
  if (t1 - t >= 2) {
    tile_float_pairs<kType, P, 2, kPacked>(w, a, r, t, y, ldy);
    t += 2;
  }
  if (t1 - t >= 1)
    tile_float_pairs<kType, P, 1, kPacked>(w, a, r, t, y, ldy);
}

template <TensorType kType, int P>
GANTRY_VNNI void rows_float_pairs(const WeightView &w, const Activations &a, int64_t t0, int64_t t1,
                                  int64_t r, float *y, int64_t ldy) {
  if constexpr (kType != TensorType::kF32) {
    if (w.packed16) {
      rows_float_pairs_of<kType, P, true>(w, a, t0, t1, r, y, ldy);
      return;
    }
  }
  rows_float_pairs_of<kType, P, false>(w, a, t0, t1, r, y, ldy);
}

// One half-group tile of T tokens from t (then t += T); the first pass over the rows (t == t0)
// prefetches them, the others find them in cache.
template <TensorType kType, int T>
GANTRY_VNNI_INLINE void packed_float_pass(const WeightView &w, const Activations &a, int64_t r,
                                          int64_t &t, int64_t t0, float *y, int64_t ldy) {
  if (t == t0)
    tile_float_pairs<kType, 4, T, true, true>(w, a, r, t, y, ldy);
  else
    tile_float_pairs<kType, 4, T, true>(w, a, r, t, y, ldy);
  t += T;
}

template <TensorType kType>
GANTRY_VNNI void matmul_float(const WeightView &w, const Activations &a, int64_t t0, int64_t t1,
                              int64_t r0, int64_t r1, float *y, int64_t ldy) {
  if constexpr (kType != TensorType::kF32) {
    // Packed, a few tokens (batched decode steps): half a group (4 pairs, 128 contiguous bytes
    // a column step) per tile, so that tiles do not share cache lines. 8-sequence F16 steps:
    // 6-row tiles (96 bytes of each 256-byte step) 42 tok/s, these 52 (67-79 with the first
    // pass's prefetch), 2-pair tiles of 8 tokens 38; the file's row-major layout with 6-row
    // tiles 58-62.
    if (w.packed16 && t1 - t0 <= kTokGroup) {
      for (int64_t r = r0; r < r1; r += 8) {
        int64_t t = t0;
        while (t + 4 <= t1)
          packed_float_pass<kType, 4>(w, a, r, t, t0, y, ldy);
        if (t1 - t >= 2)
          packed_float_pass<kType, 2>(w, a, r, t, t0, y, ldy);
        if (t1 - t >= 1)
          packed_float_pass<kType, 1>(w, a, r, t, t0, y, ldy);
      }
      return;
    }
  }
  int64_t r = r0;
  // Six rows at a time: 24 accumulators against 3 weight and 1 activation vectors per 8-column
  // step, so the FMAs outnumber the loads and conversions (Zen 5 issues two 512-bit FMAs a cycle).
  for (; r + 6 <= r1; r += 6)
    rows_float_pairs<kType, 3>(w, a, t0, t1, r, y, ldy);
  for (; r + 4 <= r1; r += 4)
    rows_float_pairs<kType, 2>(w, a, t0, t1, r, y, ldy);
  for (; r + 2 <= r1; r += 2)
    rows_float_pairs<kType, 1>(w, a, t0, t1, r, y, ldy);
  if (r < r1) {
    assert(!w.packed16); // packed matrices have whole 16-row groups
    avx2::matmul_rows(w, a, t0, t1, r, r1, y, ldy);
  }
}

} // namespace

void matmul_rows(const WeightView &w, const Activations &a, int64_t t0, int64_t t1, int64_t r0,
                 int64_t r1, float *y, int64_t ldy) {
  // The decode kernels first: they take fewer than 4 tokens, and packed Q4_K up to 8.
  if (matmul_rows_k_gemv(w, a, t0, t1, r0, r1, y, ldy) ||
      matmul_rows_k_tiles(w, a, t0, t1, r0, r1, y, ldy))
    return;
  switch (w.type) {
  case TensorType::kQ2_K:
  case TensorType::kQ3_K:
  case TensorType::kQ4_K:
  case TensorType::kQ5_K:
  case TensorType::kQ6_K: matmul_rows_quants(w, a, t0, t1, r0, r1, y, ldy); return;
  default: break;
  }
  // Packed 32-element block types up to 8 tokens (decode, batched decode steps):
  // kernels_avx512_gemv.cpp reads the packed groups directly.
  if (w.packed16 && t1 - t0 <= kTokGroup && matmul_rows_gemv(w, a, t0, t1, r0, r1, y, ldy))
    return;
  if (t1 - t0 >= kMinGroupTokens) {
    switch (w.type) {
    case TensorType::kQ8_0: matmul_q8<TensorType::kQ8_0>(w, a, t0, t1, r0, r1, y, ldy); return;
    case TensorType::kQ4_0: matmul_q8<TensorType::kQ4_0>(w, a, t0, t1, r0, r1, y, ldy); return;
    case TensorType::kQ5_0: matmul_q8<TensorType::kQ5_0>(w, a, t0, t1, r0, r1, y, ldy); return;
    case TensorType::kIQ4_NL: matmul_q8<TensorType::kIQ4_NL>(w, a, t0, t1, r0, r1, y, ldy); return;
    case TensorType::kQ4_1: matmul_q8<TensorType::kQ4_1>(w, a, t0, t1, r0, r1, y, ldy); return;
    case TensorType::kQ5_1: matmul_q8<TensorType::kQ5_1>(w, a, t0, t1, r0, r1, y, ldy); return;
    default: break;
    }
  }
  // Decode: the matrix x vector kernels of kernels_avx512_gemv.cpp.
  if (t1 - t0 < kMinGroupTokens && matmul_rows_gemv(w, a, t0, t1, r0, r1, y, ldy))
    return;
  if (t1 - t0 >= 2 && w.cols % 8 == 0) {
    switch (w.type) {
    case TensorType::kF32: matmul_float<TensorType::kF32>(w, a, t0, t1, r0, r1, y, ldy); return;
    case TensorType::kF16: matmul_float<TensorType::kF16>(w, a, t0, t1, r0, r1, y, ldy); return;
    case TensorType::kBF16: matmul_float<TensorType::kBF16>(w, a, t0, t1, r0, r1, y, ldy); return;
    default: break;
    }
  }
  avx2::matmul_rows(w, a, t0, t1, r0, r1, y, ldy);
}

} // namespace gantry::engine::kernels::avx512vnni
