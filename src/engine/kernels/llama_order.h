// F32 weights, flash attention's K·Q and the SwiGLU activation computed in the same
// floating-point order as llama.cpp's CPU backend (ggml's ggml_vec_dot_f32 for single tokens,
// llamafile's tinyBLAS for batches, ggml_vec_dot_f16, ggml_vec_swiglu_f32 with its vectorised
// exp), so that a model with F32 weights (the bundled story model) gives llama.cpp's logits bit
// for bit and its log-probabilities (issue 17). Those orders depend on the vector width llama.cpp
// was built for, so both are here: its AVX2 build (8 lanes; the default) and its AVX-512 build
// (16 lanes). Every instruction set Gantry runs computes the same bits for either: natively,
// with two 8-lane halves for a 16-lane vector, or lane by lane in scalar code.
#pragma once

#include <cstdint>

#include "engine/kernels/kernels.h"

namespace gantry::engine::kernels::llama_order {

// Which llama.cpp build's arithmetic: GANTRY_LLAMA_BUILD=avx512 or avx2 at start-up. The default
// is avx2, what llama.cpp runs on every x86-64 CPU with AVX2 and what the shared reference was
// recorded with; avx512 matches a llama.cpp built natively on an AVX-512 CPU.
enum class Build { kAvx2, kAvx512 };
Build build();
// For tests: not while kernels run.
void set_build(Build b);

// y = W x for F32 weights. As in llama.cpp, a token computed alone takes ggml_vec_dot_f32's order
// (four 16-lane accumulators over 64-column steps, a fixed reduction tree, then the leftover
// columns) and tokens computed in a batch take tinyBLAS's (one 16-lane accumulator, then the
// tree) when cols % 16 == 0 and rows % 4 == 0, else ggml_vec_dot_f32's too. `single` (may be
// null: then n_tokens == 1 decides) marks the token rows computed as alone.
void matmul_f32(const MatmulOut *outs, int n_outs, const float *x, int64_t n_tokens,
                ThreadPool &pool, const uint8_t *single);

// One row of out = silu(gate) * up in 16-lane chunks (ggml's polynomial exp), the leftover
// elements with libm's expf. Rows must be passed one at a time: the chunks restart at each row.
void silu_mul_row(const float *gate, const float *up, float *out, int64_t n);

// out[r] = dot(q, row r) * scale for fp16 rows (the KV cache's K), as ggml_vec_dot_f16 computes
// flash attention's K·Q: q holds fp16 values (llama.cpp rounds Q to fp16 first); rows shorter
// than 64 are summed in double, longer ones in four 16-lane accumulators, the rest in double.
void dot_rows_f16(const float *q, const uint16_t *rows, int64_t stride, int64_t n_rows, int64_t n,
                  float scale, float *out);
// dot_rows_f16 for the n_q query heads of a GQA group against the same rows, bit for bit:
// out[h * out_stride + r]. The AVX2 build's order on AVX-512 CPUs loads each row once for all
// heads and computes two heads per vector (the prefill attention's K·Q, most of its cost).
void dot_heads_f16(const float *const *q, int n_q, const uint16_t *rows, int64_t stride,
                   int64_t n_rows, int64_t n, float scale, float *out, int64_t out_stride);

} // namespace gantry::engine::kernels::llama_order
