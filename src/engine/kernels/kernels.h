// Compute kernels of the CPU inference engine: quantized matrix multiply, (de)quantization of
// ggml block formats, and the vector helpers the forward pass needs.
//
// Every entry point has an AVX2+FMA+F16C implementation chosen at run time and a portable
// scalar one that agrees within float rounding (set GANTRY_NO_AVX2=1 to force the scalar one).
// On CPUs with AVX-512 VNNI the matmul tiles for batches (Q8_0/Q4_0/Q4_K/Q5_K/Q6_K with
// vpdpbusd, F32/F16/BF16 with 512-bit fma) and the dot products of the other quantized types
// (vpdpbusd) replace the AVX2 ones, giving the very bits the AVX2 kernels give (set
// GANTRY_NO_AVX512=1 to force the AVX2 ones). K-quants give the scalar path's bits too.
// Kernels cannot fail: callers check is_supported() when loading a model, and violating a
// documented precondition (e.g. n not a multiple of the block size) is a bug.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "engine/gguf/tensor_type.h"
#include "engine/kernels/thread_pool.h"

namespace gantry::engine::kernels {

using gguf::TensorType;

// ---- capabilities ---------------------------------------------------------------------------

// Weight types matmul() and dequantize_row() accept: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1,
// IQ4_NL, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K.
bool is_supported(TensorType t);

// Bytes of one row of `cols` elements; cols must be a multiple of the type's block size.
size_t row_bytes(TensorType t, int64_t cols);

// Ordered: each level includes the one before (kAvx512Vnni runs the AVX2 kernels for everything
// but the Q8_0/Q4_0 tiles).
enum class Isa { kScalar, kAvx2, kAvx512Vnni };
// The best instruction set this CPU offers, honouring GANTRY_NO_AVX2=1 and GANTRY_NO_AVX512=1.
Isa detected_isa();
// The instruction set kernels use now. set_active_isa exists so tests can cover both paths; it
// clamps to detected_isa() and must not race with running kernels.
Isa active_isa();
void set_active_isa(Isa isa);

// ---- fp16 / bf16 ----------------------------------------------------------------------------

float fp16_to_fp32(uint16_t h);
uint16_t fp32_to_fp16(float f); // round to nearest even
float bf16_to_fp32(uint16_t h);
uint16_t fp32_to_bf16(float f); // round to nearest even
void fp16_to_fp32_row(const uint16_t *src, float *dst, int64_t n);
void fp32_to_fp16_row(const float *src, uint16_t *dst, int64_t n);
void fp32_to_bf16_row(const float *src, uint16_t *dst, int64_t n);

// ---- (de)quantization -----------------------------------------------------------------------

// dst[0..n) = the values of the n elements at src, for any supported type (embedding lookup).
void dequantize_row(TensorType t, const void *src, float *dst, int64_t n);

// Writes row_bytes(t, n) bytes in ggml's layout. n must be a multiple of the block size.
void quantize_row_q8_0(const float *src, void *dst, int64_t n);
void quantize_row_q4_0(const float *src, void *dst, int64_t n);
// Simple (not ggml's search-based) K-quant encoders: good enough for synthetic models and tests.
// quantize_row has such encoders for every other supported type too.
void quantize_row_q4_k(const float *src, void *dst, int64_t n);
void quantize_row_q6_k(const float *src, void *dst, int64_t n);
// Any supported type, F32/F16/BF16 included.
void quantize_row(TensorType t, const float *src, void *dst, int64_t n);

// ---- matrix multiply ------------------------------------------------------------------------

// A borrowed weight matrix: `rows` rows of `cols` elements of `type`, row r starting at
// data + r * row_stride bytes (row_stride >= row_bytes(type, cols); usually equal).
struct WeightView {
  TensorType type = TensorType::kF32;
  const void *data = nullptr;
  int64_t rows = 0;
  int64_t cols = 0;
  size_t row_stride = 0;
  // The rows are in the 16-row interleaved layout of pack_rows16 (row() does not apply).
  bool packed16 = false;
  // With packed16, F16/BF16 only: the groups are column-major (pack_rows16 under AVX2).
  bool k_major = false;

  const void *row(int64_t r) const {
    return static_cast<const char *>(data) + static_cast<size_t>(r) * row_stride;
  }
};
// A view over a dense matrix (row_stride = row_bytes(type, cols)).
WeightView make_weight_view(TensorType type, const void *data, int64_t rows, int64_t cols);

// ---- repacked weights ---------------------------------------------------------------------------
//
// Decode reads every weight byte once per token, so its speed is the speed weights stream from
// memory. The decode tile reads 16 rows side by side, which for row-major weights is 16
// concurrent streams: measured on the 2-core Zen 5, ≈ 70 % of a plain read's bandwidth whatever
// the prefetch hints. The same bytes interleaved so that the tile reads one stream reach ≈ 85 %.
// So Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL, Q4_K, Q5_K, Q6_K (Q4_K_M files are Q4_K + Q6_K, Q5_K_M
// Q5_K + Q6_K, with Q5_0/Q8_0 where a width is not a multiple of 256), F16 and BF16 matrices are
// repacked once at load when the AVX-512 VNNI kernels run:
//
//   group g = rows [16g, 16g + 16) at data + 16g * row_stride (the same bytes a row-major group
//   takes, so a row range starting at a multiple of 16 is still data + first * row_stride):
//   Q8_0, Q4_0:
//     scales: nb blocks x 16 rows of fp16, scale of row 16g + i, block b at (16b + i) * 2;
//     quants from nb * 32: block b at b * Q (Q = 512 for Q8_0, 256 for Q4_0), in 64-byte chunks
//     k (8 for Q8_0, 4 for Q4_0), row i's 4 bytes at k * 64 + 4i: Q8_0 bytes 4k..4k+3 of the
//     block as unsigned u = w + 128; Q4_0 the stored bytes 4k..4k+3 (low nibbles are elements
//     4k.., high nibbles 16 + 4k..).
//   Q4_1, Q5_0, Q5_1, IQ4_NL: as Q4_0 (the 16-byte nibble chunks, the scales first), with Q4_1's
//     and Q5_1's fp16 mins after all the group's scales (nb x 16 rows, like them), and Q5_0's
//     and Q5_1's qh (4 bytes a row) as one more 64-byte chunk before each block's nibbles.
//   Q4_K: per super-block, the 16 rows' 2304 bytes: d/dmin, the scale bytes as three arrays of
//     16 dwords, and the quants in 32 chunks of 4 bytes of every row (kernels_impl.h,
//     packed_k_pieces), so that one vpdpbusd gives every row's partial sum in its own lane.
//   Q5_K: Q4_K's layout, then the 16 rows' qh bytes (the fifth bits) in 8 more chunks: 2816
//     bytes per super-block.
//   Q6_K: per super-block, the 16 rows' 3360 bytes: d, the scale bytes as four arrays of 16
//     dwords, and ql/ql/qh in chunks of 4 bytes of every row (kernels_impl.h, packed_k_pieces).
//   F16, BF16 (cols a multiple of 8): the 8 elements of row 16g + i from column 8c at
//     (16c + i) * 16, so a row pair's 16 elements of a column step are 32 contiguous bytes.
//     Packed under AVX2 instead (WeightView::k_major): column-major groups, the element of row
//     16g + i at column k at (16k + i) * 2, for kernels_avx2_half.cpp's outer products.
//
// The kernels give the bits of the row-major layout (the same exact int32 block sums, in the same
// order); calls that the packed kernels do not take (another ISA, a row range not on a 16-row
// boundary) run on rows unpacked to scratch, correct and slow.
//
// True when the active ISA has packed kernels for w: AVX-512 VNNI, the 32-element block types
// (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL), Q4_K, Q5_K, Q6_K, F16 or BF16, dense rows, a multiple of
// 16 rows.
bool can_pack_rows16(const WeightView &w);
// Bytes pack_rows16 writes: w.rows * w.row_stride.
size_t packed_bytes(const WeightView &w);
// Writes w (row-major, can_pack_rows16) to dst in the packed layout; returns the view over dst.
// dst should be 64-byte aligned.
WeightView pack_rows16(const WeightView &w, void *dst);
// Row r of a packed view in ggml's row-major layout (row_bytes(type, cols) bytes to dst).
void unpack_row16(const WeightView &w, int64_t r, void *dst);
// Rows [r0, r1) of a packed view in ggml's row-major layout, one after another at dst: whole
// 16-row groups of the 32-element block types a chunk at a time, the rest row by row.
void unpack_rows16(const WeightView &w, int64_t r0, int64_t r1, void *dst);

// y[t * rows + r] = dot(W row r, x[t * cols ...]) for t < n_tokens, r < W.rows.
// x is n_tokens x W.cols floats, y is n_tokens x W.rows floats (must not alias x).
// The activations are quantized once per call to the format the weight type multiplies with
// (Q8_0 for the 32-element block types, Q8_K for K-quants; float for F32/F16/BF16), then W is
// read from memory once for all tokens, so a batch of n tokens costs far less than n calls.
// Scratch lives in thread-local buffers of the calling thread; steady state does not allocate.
//
// F32 weights sum each output in llama.cpp's order (llama_order.h), which depends on whether
// llama.cpp computes the token alone (decode) or in a batch (a prompt). `single`, when given,
// says so per token row (non-zero: alone), so that a sequence's results do not depend on what
// else shares the batch; without it the call's token count decides, as in llama.cpp.
void matmul(const WeightView &w, const float *x, int64_t n_tokens, float *y, ThreadPool &pool,
            const uint8_t *single = nullptr);

// Same, with y's rows `ldy` floats apart (ldy >= W.rows) so that several matmuls can write
// side by side into one output (e.g. fused Q/K/V).
void matmul(const WeightView &w, const float *x, int64_t n_tokens, float *y, int64_t ldy,
            ThreadPool &pool, const uint8_t *single = nullptr);

// Several matrices against the same activations in one call (Q/K/V, gate/up): the activations
// are quantized once and the pool synchronizes once for all of them, the rows of the matrices
// stacked in order and split across threads together. Each output gets the bits a matmul() of
// its own matrix gives. The matrices must share type, cols and row_stride
// (can_share_activations); y of each must not alias x.
struct MatmulOut {
  const WeightView *w = nullptr;
  float *y = nullptr;
  int64_t ldy = 0; // >= w->rows
};
bool can_share_activations(const WeightView &a, const WeightView &b);
void matmul_multi(const MatmulOut *outs, int n_outs, const float *x, int64_t n_tokens,
                  ThreadPool &pool, const uint8_t *single = nullptr);

// ---- reading memory ---------------------------------------------------------------------------

// How read_bytes walks its bytes: `streams` blocks of 64 KiB side by side, 64 bytes of each in
// turn (what a decode tile reading several weight groups does), prefetching `prefetch` bytes
// ahead in each when non-zero. One stream alone keeps too few cache misses in flight on some
// machines (on a 2-core Zen 3 VM: 26-35 GB/s against 42-46 for four with a prefetch), so a
// bandwidth ceiling is the best of several patterns (kReadPatterns).
struct ReadPattern {
  int streams = 1;
  int prefetch = 0;
};
inline constexpr ReadPattern kReadPatterns[] = {{1, 0}, {4, 0}, {8, 0}, {4, 1024}, {8, 1024}};
// The patterns read_bytes reads differently under the active ISA: all of kReadPatterns, the
// first alone under the scalar one. And a pattern's name in probe output ("4x+pf1024").
std::span<const ReadPattern> read_patterns();
std::string read_pattern_name(ReadPattern pattern);
// Reads every byte of [p, p + bytes) once and returns a sum of them (so the reads are not
// optimised away); the read probe's kernel. The scalar ISA reads one stream, 16 bytes at a time.
uint64_t read_bytes(const void *p, size_t bytes, ReadPattern pattern);

// ---- vector helpers for the forward pass -------------------------------------------------------

// out = x / sqrt(mean(x^2) + eps) * weight in ggml's arithmetic (float squares summed in order in
// double, the mean rounded to float, then x * scale * weight), so normalised activations match
// llama.cpp's bit for bit. out may alias x.
void rmsnorm(const float *x, const float *weight, float *out, int64_t n, float eps);
// The same for n_rows rows of n floats each (contiguous): several rows' sums run side by side.
void rmsnorm_rows(const float *x, const float *weight, float *out, int64_t n_rows, int64_t n,
                  float eps);
// In-place softmax over x[0..n), numerically stable (subtracts the max).
void softmax(float *x, int64_t n);
// out = silu(gate) * up (SwiGLU) for ONE row: llama.cpp's arithmetic (16-lane chunks of its
// polynomial exp from the row's start, libm's expf for the rest), so pass rows one at a time.
// out may alias gate or up.
void silu_mul(const float *gate, const float *up, float *out, int64_t n);
// out = gelu(gate) * up (GEGLU, Gemma's FFN) with llama.cpp's CPU arithmetic: GELU(tanh) looked
// up in a table of every fp16 input (gate rounded to fp16; exact outside [-10, 10]), so the
// result has fp16 precision as there. out may alias gate or up.
void gelu_mul(const float *gate, const float *up, float *out, int64_t n);
// out = gelu(x) with the same table (BERT's FFN). out may alias x.
void gelu(const float *x, float *out, int64_t n);
// x = cap * tanh(x / cap) as ggml computes it (x * (1/cap), tanh, * cap): logit soft-capping.
void tanh_softcap(float *x, float cap, int64_t n);
// out = a + b. out may alias a or b.
void add(const float *a, const float *b, float *out, int64_t n);
// x *= s.
void scale(float *x, float s, int64_t n);
float dot_f32(const float *a, const float *b, int64_t n);
// y += a * x.
void axpy(float a, const float *x, float *y, int64_t n);
// out[r] = dot_f32(q, rows + r*stride, n) * scale for r < n_rows, with exactly dot_f32's
// arithmetic; one dispatch for a run of rows (attention over a KV block).
void dot_rows(const float *q, const float *rows, int64_t stride, int64_t n_rows, int64_t n,
              float scale, float *out);
// y += w[r] * (rows + r*stride) for r < n_rows, in order, each step exactly axpy's arithmetic.
void axpy_rows(const float *w, const float *rows, int64_t stride, int64_t n_rows, int64_t n,
               float *y);
// The same over fp16 rows (the KV cache). fp16 -> fp32 is exact, so these give the very bits
// the float versions give on the converted rows.
void dot_rows(const float *q, const uint16_t *rows, int64_t stride, int64_t n_rows, int64_t n,
              float scale, float *out);
// dot_rows over fp16 rows for the n_q query heads that share them (a GQA group), each head's
// results bit for bit dot_rows(q[h], ...)'s: out[h * out_stride + r].
void dot_rows_heads(const float *const *q, int n_q, const uint16_t *rows, int64_t stride,
                    int64_t n_rows, int64_t n, float scale, float *out, int64_t out_stride);
void axpy_rows(const float *w, const uint16_t *rows, int64_t stride, int64_t n_rows, int64_t n,
               float *y);
// llama.cpp's CPU flash-attention step over fp16 V rows (ggml-cpu ops.cpp,
// ggml_compute_forward_flash_attn_ext_f16_one_chunk with an F16 V cache), for n_q heads that
// share the rows, row by row in order. For head h, with score s[h * s_stride + r] above the
// running max m[h], the fp16 accumulator acc + h * n is rescaled by exp(m[h] - score), rounded to
// fp16, and the row's weight is 1; otherwise its weight is exp(score - m[h]). Then
// acc = fp16(fma(row, weight, acc)) and sum[h] = fma(sum[h], rescale, weight). Start with
// m = -inf, sum = 0 and acc zeroed; the result is acc / sum. n_q <= 64.
void attend_rows_f16(const float *s, int64_t s_stride, int n_q, const uint16_t *rows,
                     int64_t stride, int64_t n_rows, int64_t n, float *m, float *sum,
                     uint16_t *acc);

} // namespace gantry::engine::kernels
