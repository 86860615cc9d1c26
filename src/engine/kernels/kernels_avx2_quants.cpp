// AVX2 dot products of the K-quants: quant_dots_inl.h with the int8 products formed by
// maddubs + madd.
#include <immintrin.h>

#include <cmath>
#include <cstring>

#include "engine/kernels/kernels_impl.h"

#define GANTRY_QTARGET __attribute__((target("avx2,fma,f16c")))
#define GANTRY_QVNNI 0

namespace gantry::engine::kernels::avx2 {
#include "engine/kernels/quant_dots_inl.h" // NOLINT(bugprone-suspicious-include)
} // namespace gantry::engine::kernels::avx2
