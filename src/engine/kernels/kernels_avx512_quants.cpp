// AVX-512 VNNI dot products of the K-quants (decode, Q2_K/Q3_K prefill, and the rows the K-quant
// tiles leave): quant_dots_inl.h with the int8 products formed by vpdpbusd (256-bit, AVX512VL);
// the same bits as the AVX2 ones.
// GCC 12's AVX-512 intrinsics trip -Wmaybe-uninitialized where inlined (see kernels_avx512.cpp).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include <immintrin.h>

#include <cmath>
#include <cstring>

#include "engine/kernels/kernels_impl.h"

#define GANTRY_QTARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")))
#define GANTRY_QVNNI 1

namespace gantry::engine::kernels::avx512vnni {
#include "engine/kernels/quant_dots_inl.h" // NOLINT(bugprone-suspicious-include)
} // namespace gantry::engine::kernels::avx512vnni
