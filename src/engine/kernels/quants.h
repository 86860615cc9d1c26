// Internal to the kernels library: the weight types added after the first set (Q4_1, Q5_0, Q5_1,
// IQ4_NL, Q2_K, Q3_K, Q5_K) — what llama-quantize's common presets produce besides Q8_0/Q4_0/
// Q4_K/Q6_K (every Q5_K_M file; the Q5_0/Q8_0 fallback of Q4_K_M files whose widths are not
// multiples of 256). Dequantization, simple encoders, and their scalar dot products.
#pragma once

#include <cstdint>

#include "engine/gguf/tensor_type.h"

namespace gantry::engine::kernels {

using gguf::TensorType;

// Whether t is one of the types this file handles.
bool is_quants_type(TensorType t);

// dst[0..n) = the values of the n elements at src; n a multiple of the type's block size.
void dequantize_row_quants(TensorType t, const void *src, float *dst, int64_t n);

// Simple encoders (min/max or abs-max per block, no search): good enough for synthetic models
// and tests; real files come from llama-quantize.
void quantize_row_quants(TensorType t, const float *src, void *dst, int64_t n);

} // namespace gantry::engine::kernels
