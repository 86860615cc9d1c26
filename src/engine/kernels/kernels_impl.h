// Internal to the kernels library: ggml block layouts, the internal activation formats, and
// the per-instruction-set entry points that kernels.cpp/matmul.cpp dispatch between.
#pragma once

#include <cmath>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "engine/kernels/blocks.h"
#include "engine/kernels/kernels.h"

namespace gantry::engine::kernels {

// Quantized activations, one token row after another. Unlike ggml we keep scales as float in
// their own array so that the int8 values stay 32-byte aligned and contiguous.
//   Q8 (for the 32-element block types): qs[t*cols + i], d[t*cols/32 + b], and for Q4_1/Q5_1
//     (whose min multiplies the block's sum of activations) sums[t*cols/32 + b] = sum of its qs
//     (read by the scalar kernels; the SIMD ones take the same sums from sum8 below)
//   Q8K (for K-quants): qs as above, d[t*cols/256 + b], bsums[t*cols/16 + g] = sum of 16 qs
//   Float types use x directly.
// The AVX2 path additionally gets the Q8 activations in groups of kTokGroup tokens, interleaved
// 4 bytes at a time so that one 32-byte load holds the same 4 elements of all 8 tokens (a
// broadcast weight word then multiplies every token of the group at once):
//   qs8[((g*nb + b)*8 + k)*32 + j*4 + i] = qs[(8g+j)*cols + 32b + 4k + i]   (k < 8, i < 4)
//   d8[(g*nb + b)*8 + j] = d[(8g+j)*nb + b],  sum8[(g*nb + b)*8 + j] = sum of that block's qs
// with tokens past the end of the call padded with zeros (nb = cols/32, g = token / 8).
// For Q4_K/Q5_K/Q6_K on the AVX-512 VNNI path qs8 is packed the same way, while d8 and sum8
// hold the Q8_K scales and 16-element sums (nbk = cols/256):
//   d8[(g*nbk + s)*8 + j] = d[(8g+j)*nbk + s],  sum8[((g*nbk + s)*16 + h)*8 + j] = bsums of
//   token 8g+j, super-block s, group h.
constexpr int kTokGroup = 8;
// Calls of at most this many tokens (decode, batched decode steps) are what the AVX2 kernels read
// repacked weights in place for; larger ones run on rows unpacked to scratch, but for the types
// avx2::packed_prefill names.
constexpr int64_t kPackedMaxTokens = kTokGroup;

// The 32-element block types' weights as the vpdpbusd kernels multiply them (the unsigned
// operand): u = w + 2^block_offset_shift — Q4_0's stored nibble w + 8, Q5_0's 5-bit w + 16 (its
// fifth bits in qh), Q8_0's and IQ4_NL's values + 128 — and sum(u * x) - offset * sum(x) =
// sum(w * x). Q4_1/Q5_1 (value d * u + m) have no offset but a min.
constexpr bool block_has_min(TensorType t) {
  return t == TensorType::kQ4_1 || t == TensorType::kQ5_1;
}
constexpr bool block_fifth_bit(TensorType t) {
  return t == TensorType::kQ5_0 || t == TensorType::kQ5_1;
}
constexpr int block_offset_shift(TensorType t) {
  return t == TensorType::kQ4_0 ? 3 : t == TensorType::kQ5_0 ? 4 : 7;
}
// Their packed layout (kernels.h, "repacked weights"), from a 16-row group's start: the nb
// blocks' 16 fp16 scales, for Q4_1/Q5_1 as many mins, then per block packed_block_chunks 64-byte
// chunks of 4 bytes of every row (Q5_0/Q5_1's qh chunk first). Packing (packed.cpp) and the
// kernels that read it share these.
constexpr int64_t packed_block_chunks(TensorType t) {
  return t == TensorType::kQ8_0 ? 8 : block_fifth_bit(t) ? 5 : 4;
}
constexpr int64_t packed_quants_at(TensorType t, int64_t nb) {
  return nb * 32 * (block_has_min(t) ? 2 : 1);
}

// Packed K-quants (kernels.h): super-block s of a 16-row group takes the 16 rows' blocks' bytes
// (at group + s * 16 * sizeof(Block)), rearranged so that every 64 bytes hold 4 bytes of each row
// (row i's at 4i). The pieces of row i, as copy(offset in its block, offset in the super-block,
// bytes) — one list serves packing and unpacking:
// Q4_K: d and dmin at 4i, the scale bytes 0-3, 4-7 and 8-11 as three arrays of 16 dwords (64,
//   128, 192), then 32 chunks from 256: chunk 8c + k holds qs bytes 32c + 4k..+3 (its low nibbles
//   are elements 64c + 4k.., sub-block 2c; its high nibbles 64c + 32 + 4k.., sub-block 2c + 1).
// Q5_K: Q4_K's layout (its d, dmin, scales and qs), then 8 chunks from 2304: chunk m holds qh
//   bytes 4m..4m + 3 (bit j of qh[l] is the fifth bit of element 32j + l).
// Q6_K: d at 2i, the scale bytes 4p..4p + 3 as four arrays of 16 dwords (32 + 64p), then for half
//   h and piece k, 192 bytes at 288 + (8h + k) * 192: ql bytes 64h + 4k.., ql bytes
//   64h + 32 + 4k.. and qh bytes 32h + 4k.., 64 each.
// Q2_K (packed by the AVX2 kernels only): d and dmin at 4i, the scale bytes 4p..4p + 3 at
//   64 + 64p, then 16 chunks from 320: chunk k holds qs bytes 4k..4k + 3.
// Q3_K (AVX2 only): d at 2i, the scale bytes 0-3, 4-7, 8-11 at 32, 96, 160, hmask bytes 4m..4m + 3
//   at 224 + 64m, then 16 chunks from 736: chunk k holds qs bytes 4k..4k + 3.
template <typename Block, typename Copy> inline void packed_k_pieces(size_t i, Copy &&copy) {
  if constexpr (std::is_same_v<Block, BlockQ2_K>) {
    copy(offsetof(BlockQ2_K, d), 4 * i, 2);
    copy(offsetof(BlockQ2_K, dmin), 4 * i + 2, 2);
    for (size_t p = 0; p < 4; ++p)
      copy(offsetof(BlockQ2_K, scales) + 4 * p, 64 + 64 * p + 4 * i, 4);
    for (size_t k = 0; k < 16; ++k)
      copy(offsetof(BlockQ2_K, qs) + 4 * k, 320 + 64 * k + 4 * i, 4);
  } else if constexpr (std::is_same_v<Block, BlockQ3_K>) {
    copy(offsetof(BlockQ3_K, d), 2 * i, 2);
    for (size_t p = 0; p < 3; ++p)
      copy(offsetof(BlockQ3_K, scales) + 4 * p, 32 + 64 * p + 4 * i, 4);
    for (size_t m = 0; m < 8; ++m)
      copy(offsetof(BlockQ3_K, hmask) + 4 * m, 224 + 64 * m + 4 * i, 4);
    for (size_t k = 0; k < 16; ++k)
      copy(offsetof(BlockQ3_K, qs) + 4 * k, 736 + 64 * k + 4 * i, 4);
  } else if constexpr (std::is_same_v<Block, BlockQ4_K> || std::is_same_v<Block, BlockQ5_K>) {
    copy(offsetof(Block, d), 4 * i, 2);
    copy(offsetof(Block, dmin), 4 * i + 2, 2);
    for (size_t part = 0; part < 3; ++part)
      copy(offsetof(Block, scales) + 4 * part, 64 * (part + 1) + 4 * i, 4);
    for (size_t chunk = 0; chunk < 32; ++chunk)
      copy(offsetof(Block, qs) + 4 * chunk, 256 + 64 * chunk + 4 * i, 4);
    if constexpr (std::is_same_v<Block, BlockQ5_K>) {
      for (size_t m = 0; m < 8; ++m)
        copy(offsetof(BlockQ5_K, qh) + 4 * m, 2304 + 64 * m + 4 * i, 4);
    }
  } else {
    static_assert(std::is_same_v<Block, BlockQ6_K>);
    copy(offsetof(BlockQ6_K, d), 2 * i, 2);
    for (size_t part = 0; part < 4; ++part)
      copy(offsetof(BlockQ6_K, scales) + 4 * part, 32 + 64 * part + 4 * i, 4);
    for (size_t h = 0; h < 2; ++h) {
      for (size_t k = 0; k < 8; ++k) {
        const size_t piece = 288 + (8 * h + k) * 192 + 4 * i;
        copy(offsetof(BlockQ6_K, ql) + 64 * h + 4 * k, piece, 4);
        copy(offsetof(BlockQ6_K, ql) + 64 * h + 32 + 4 * k, piece + 64, 4);
        copy(offsetof(BlockQ6_K, qh) + 32 * h + 4 * k, piece + 128, 4);
      }
    }
  }
}
template <typename Block>
inline const uint8_t *packed_k_super(const WeightView &w, int64_t g, int64_t s) {
  return static_cast<const uint8_t *>(w.data) + static_cast<size_t>(g) * 16 * w.row_stride +
         static_cast<size_t>(s) * 16 * sizeof(Block);
}
// Row r's super-block s of a packed K-quant matrix back in ggml's layout.
template <typename Block>
inline void packed_k_block(const WeightView &w, int64_t r, int64_t s, Block *out) {
  const uint8_t *sb = packed_k_super<Block>(w, r / 16, s);
  packed_k_pieces<Block>(static_cast<size_t>(r % 16),
                         [&](size_t in_block, size_t in_super, size_t n) {
                           std::memcpy(reinterpret_cast<char *>(out) + in_block, sb + in_super, n);
                         });
}

// Prefetch of the next 16-row group of a packed matrix (kernels.h; the AVX-512 and AVX2 packed
// kernels) while this one is read: the groups follow each other, and the hardware prefetcher
// alone leaves the core waiting at each group's start. Spread over the `steps` steps of this
// group's loop, so that the next group has arrived when this one ends (a group of Q8_0 rows 2048
// wide is 34 KiB).
struct NextGroupPrefetch {
  const char *next;
  int64_t bytes, per_step, done = 0;
  // Part `part` of `parts` of the next group's lines, for kernels that pass over a group several
  // times (a pass per few tokens): each pass fetches its share, so that memory stays busy while
  // the later passes compute from cache.
  NextGroupPrefetch(const WeightView &w, int64_t g, int64_t steps, int64_t part = 0,
                    int64_t parts = 1)
      : next(static_cast<const char *>(w.data) + static_cast<size_t>(g + 1) * 16 * w.row_stride +
             share(w, g, part, parts) * 64),
        bytes((share(w, g, part + 1, parts) - share(w, g, part, parts)) * 64),
        per_step((bytes + steps * 64 - 1) / (steps * 64)) {}
  // The first line of part `part`: lines * part / parts.
  static int64_t share(const WeightView &w, int64_t g, int64_t part, int64_t parts) {
    const int64_t lines = (g + 1) * 16 < w.rows ? w.row_stride / 4 : 0;
    return parts == 1 ? lines * part : lines * part / parts; // no division per group at decode
  }
  // Once per step.
  void step() {
    for (int64_t k = 0; k < per_step; ++k, done += 64) {
      if (done < bytes)
        __builtin_prefetch(next + done, 0, 3); // prefetcht0
    }
  }
};

struct Activations {
  const float *x = nullptr;
  const int8_t *qs = nullptr;
  const float *d = nullptr;
  const int16_t *bsums = nullptr;
  const int32_t *sums = nullptr;
  const int8_t *qs8 = nullptr;
  const float *d8 = nullptr;
  const int32_t *sum8 = nullptr;
  int64_t cols = 0;
};

enum class ActKind { kFloat, kQ8, kQ8K };
ActKind act_kind(TensorType t);
// Whether the type's dot product needs Activations::sums (Q4_1, Q5_1).
bool needs_block_sums(TensorType t);

// Rows of flash attention's softmax·V whose weights are computed before the accumulation (one
// 16-lane vector of them on AVX-512).
constexpr int64_t kAttendChunk = 16;
// The online softmax's weights for rows [0, nr) of each head's scores s + h * s_stride: ms (the
// rescale of what was accumulated) and vs (the row's weight), updating the running max m and sum,
// as llama.cpp's flash attention computes them: the AVX2 attend_rows_f16's. The scalar one computes
// the same in its loop, the AVX-512 one 16 rows at a time (kernels_avx512_attend.cpp).
inline void attend_weights(const float *s, int64_t s_stride, int n_q, int64_t nr, float *m,
                           float *sum, float (*ms)[kAttendChunk], float (*vs)[kAttendChunk]) {
  for (int h = 0; h < n_q; ++h) {
    const float *sh = s + h * s_stride;
    float mx = m[h], sm = sum[h];
    for (int64_t r = 0; r < nr; ++r) {
      ms[h][r] = 1.0f;
      vs[h][r] = 1.0f;
      if (sh[r] > mx) {
        ms[h][r] = std::exp(mx - sh[r]);
        mx = sh[r];
      } else {
        vs[h][r] = std::exp(sh[r] - mx);
      }
      sm = std::fma(sm, ms[h][r], vs[h][r]);
    }
    m[h] = mx;
    sum[h] = sm;
  }
}

// glibc's expf table as the vector copies of it use it (kernels_avx512_attend.cpp exp16,
// kernels_avx2.cpp exp8): 2^(i/32) as a double, less i << 47, so that adding k << 47 gives
// 2^(k/32) for any k.
struct ExpTable {
  alignas(64) uint64_t t[32];
};
const ExpTable &exp_table();
// The lanes of y whose bit is set in `special` (glibc's special cases: |x| >= 88, inf, NaN) from
// std::exp itself, for the vector copies above; xs and ys hold n lanes.
inline void exp_special_lanes(unsigned special, const float *xs, float *ys, int n) {
  for (int l = 0; l < n; ++l) {
    if (special >> l & 1)
      ys[l] = std::exp(xs[l]);
  }
}

// Each instruction set provides the same functions in its own namespace.
#define GANTRY_KERNELS_ISA_FUNCTIONS                                                               \
  void matmul_rows(const WeightView &w, const Activations &a, int64_t t0, int64_t t1, int64_t r0,  \
                   int64_t r1, float *y, int64_t ldy);                                             \
  void quantize_act_q8(const float *x, int8_t *qs, float *d, int64_t n);                           \
  void quantize_act_q8k(const float *x, int8_t *qs, float *d, int16_t *bsums, int64_t n);          \
  void fp16_to_fp32_row(const uint16_t *src, float *dst, int64_t n);                               \
  void fp32_to_fp16_row(const float *src, uint16_t *dst, int64_t n);                               \
  void softmax(float *x, int64_t n);                                                               \
  void add(const float *a, const float *b, float *out, int64_t n);                                 \
  void scale(float *x, float s, int64_t n);                                                        \
  float dot_f32(const float *a, const float *b, int64_t n);                                        \
  void axpy(float a, const float *x, float *y, int64_t n);                                         \
  void dot_rows(const float *q, const float *rows, int64_t stride, int64_t n_rows, int64_t n,      \
                float scale, float *out);                                                          \
  void axpy_rows(const float *w, const float *rows, int64_t stride, int64_t n_rows, int64_t n,     \
                 float *y);                                                                        \
  void dot_rows(const float *q, const uint16_t *rows, int64_t stride, int64_t n_rows, int64_t n,   \
                float scale, float *out);                                                          \
  void axpy_rows(const float *w, const uint16_t *rows, int64_t stride, int64_t n_rows, int64_t n,  \
                 float *y);                                                                        \
  void attend_rows_f16(const float *s, int64_t s_stride, int n_q, const uint16_t *rows,            \
                       int64_t stride, int64_t n_rows, int64_t n, float *m, float *sum,            \
                       uint16_t *acc);

namespace scalar {
GANTRY_KERNELS_ISA_FUNCTIONS
// One output of the types in quants.h (Q4_1, Q5_0, Q5_1, IQ4_NL, Q2_K, Q3_K, Q5_K) and of
// Q4_K/Q6_K.
float dot_row_quants(TensorType type, const void *row, const Activations &a, int64_t t);
} // namespace scalar
#if defined(__x86_64__)
#define GANTRY_KERNELS_HAVE_AVX2 1
// 16 rows of n 16-bit elements (F16/BF16) to one column-major group: row i's column k at
// out[16k + i] (kernels.h, "repacked weights", k_major). packed.cpp.
void transpose_half_group(const uint16_t *const rows[16], int64_t n, uint16_t *out);

namespace avx2 {
GANTRY_KERNELS_ISA_FUNCTIONS
// Decode over repacked weights (kernels_avx2_packed.cpp): whole 16-row groups of a packed
// 32-element block type or K-quant matrix x up to kPackedMaxTokens tokens, and F16/BF16 k_major
// groups x any number of tokens (matmul_rows_half); the row-major kernels' bits. Returns false
// (doing nothing) for other types and shapes.
bool matmul_rows_packed(const WeightView &w, const Activations &a, int64_t t0, int64_t t1,
                        int64_t r0, int64_t r1, float *y, int64_t ldy);
// The types matmul_rows_packed reads.
bool packs_rows16(TensorType type);
// The types it also reads for calls of more than kPackedMaxTokens tokens (prefill): the K-quants
// (kernels_avx2_kpacked.cpp), Q4_0/Q4_1/Q5_0/Q5_1 (kernels_avx2_packed.cpp) and F16/BF16
// (kernels_avx2_half.cpp, k_major views); Q8_0 and IQ4_NL are unpacked to row-major scratch for
// those.
bool packed_prefill(TensorType type);
// matmul_rows_packed's K-quants, Q2_K..Q6_K (kernels_avx2_kpacked.cpp): the dot products' bits.
// Returns false (doing nothing) for other types.
bool matmul_rows_k_packed(const WeightView &w, const Activations &a, int64_t t0, int64_t t1,
                          int64_t r0, int64_t r1, float *y, int64_t ldy);
// matmul_rows for the K-quants (kernels_avx2_quants.cpp).
void matmul_rows_quants(const WeightView &w, const Activations &a, int64_t t0, int64_t t1,
                        int64_t r0, int64_t r1, float *y, int64_t ldy);
// Prefill tiles of the K-quants (kernels_avx2_ktiles.cpp) for calls of at least 4 tokens:
// the dot products' bits. Returns false (doing nothing) for other types and shapes.
bool matmul_rows_k_tiles(const WeightView &w, const Activations &a, int64_t t0, int64_t t1,
                         int64_t r0, int64_t r1, float *y, int64_t ldy);
// F16/BF16 x float activations when AVX2 is the active ISA (kernels_avx2_half.cpp): row-major
// rows, and whole 16-row groups of a k_major packed matrix; each output one fma chain over the
// columns in order. Returns false (doing nothing) for other types and for other packed views.
bool matmul_rows_half(const WeightView &w, const Activations &a, int64_t t0, int64_t t1, int64_t r0,
                      int64_t r1, float *y, int64_t ldy);
// y[i] = std::exp(x[i]) bit for bit, 8 at a time (glibc's expf steps, as
// avx512vnni::exp_lanes); what attend_rows_f16 computes its weights with.
void exp_lanes(const float *x, float *y, int64_t n);
} // namespace avx2
// AVX-512 VNNI replaces the Q8_0/Q4_0/float tiles of the matmul and the dot products of the
// types in quants.h; everything else it shares with (and forwards to) the AVX2 kernels, so
// Isa::kAvx512Vnni runs the avx2 functions above too.
namespace avx512vnni {
void matmul_rows(const WeightView &w, const Activations &a, int64_t t0, int64_t t1, int64_t r0,
                 int64_t r1, float *y, int64_t ldy);
// Prefill tiles for Q4_K/Q5_K/Q6_K (kernels_avx512_kquants.cpp), for calls of at least 4 tokens
// whose activations were packed by groups; returns false (doing nothing) otherwise.
bool matmul_rows_k_tiles(const WeightView &w, const Activations &a, int64_t t0, int64_t t1,
                         int64_t r0, int64_t r1, float *y, int64_t ldy);
// Decode (kernels_avx512_gemv.cpp): Q8_0/Q4_0 and one-token F32/F16/BF16 calls of fewer than 4
// tokens, 16 rows per tile with the next tile prefetched; the AVX2 kernels' bits. Returns false
// (doing nothing) for other types and shapes.
bool matmul_rows_gemv(const WeightView &w, const Activations &a, int64_t t0, int64_t t1, int64_t r0,
                      int64_t r1, float *y, int64_t ldy);
// Decode of Q4_K and Q6_K (kernels_avx512_kgemv.cpp): calls of fewer than 4 tokens, 16 rows per
// tile with the next tile prefetched; the dot products' bits. Returns false (doing nothing) for
// other types and shapes.
bool matmul_rows_k_gemv(const WeightView &w, const Activations &a, int64_t t0, int64_t t1,
                        int64_t r0, int64_t r1, float *y, int64_t ldy);
// The same K-quant dot products as avx2::matmul_rows_quants with vpdpbusd; the very same bits.
void matmul_rows_quants(const WeightView &w, const Activations &a, int64_t t0, int64_t t1,
                        int64_t r0, int64_t r1, float *y, int64_t ldy);
// Flash attention's softmax·V into fp16 accumulators (kernels.h attend_rows_f16) with 16 lanes and
// up to 8 heads in registers; the AVX2 kernel's bits. Returns false (doing nothing) when the
// head width is not a multiple of 16.
bool attend_rows_f16(const float *s, int64_t s_stride, int n_q, const uint16_t *rows,
                     int64_t stride, int64_t n_rows, int64_t n, float *m, float *sum,
                     uint16_t *acc);
// y[i] = std::exp(x[i]) bit for bit (glibc's expf as it runs on CPUs with FMA), 16 at a time;
// what attend_rows_f16 computes its weights with.
void exp_lanes(const float *x, float *y, int64_t n);
} // namespace avx512vnni
#endif

} // namespace gantry::engine::kernels
