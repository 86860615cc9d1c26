// Internal to the kernels library: ggml block layouts, the internal activation formats, and
// the per-instruction-set entry points that kernels.cpp/matmul.cpp dispatch between.
#pragma once

#include <cstddef>
#include <cstdint>

#include "engine/kernels/kernels.h"

namespace gantry::engine::kernels {

// Block layouts exactly as ggml stores them in GGUF files (ggml-common.h).
constexpr int kQK = 32;   // elements per Q8_0/Q4_0 block
constexpr int kQKK = 256; // elements per K-quant super-block

struct BlockQ8_0 {
  uint16_t d; // fp16 scale
  int8_t qs[kQK];
};
static_assert(sizeof(BlockQ8_0) == 34);

struct BlockQ4_0 {
  uint16_t d;          // fp16 scale
  uint8_t qs[kQK / 2]; // element i in low nibble of qs[i], element i+16 in the high nibble
};
static_assert(sizeof(BlockQ4_0) == 18);

struct BlockQ4_K {
  uint16_t d;           // fp16 scale of the 6-bit sub-block scales
  uint16_t dmin;        // fp16 scale of the 6-bit sub-block mins
  uint8_t scales[12];   // 8 scales and 8 mins, 6 bits each (see scale_min_k4)
  uint8_t qs[kQKK / 2]; // per 64 elements: 32 bytes, low nibbles first 32, high nibbles next 32
};
static_assert(sizeof(BlockQ4_K) == 144);

struct BlockQ6_K {
  uint8_t ql[kQKK / 2];     // low 4 bits
  uint8_t qh[kQKK / 4];     // high 2 bits
  int8_t scales[kQKK / 16]; // one per 16 elements
  uint16_t d;               // fp16 super-block scale
};
static_assert(sizeof(BlockQ6_K) == 210);

// Sub-block j's 6-bit scale and min of a Q4_K super-block: the first four are stored plainly in
// bytes 0..3 / 4..7; the last four keep their low 4 bits in bytes 8..11 and their top 2 bits in
// the spare high bits of bytes 0..7.
inline void scale_min_k4(int j, const uint8_t *q, uint8_t *sc, uint8_t *m) {
  if (j < 4) {
    *sc = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *sc = static_cast<uint8_t>((q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4));
    *m = static_cast<uint8_t>((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
  }
}

// Quantized activations, one token row after another. Unlike ggml we keep scales as float in
// their own array so that the int8 values stay 32-byte aligned and contiguous.
//   Q8 (for Q8_0/Q4_0): qs[t*cols + i], d[t*cols/32 + b]
//   Q8K (for K-quants): qs as above, d[t*cols/256 + b], bsums[t*cols/16 + g] = sum of 16 qs
//   Float types use x directly.
// The AVX2 path additionally gets the Q8 activations in groups of kTokGroup tokens, interleaved
// 4 bytes at a time so that one 32-byte load holds the same 4 elements of all 8 tokens (a
// broadcast weight word then multiplies every token of the group at once):
//   qs8[((g*nb + b)*8 + k)*32 + j*4 + i] = qs[(8g+j)*cols + 32b + 4k + i]   (k < 8, i < 4)
//   d8[(g*nb + b)*8 + j] = d[(8g+j)*nb + b],  sum8[(g*nb + b)*8 + j] = sum of that block's qs
// with tokens past the end of the call padded with zeros (nb = cols/32, g = token / 8).
constexpr int kTokGroup = 8;
struct Activations {
  const float *x = nullptr;
  const int8_t *qs = nullptr;
  const float *d = nullptr;
  const int16_t *bsums = nullptr;
  const int8_t *qs8 = nullptr;
  const float *d8 = nullptr;
  const int32_t *sum8 = nullptr;
  int64_t cols = 0;
};

enum class ActKind { kFloat, kQ8, kQ8K };
ActKind act_kind(TensorType t);

// Each instruction set provides the same functions in its own namespace.
#define GANTRY_KERNELS_ISA_FUNCTIONS                                                               \
  void matmul_rows(const WeightView &w, const Activations &a, int64_t t0, int64_t t1, int64_t r0,  \
                   int64_t r1, float *y, int64_t ldy);                                             \
  void quantize_act_q8(const float *x, int8_t *qs, float *d, int64_t n);                           \
  void quantize_act_q8k(const float *x, int8_t *qs, float *d, int16_t *bsums, int64_t n);          \
  void fp16_to_fp32_row(const uint16_t *src, float *dst, int64_t n);                               \
  void fp32_to_fp16_row(const float *src, uint16_t *dst, int64_t n);                               \
  void rmsnorm(const float *x, const float *weight, float *out, int64_t n, float eps);             \
  void softmax(float *x, int64_t n);                                                               \
  void silu_mul(const float *gate, const float *up, float *out, int64_t n);                        \
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
}
#if defined(__x86_64__)
#define GANTRY_KERNELS_HAVE_AVX2 1
namespace avx2 {
GANTRY_KERNELS_ISA_FUNCTIONS
}
// AVX-512 VNNI only replaces the Q8_0/Q4_0 tiles of the matmul; everything else it shares with
// (and forwards to) the AVX2 kernels, so Isa::kAvx512Vnni runs the avx2 functions above too.
namespace avx512vnni {
void matmul_rows(const WeightView &w, const Activations &a, int64_t t0, int64_t t1, int64_t r0,
                 int64_t r1, float *y, int64_t ldy);
}
#endif

} // namespace gantry::engine::kernels
