// F16/BF16 weights x float activations when AVX2 is the active ISA: every call, decode and
// prefill, packed or row-major.
//
// Bits: each output is one chain acc = fma(w[r][k], x[k], acc) over the columns k in order from
// acc = 0 (what std::fma in a loop computes), so no tile shape, batch size, row range or thread
// split can change an output. The kernels hold 16 rows' chains in two registers (one lane a row)
// and multiply them by a broadcast activation, an outer product: per column step a tile of 16
// rows x 6 tokens loads two weight vectors and six scalars for 12 fmas. The 8-lane dot products
// this replaced (3 rows x 4 tokens, each fma needing a weight and an activation vector) read
// 128 bytes of activations from L2 per 12 fmas, which is all L2 gives a Zen 3 core, and reached
// 41-44 GMAC/s on one core against 50 for these (a standalone probe, 48 rows x 2048 columns x 48
// tokens; the core's FMA peak is 50).
//
// That needs 16 rows' weights of one column side by side: pack_rows16 stores F16/BF16 groups
// column-major under AVX2 (kernels.h, "repacked weights", k_major), and rows that are not packed
// (a matrix whose rows are not a multiple of 16, a chunk off the group boundary) are transposed
// into that layout in scratch first, 16 rows at a time.
//
// AVX-512 keeps its 8-lane dot products (kernels_avx512.cpp, whose float kernels forward their
// tails to kernels_avx2.cpp's row-major dot products, which stay for it): F16/BF16 outputs are
// not the same bits under the two ISAs, each is the same bits for every batch size under its own.
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
// Token tiles of prefill: 16 rows x 6 tokens = 12 accumulators, with two weight vectors and one
// broadcast activation 15 of the 16 ymm registers.
constexpr int kTileTokens = 6;

// G column-major groups (group i at w + i * gstride elements; row r's column k at k * 16 + r) x T
// tokens (token j's activations at x + j * n). Output row r of group i, token j: out + j * ldy +
// 16 * i + r, for the first `valid` rows of the last group (all 16 of the others).
template <TensorType kType, int G, int T>
GANTRY_AVX2_INLINE void tile(const uint16_t *w, int64_t gstride, const float *x, int64_t n,
                             float *out, int64_t ldy, int valid = kGroupRows,
                             const char *pf = nullptr, int pf_step = 0) {
  // pf: bytes to prefetch into L2, pf_step of them per column (the next group's, see
  // groups_x_tokens).
  __m256 acc[G][2][T];
#pragma GCC unroll 8
  for (int i = 0; i < G; ++i) {
#pragma GCC unroll 8
    for (int j = 0; j < T; ++j) {
      acc[i][0][j] = _mm256_setzero_ps();
      acc[i][1][j] = _mm256_setzero_ps();
    }
  }
  for (int64_t k = 0; k < n; ++k) {
    if (pf != nullptr)
      _mm_prefetch(pf + k * pf_step, _MM_HINT_T1);
#pragma GCC unroll 8
    for (int i = 0; i < G; ++i) {
      const uint16_t *col = w + i * gstride + k * kGroupRows;
      const __m256 w0 = load8<kType>(col, 0), w1 = load8<kType>(col, 8);
#pragma GCC unroll 8
      for (int j = 0; j < T; ++j) {
        // A broadcast from memory is a load alone (no shuffle): re-read per group rather than
        // held, so that G x T tiles keep their accumulators in registers.
        const __m256 b = _mm256_broadcast_ss(x + j * n + k);
        acc[i][0][j] = _mm256_fmadd_ps(w0, b, acc[i][0][j]);
        acc[i][1][j] = _mm256_fmadd_ps(w1, b, acc[i][1][j]);
      }
    }
  }
#pragma GCC unroll 8
  for (int i = 0; i < G; ++i) {
#pragma GCC unroll 8
    for (int j = 0; j < T; ++j) {
      float *o = out + j * ldy + kGroupRows * i;
      if (i + 1 < G || valid == kGroupRows) {
        _mm256_storeu_ps(o, acc[i][0][j]);
        _mm256_storeu_ps(o + 8, acc[i][1][j]);
      } else {
        alignas(32) float tmp[kGroupRows];
        _mm256_store_ps(tmp, acc[i][0][j]);
        _mm256_store_ps(tmp + 8, acc[i][1][j]);
        std::memcpy(o, tmp, sizeof(float) * static_cast<size_t>(valid));
      }
    }
  }
}

// Tokens [t0, t1) x groups [g0, g1) (group g at w + g * gstride), outputs for group g's rows at
// y + 16 * g (token t at row t * ldy); the last group has `valid` rows. Few tokens (decode, a
// batched decode step) take several groups at once so that 8-12 chains hide the fma latency;
// more tokens take one group per tile, up to 6 tokens at a time, the group's column panel
// staying in cache across the token tiles.
template <TensorType kType>
GANTRY_AVX2_INLINE void groups_x_tokens(const uint16_t *w, int64_t gstride, int64_t g0, int64_t g1,
                                        int valid, const Activations &a, int64_t n, int64_t t0,
                                        int64_t t1, float *y, int64_t ldy) {
  const int64_t nt = t1 - t0;
  const float *x = a.x + t0 * n;
  float *yt = y + t0 * ldy;
  auto rows_of = [&](int64_t g_end) { return g_end == g1 ? valid : static_cast<int>(kGroupRows); };
  if (nt <= 3) {
    // Decode: 4 groups at a time for one token, 2 for two or three; the groups left one by one.
    auto run = [&]<int G, int T>() GANTRY_AVX2_LAMBDA {
      auto one = [&]<int H>(int64_t g) GANTRY_AVX2_LAMBDA {
        tile<kType, H, T>(w + g * gstride, gstride, x, n, yt + kGroupRows * g, ldy, rows_of(g + H));
      };
      int64_t g = g0;
      for (; g + G <= g1; g += G)
        one.template operator()<G>(g);
      for (; g < g1; ++g)
        one.template operator()<1>(g);
    };
    if (nt == 1)
      run.template operator()<4, 1>();
    else if (nt == 2)
      run.template operator()<2, 2>();
    else
      run.template operator()<2, 3>();
    return;
  }
  // The fewest tiles of at most 6 tokens, of sizes as even as they go: 8 tokens (an 8-sequence
  // decode step) as 4 + 4 rather than 6 + 2, whose 4 chains left half the fma slots idle
  // (8-sequence F16 decode 47 -> 49-54 tok/s). Taking the tiles in turns over 256-column
  // blocks, so that the second reads the group from L1 rather than L2, made no difference
  // beyond the noise and was dropped.
  const int64_t tiles = (nt + kTileTokens - 1) / kTileTokens;
  // The next group goes into L2 while this one's tiles run, spread over the last `shares` tiles
  // (both of a 7-12 token call, an 8-sequence decode step; the last one of more). Without it
  // the first tile of a group pulled it from memory at the rate its fmas use it (~25 GB/s on
  // one core, more than a core gets) while the others read L2 and left memory idle
  // (docs/BENCHMARKS.md, "8-sequence F16 steps": 57.9 -> 73.9 tok/s).
  const int64_t shares = tiles == 2 ? 2 : 1;
  const int pf_step = static_cast<int>(2 * kGroupRows / shares); // bytes per column
  for (int64_t g = g0; g < g1; ++g) {
    const uint16_t *wg = w + g * gstride;
    const char *next = g + 1 < g1 ? reinterpret_cast<const char *>(wg + gstride) : nullptr;
    float *o = yt + kGroupRows * g;
    const int v = rows_of(g + 1);
    int64_t j = 0;
    for (int64_t i = 0; i < tiles; ++i) {
      const int64_t size = (nt - j + tiles - i - 1) / (tiles - i);
      const float *xj = x + j * n;
      float *oj = o + j * ldy;
      const int64_t share = i - (tiles - shares);
      const char *pf = next != nullptr && share >= 0 ? next + share * pf_step * n : nullptr;
      switch (size) {
      case 6: tile<kType, 1, 6>(wg, gstride, xj, n, oj, ldy, v, pf, pf_step); break;
      case 5: tile<kType, 1, 5>(wg, gstride, xj, n, oj, ldy, v, pf, pf_step); break;
      case 4: tile<kType, 1, 4>(wg, gstride, xj, n, oj, ldy, v, pf, pf_step); break;
      case 3: tile<kType, 1, 3>(wg, gstride, xj, n, oj, ldy, v, pf, pf_step); break;
      case 2: tile<kType, 1, 2>(wg, gstride, xj, n, oj, ldy, v, pf, pf_step); break;
      default: tile<kType, 1, 1>(wg, gstride, xj, n, oj, ldy, v, pf, pf_step); break;
      }
      j += size;
    }
  }
}

// Rows 0-7 of rows[] at columns [k0, k0 + 8) as 8 vectors of one column each (8 x 8 transpose).
template <TensorType kType>
GANTRY_AVX2_INLINE void columns8(const uint16_t *const *rows, int64_t k0, __m256 c[8]) {
  __m256 r[8];
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i)
    r[i] = load8<kType>(rows[i], k0);
  const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  // s(2c), s(2c + 1): columns c and c + 4 of rows 0-3 (s0-s3) and of rows 4-7 (s4-s7).
  const __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  const __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  const __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  const __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  c[0] = _mm256_permute2f128_ps(s0, s4, 0x20);
  c[1] = _mm256_permute2f128_ps(s1, s5, 0x20);
  c[2] = _mm256_permute2f128_ps(s2, s6, 0x20);
  c[3] = _mm256_permute2f128_ps(s3, s7, 0x20);
  c[4] = _mm256_permute2f128_ps(s0, s4, 0x31);
  c[5] = _mm256_permute2f128_ps(s1, s5, 0x31);
  c[6] = _mm256_permute2f128_ps(s2, s6, 0x31);
  c[7] = _mm256_permute2f128_ps(s3, s7, 0x31);
}

// 16 row-major rows (rows[i]; missing ones point at zeros) x T <= 3 tokens, the packed tiles'
// chains: each 8 x 8 block of a half's rows is turned into column vectors in registers, so that
// decode of row-major rows streams them once, as the dot products did; one half (8 rows, 8
// streams) after the other: 3.9-4.2 tok/s against 3.5 for both halves side by side.
template <TensorType kType, int T>
GANTRY_AVX2_INLINE void rows16_decode(const uint16_t *const rows[kGroupRows], const float *x,
                                      int64_t n, float *out, int64_t ldy, int valid) {
  __m256 acc[2][T];
#pragma GCC unroll 4
  for (int j = 0; j < T; ++j) {
    acc[0][j] = _mm256_setzero_ps();
    acc[1][j] = _mm256_setzero_ps();
  }
  const int64_t n8 = n / 8 * 8;
  for (int h = 0; h < 2; ++h) {
    for (int64_t k0 = 0; k0 < n8; k0 += 8) {
      __m256 c[8];
      columns8<kType>(rows + 8 * h, k0, c);
#pragma GCC unroll 8
      for (int k = 0; k < 8; ++k) {
#pragma GCC unroll 4
        for (int j = 0; j < T; ++j)
          acc[h][j] = _mm256_fmadd_ps(c[k], _mm256_broadcast_ss(x + j * n + k0 + k), acc[h][j]);
      }
    }
  }
  for (int64_t k0 = n8; k0 < n; ++k0) {
#pragma GCC unroll 2
    for (int h = 0; h < 2; ++h) {
      alignas(32) float col[8];
      for (int i = 0; i < 8; ++i)
        col[i] = load1<kType>(rows[8 * h + i], k0);
      const __m256 c = _mm256_load_ps(col);
#pragma GCC unroll 4
      for (int j = 0; j < T; ++j)
        acc[h][j] = _mm256_fmadd_ps(c, _mm256_broadcast_ss(x + j * n + k0), acc[h][j]);
    }
  }
#pragma GCC unroll 4
  for (int j = 0; j < T; ++j) {
    alignas(32) float tmp[kGroupRows];
    _mm256_store_ps(tmp, acc[0][j]);
    _mm256_store_ps(tmp + 8, acc[1][j]);
    std::memcpy(out + j * ldy, tmp, sizeof(float) * static_cast<size_t>(valid));
  }
}

template <TensorType kType>
GANTRY_AVX2 void matmul_half(const WeightView &w, const Activations &a, int64_t t0, int64_t t1,
                             int64_t r0, int64_t r1, float *y, int64_t ldy) {
  const int64_t n = w.cols;
  if (w.packed16) {
    // Whole groups in place (matmul.cpp hands a packed matrix only whole groups under AVX2).
    const auto *base = static_cast<const uint16_t *>(w.data);
    const int64_t gstride = kGroupRows * n;
    groups_x_tokens<kType>(base, gstride, r0 / kGroupRows, r1 / kGroupRows, kGroupRows, a, n, t0,
                           t1, y, ldy);
    return;
  }
  // Row-major rows (a matrix whose rows are not a multiple of 16, such as a vocabulary of
  // 32001, GANTRY_NO_REPACK, rows off the groups of a packed one), 16 at a time, the last
  // padded with zero rows. Decode turns 8 x 8 blocks into columns in registers; more tokens
  // transpose the 16 rows into a column-major group in scratch once for all of them. Decode of
  // the F16 TinyLlama with GANTRY_NO_REPACK=1: 3.9-4.2 tok/s against 5.4-6.0 for the 8-lane
  // dot products this order replaced (1.8-1.9 through the scratch group); repacked, 14-16.
  thread_local std::vector<uint16_t> t_group, t_zeros;
  const int64_t nt = t1 - t0;
  if (nt > 3 && t_group.size() < static_cast<size_t>(kGroupRows * n))
    t_group.resize(static_cast<size_t>(kGroupRows * n));
  uint16_t *group = t_group.data();
  for (int64_t r = r0; r < r1; r += kGroupRows) {
    const int rows = static_cast<int>(std::min<int64_t>(kGroupRows, r1 - r));
    if (rows < kGroupRows && t_zeros.size() < static_cast<size_t>(n))
      t_zeros.resize(static_cast<size_t>(n), 0);
    const uint16_t *src[kGroupRows];
    for (int i = 0; i < kGroupRows; ++i)
      src[i] = i < rows ? static_cast<const uint16_t *>(w.row(r + i)) : t_zeros.data();
    if (nt <= 3) {
      const float *x = a.x + t0 * n;
      float *o = y + t0 * ldy + r;
      if (nt == 1)
        rows16_decode<kType, 1>(src, x, n, o, ldy, rows);
      else if (nt == 2)
        rows16_decode<kType, 2>(src, x, n, o, ldy, rows);
      else
        rows16_decode<kType, 3>(src, x, n, o, ldy, rows);
      continue;
    }
    transpose_half_group(src, n, group);
    // The group's outputs start at column r of y: shift y so that group 0 lands there.
    groups_x_tokens<kType>(group, 0, 0, 1, rows, a, n, t0, t1, y + r, ldy);
  }
}

} // namespace

bool matmul_rows_half(const WeightView &w, const Activations &a, int64_t t0, int64_t t1, int64_t r0,
                      int64_t r1, float *y, int64_t ldy) {
  if (w.packed16 && (!w.k_major || r0 % kGroupRows != 0 || r1 % kGroupRows != 0))
    return false;
  switch (w.type) {
  case TensorType::kF16: matmul_half<TensorType::kF16>(w, a, t0, t1, r0, r1, y, ldy); return true;
  case TensorType::kBF16: matmul_half<TensorType::kBF16>(w, a, t0, t1, r0, r1, y, ldy); return true;
  default: return false;
  }
}

} // namespace gantry::engine::kernels::avx2
