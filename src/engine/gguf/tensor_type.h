// ggml tensor types as numbered in the GGUF format, with their block geometry.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace gantry::gguf {

enum class TensorType : uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ4_1 = 3,
  kQ5_0 = 6,
  kQ5_1 = 7,
  kQ8_0 = 8,
  kQ8_1 = 9,
  kQ2_K = 10,
  kQ3_K = 11,
  kQ4_K = 12,
  kQ5_K = 13,
  kQ6_K = 14,
  kQ8_K = 15,
  kIQ2_XXS = 16,
  kIQ2_XS = 17,
  kIQ3_XXS = 18,
  kIQ1_S = 19,
  kIQ4_NL = 20,
  kIQ3_S = 21,
  kIQ2_S = 22,
  kIQ4_XS = 23,
  kI8 = 24,
  kI16 = 25,
  kI32 = 26,
  kI64 = 27,
  kF64 = 28,
  kIQ1_M = 29,
  kBF16 = 30,
  kTQ1_0 = 34,
  kTQ2_0 = 35,
};

struct TypeTraits {
  std::string_view name;
  uint32_t block_elems = 0; // elements per block; 0 = unknown type
  uint32_t block_bytes = 0; // bytes per block
};

// Geometry of every type the format defines (so `model info` can describe any file), whether
// or not the engine can compute with it (see kernels::is_supported).
TypeTraits type_traits(TensorType t);
inline bool is_known(TensorType t) { return type_traits(t).block_elems != 0; }

} // namespace gantry::gguf
