// AVX-512 VNNI prefill tiles for Q4_K, Q5_K and Q6_K weights x Q8_K activations: 8 rows x 8
// tokens per tile, the int8 products with vpdpbusd, every sum exact in int32 until the one float
// step per super-block. Decode (fewer than kMinGroupTokens tokens) and the odd row left after the
// row pairs go to the dot products of quant_dots_inl.h.
//
// The bits are those of the dot products (and so of the AVX2 and scalar paths): per super-block
// the exact integers isum (quants x activations with the sub-block scales applied, Q6_K's offset
// of 32 subtracted through the activations' 16-element sums) and imin (the mins x those sums),
// then sum = fma(float(isum), d * d_x, sum) and summ = fma(float(imin), dmin * d_x, summ); the
// output is sum - summ. Integer sums are exact however they are grouped, so only the lanes differ.
//
// Layouts, as in kernels_avx512.cpp's Q8_0/Q4_0 tiles: a zmm lane 2j + h holds row 2p + h of a
// pair, token 8g + j of a group. Rows are unpacked once per call to unsigned quants (0..15 for
// Q4_K, 0..31 for Q5_K, 0..63 for Q6_K) interleaved 4 bytes at a time per pair, so one 8-byte
// broadcast feeds both rows; the activations come packed per 8-token group (matmul.cpp):
//   qs8 as for Q8_0, d8[(g * nbk + s) * 8 + j] = d of token 8g + j, super-block s,
//   sum8[((g * nbk + s) * 16 + h) * 8 + j] = its h-th 16-element sum.
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#include "engine/kernels/kernels_impl.h"

// See kernels_avx512.cpp: GCC 12's AVX-512 intrinsics trip -Wmaybe-uninitialized where inlined.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#define GANTRY_VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")))
#define GANTRY_VNNI_INLINE                                                                         \
  __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c"),                     \
                 always_inline)) inline

namespace gantry::engine::kernels::avx512vnni {
namespace {

constexpr int64_t kMinGroupTokens = 4;

// One unpacked row pair. Per 32-column block b: q[b * 64 ...] (row 0's 4 bytes, row 1's 4 bytes,
// for k < 8); sc: per scale group (32 columns for Q4_K/Q5_K, 16 for Q6_K) the two rows' scales
// as int32; mn: per 32 columns the two rows' mins (Q4_K/Q5_K); d, dmin per super-block, two each.
struct PairK {
  const uint8_t *q;
  const int32_t *sc;
  const int32_t *mn;
  const float *d;
  const float *dmin;
};

GANTRY_VNNI_INLINE __m256i load32(const void *p) {
  return _mm256_loadu_si256(static_cast<const __m256i *>(p));
}

// Two rows' 32 unsigned quants (element order) in the pair order: dwords row0 k, row1 k.
GANTRY_VNNI_INLINE __m512i interleave_pair(__m256i u0, __m256i u1) {
  const __m512i both = _mm512_inserti64x4(_mm512_castsi256_si512(u0), u1, 1);
  return _mm512_permutexvar_epi32(
      _mm512_setr_epi32(0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15), both);
}

// The unsigned quants of 32-column block jb (0..7) of a super-block, in element order.
template <TensorType kType> GANTRY_VNNI_INLINE __m256i block_u(const void *blk, int jb) {
  const __m256i m4 = _mm256_set1_epi8(0x0F);
  if constexpr (kType == TensorType::kQ6_K) {
    const auto &b = *static_cast<const BlockQ6_K *>(blk);
    const int h = jb / 4, k = jb % 4;
    const __m256i lo = load32(b.ql + 64 * h + 32 * (k & 1));
    const __m256i nib =
        k < 2 ? _mm256_and_si256(lo, m4) : _mm256_and_si256(_mm256_srli_epi16(lo, 4), m4);
    const __m256i hi =
        _mm256_and_si256(_mm256_srli_epi16(load32(b.qh + 32 * h), 2 * k), _mm256_set1_epi8(3));
    return _mm256_or_si256(nib, _mm256_slli_epi16(hi, 4));
  } else {
    const auto &b = *static_cast<
        const typename std::conditional_t<kType == TensorType::kQ4_K, BlockQ4_K, BlockQ5_K> *>(blk);
    const __m256i packed = load32(b.qs + 32 * (jb / 2));
    __m256i u =
        jb % 2 ? _mm256_and_si256(_mm256_srli_epi16(packed, 4), m4) : _mm256_and_si256(packed, m4);
    if constexpr (kType == TensorType::kQ5_K) {
      const __m256i bit =
          _mm256_and_si256(_mm256_srli_epi16(load32(b.qh), jb), _mm256_set1_epi8(1));
      u = _mm256_or_si256(u, _mm256_slli_epi16(bit, 4));
    }
    return u;
  }
}

template <TensorType kType> constexpr size_t kBlockBytes = 0;
template <> constexpr size_t kBlockBytes<TensorType::kQ4_K> = sizeof(BlockQ4_K);
template <> constexpr size_t kBlockBytes<TensorType::kQ5_K> = sizeof(BlockQ5_K);
template <> constexpr size_t kBlockBytes<TensorType::kQ6_K> = sizeof(BlockQ6_K);

// Scale groups per super-block: 8 of 32 columns, or Q6_K's 16 of 16.
template <TensorType kType> constexpr int kGroups = kType == TensorType::kQ6_K ? 16 : 8;

struct UnpackScratch {
  std::vector<uint8_t> q;
  std::vector<int32_t> sc, mn;
  std::vector<float> d, dmin;
};
thread_local UnpackScratch t_unpack;

// Block s of row r, row-major or packed (kernels.h). Packed blocks are rebuilt in `buf` (their
// bytes are spread over the super-block's chunks).
union KBlock {
  BlockQ4_K q4;
  BlockQ5_K q5;
  BlockQ6_K q6;
};
template <TensorType kType>
GANTRY_VNNI_INLINE const char *block_of(const WeightView &w, int64_t r, int64_t s, KBlock *buf) {
  if (w.packed16) {
    if constexpr (kType == TensorType::kQ4_K) {
      packed_k_block(w, r, s, &buf->q4);
      return reinterpret_cast<const char *>(&buf->q4);
    } else if constexpr (kType == TensorType::kQ5_K) {
      packed_k_block(w, r, s, &buf->q5);
      return reinterpret_cast<const char *>(&buf->q5);
    } else if constexpr (kType == TensorType::kQ6_K) {
      packed_k_block(w, r, s, &buf->q6);
      return reinterpret_cast<const char *>(&buf->q6);
    }
  }
  return static_cast<const char *>(w.row(r)) + s * kBlockBytes<kType>;
}

template <TensorType kType>
GANTRY_VNNI_INLINE PairK unpack_pair(const WeightView &w, int64_t r, uint8_t *q, int32_t *sc,
                                     int32_t *mn, float *d, float *dmin) {
  const int64_t nbk = w.cols / kQKK;
  KBlock buf[2];
  for (int64_t s = 0; s < nbk; ++s) {
    const char *blks[2] = {block_of<kType>(w, r, s, &buf[0]),
                           block_of<kType>(w, r + 1, s, &buf[1])};
    for (int h = 0; h < 2; ++h) {
      const char *blk = blks[h];
      if constexpr (kType == TensorType::kQ6_K) {
        const auto &b = *reinterpret_cast<const BlockQ6_K *>(blk);
        for (int g = 0; g < 16; ++g)
          sc[(s * 16 + g) * 2 + h] = b.scales[g];
        d[s * 2 + h] = _cvtsh_ss(b.d);
        dmin[s * 2 + h] = 0;
      } else {
        // d, dmin and the packed scales lead both block types.
        const auto &b = *reinterpret_cast<const BlockQ4_K *>(blk);
        for (int j = 0; j < 8; ++j) {
          uint8_t scj, mj;
          scale_min_k4(j, b.scales, &scj, &mj);
          sc[(s * 8 + j) * 2 + h] = scj;
          mn[(s * 8 + j) * 2 + h] = mj;
        }
        d[s * 2 + h] = _cvtsh_ss(b.d);
        dmin[s * 2 + h] = _cvtsh_ss(b.dmin);
      }
    }
    for (int jb = 0; jb < 8; ++jb) {
      const __m512i u = interleave_pair(block_u<kType>(blks[0], jb), block_u<kType>(blks[1], jb));
      _mm512_storeu_si512(q + (s * 8 + jb) * 64, u);
    }
  }
  return PairK{q, sc, mn, d, dmin};
}

// Both rows' int32 (or float) pair at p, broadcast: row 0 in the even lanes, row 1 in the odd.
GANTRY_VNNI_INLINE __m512i pair_i32(const int32_t *p) {
  int64_t v;
  std::memcpy(&v, p, sizeof v);
  return _mm512_set1_epi64(v);
}
GANTRY_VNNI_INLINE __m512 pair_f32(const float *p) {
  double v;
  std::memcpy(&v, p, sizeof v);
  return _mm512_castpd_ps(_mm512_set1_pd(v));
}

// The 8 tokens' int32 values at p, each in the two lanes of its token.
GANTRY_VNNI_INLINE __m512i tokens8(__m512i dup, const int32_t *p) {
  return _mm512_permutexvar_epi32(dup, _mm512_castsi256_si512(load32(p)));
}

template <TensorType kType, int P>
GANTRY_VNNI_INLINE void tile_k_group(const PairK *pk, const Activations &a, int64_t cols, int64_t r,
                                     int64_t g, int64_t t0, int64_t t1, float *y, int64_t ldy) {
  const int64_t nb = cols / kQK, nbk = cols / kQKK;
  const int8_t *xg = a.qs8 + g * nb * kTokGroup * kQK;
  const float *dg = a.d8 + g * nbk * kTokGroup;
  const int32_t *sg = a.sum8 + g * nbk * 16 * kTokGroup;
  const __m512i dup = _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
  __m512 acc[P], accm[P];
#pragma GCC unroll 4
  for (int p = 0; p < P; ++p) {
    acc[p] = _mm512_setzero_ps();
    accm[p] = _mm512_setzero_ps();
  }
  for (int64_t s = 0; s < nbk; ++s) {
    __m512i isum[P];
#pragma GCC unroll 4
    for (int p = 0; p < P; ++p)
      isum[p] = _mm512_setzero_si512();
    for (int jb = 0; jb < 8; ++jb) {
      const int64_t b = s * 8 + jb;
      const int8_t *xb = xg + b * kTokGroup * kQK;
      __m512i t[P];
#pragma GCC unroll 4
      for (int p = 0; p < P; ++p)
        t[p] = _mm512_setzero_si512();
#pragma GCC unroll 8
      for (int k = 0; k < kQK / 4; ++k) {
        const __m512i x =
            _mm512_permutexvar_epi32(dup, _mm512_castsi256_si512(load32(xb + k * 32)));
#pragma GCC unroll 4
        for (int p = 0; p < P; ++p) {
          int64_t wq;
          std::memcpy(&wq, pk[p].q + b * 64 + k * 8, sizeof wq);
          t[p] = _mm512_dpbusd_epi32(t[p], _mm512_set1_epi64(wq), x);
        }
        if constexpr (kType == TensorType::kQ6_K) {
          if (k == 3) { // the first 16 columns: their own scale
#pragma GCC unroll 4
            for (int p = 0; p < P; ++p) {
              isum[p] = _mm512_add_epi32(
                  isum[p], _mm512_mullo_epi32(t[p], pair_i32(pk[p].sc + (s * 16 + 2 * jb) * 2)));
              t[p] = _mm512_setzero_si512();
            }
          }
        }
      }
      const int64_t group = kType == TensorType::kQ6_K ? s * 16 + 2 * jb + 1 : s * 8 + jb;
#pragma GCC unroll 4
      for (int p = 0; p < P; ++p)
        isum[p] =
            _mm512_add_epi32(isum[p], _mm512_mullo_epi32(t[p], pair_i32(pk[p].sc + group * 2)));
    }
    const int32_t *ss = sg + s * 16 * kTokGroup; // this super-block's 16-sums, 8 tokens each
    __m512i imin[P];
#pragma GCC unroll 4
    for (int p = 0; p < P; ++p)
      imin[p] = _mm512_setzero_si512();
    if constexpr (kType == TensorType::kQ6_K) {
      // isum -= 32 * sum over the 16-column groups of scale x activation sum.
      for (int q = 0; q < 16; ++q) {
        const __m512i bs = tokens8(dup, ss + q * kTokGroup);
#pragma GCC unroll 4
        for (int p = 0; p < P; ++p)
          imin[p] = _mm512_add_epi32(imin[p],
                                     _mm512_mullo_epi32(pair_i32(pk[p].sc + (s * 16 + q) * 2), bs));
      }
#pragma GCC unroll 4
      for (int p = 0; p < P; ++p)
        isum[p] = _mm512_sub_epi32(isum[p], _mm512_slli_epi32(imin[p], 5));
    } else {
      for (int j = 0; j < 8; ++j) {
        const __m512i bs = _mm512_add_epi32(tokens8(dup, ss + 2 * j * kTokGroup),
                                            tokens8(dup, ss + (2 * j + 1) * kTokGroup));
#pragma GCC unroll 4
        for (int p = 0; p < P; ++p)
          imin[p] = _mm512_add_epi32(imin[p],
                                     _mm512_mullo_epi32(pair_i32(pk[p].mn + (s * 8 + j) * 2), bs));
      }
    }
    const __m512 dx =
        _mm512_permutexvar_ps(dup, _mm512_castps256_ps512(_mm256_loadu_ps(dg + s * kTokGroup)));
#pragma GCC unroll 4
    for (int p = 0; p < P; ++p) {
      acc[p] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[p]),
                               _mm512_mul_ps(pair_f32(pk[p].d + 2 * s), dx), acc[p]);
      if constexpr (kType != TensorType::kQ6_K) {
        accm[p] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(imin[p]),
                                  _mm512_mul_ps(pair_f32(pk[p].dmin + 2 * s), dx), accm[p]);
      }
    }
  }
  const int64_t j0 = std::max<int64_t>(t0 - g * kTokGroup, 0);
  const int64_t j1 = std::min<int64_t>(t1 - g * kTokGroup, kTokGroup);
#pragma GCC unroll 4
  for (int p = 0; p < P; ++p) {
    alignas(64) float out[2 * kTokGroup];
    _mm512_store_ps(out, _mm512_sub_ps(acc[p], accm[p]));
    for (int64_t j = j0; j < j1; ++j) {
      float *yt = y + (g * kTokGroup + j) * ldy + r + 2 * p;
      yt[0] = out[2 * j];
      yt[1] = out[2 * j + 1];
    }
  }
}

template <TensorType kType, int P>
GANTRY_VNNI void pairs_k(const WeightView &w, const Activations &a, int64_t r, int64_t t0,
                         int64_t t1, float *y, int64_t ldy) {
  auto &s = t_unpack;
  const int64_t nbk = w.cols / kQKK;
  auto grow = [](auto &v, int64_t n) {
    if (static_cast<int64_t>(v.size()) < n)
      v.resize(static_cast<size_t>(n));
  };
  grow(s.q, P * 2 * w.cols);
  grow(s.sc, P * 2 * nbk * kGroups<kType>);
  grow(s.mn, P * 2 * nbk * 8);
  grow(s.d, P * 2 * nbk);
  grow(s.dmin, P * 2 * nbk);
  PairK pk[P];
  for (int p = 0; p < P; ++p) {
    pk[p] = unpack_pair<kType>(
        w, r + 2 * p, s.q.data() + p * 2 * w.cols, s.sc.data() + p * 2 * nbk * kGroups<kType>,
        s.mn.data() + p * 2 * nbk * 8, s.d.data() + p * 2 * nbk, s.dmin.data() + p * 2 * nbk);
  }
  for (int64_t g = t0 / kTokGroup; g * kTokGroup < t1; ++g)
    tile_k_group<kType, P>(pk, a, w.cols, r, g, t0, t1, y, ldy);
}

template <TensorType kType>
GANTRY_VNNI void matmul_k(const WeightView &w, const Activations &a, int64_t t0, int64_t t1,
                          int64_t r0, int64_t r1, float *y, int64_t ldy) {
  int64_t r = r0;
  for (; r + 8 <= r1; r += 8)
    pairs_k<kType, 4>(w, a, r, t0, t1, y, ldy);
  for (; r + 2 <= r1; r += 2)
    pairs_k<kType, 1>(w, a, r, t0, t1, y, ldy);
  if (r < r1)
    matmul_rows_quants(w, a, t0, t1, r, r1, y, ldy);
}

} // namespace

bool matmul_rows_k_tiles(const WeightView &w, const Activations &a, int64_t t0, int64_t t1,
                         int64_t r0, int64_t r1, float *y, int64_t ldy) {
  if (t1 - t0 < kMinGroupTokens || a.qs8 == nullptr)
    return false;
  switch (w.type) {
  case TensorType::kQ4_K: matmul_k<TensorType::kQ4_K>(w, a, t0, t1, r0, r1, y, ldy); return true;
  case TensorType::kQ5_K: matmul_k<TensorType::kQ5_K>(w, a, t0, t1, r0, r1, y, ldy); return true;
  case TensorType::kQ6_K: matmul_k<TensorType::kQ6_K>(w, a, t0, t1, r0, r1, y, ldy); return true;
  default: return false;
  }
}

} // namespace gantry::engine::kernels::avx512vnni
