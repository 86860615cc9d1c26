// Type checks, instruction-set selection, fp16/bf16 scalars, (de)quantization of single rows and
// dispatch of the vector helpers. The matmul driver is in matmul.cpp.
#include <cpuid.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cassert>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "engine/kernels/kernels.h"
#include "engine/kernels/kernels_impl.h"
#include "engine/kernels/llama_order.h"
#include "engine/kernels/quants.h"

namespace gantry::engine::kernels {
namespace {

bool env_flag(const char *name) {
  const char *v = std::getenv(name);
  return v != nullptr && v[0] != '\0' && std::strcmp(v, "0") != 0;
}

#if defined(GANTRY_KERNELS_HAVE_AVX2)
// CPUID.1:ECX bit 29. Read directly because clang's __builtin_cpu_supports has no "f16c".
bool cpu_has_f16c() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  return __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 29)) != 0;
}
#endif

Isa detect() {
#if defined(GANTRY_KERNELS_HAVE_AVX2)
  if (env_flag("GANTRY_NO_AVX2"))
    return Isa::kScalar;
  __builtin_cpu_init();
  if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma") || !cpu_has_f16c()) {
    return Isa::kScalar;
  }
  // libgcc reports the AVX-512 features only when the OS also saves the zmm state (XCR0).
  if (!env_flag("GANTRY_NO_AVX512") && __builtin_cpu_supports("avx512f") &&
      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512vnni")) {
    return Isa::kAvx512Vnni;
  }
  return Isa::kAvx2;
#else
  return Isa::kScalar;
#endif
}

// Global by necessity: the CPU does not change while we run, and every kernel call reads it.
std::atomic<Isa> &active_isa_ref() {
  static std::atomic<Isa> isa{detected_isa()};
  return isa;
}

inline bool use_avx2() {
#if defined(GANTRY_KERNELS_HAVE_AVX2)
  return active_isa_ref().load(std::memory_order_relaxed) != Isa::kScalar;
#else
  return false;
#endif
}

uint32_t float_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}
float bits_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

} // namespace

#if defined(GANTRY_KERNELS_HAVE_AVX2)
#define GANTRY_DISPATCH(call) (use_avx2() ? avx2::call : scalar::call)
#else
#define GANTRY_DISPATCH(call) (scalar::call)
#endif

bool is_supported(TensorType t) {
  switch (t) {
  case TensorType::kF32:
  case TensorType::kF16:
  case TensorType::kBF16:
  case TensorType::kQ8_0:
  case TensorType::kQ4_0:
  case TensorType::kQ4_K:
  case TensorType::kQ6_K: return true;
  default: return is_quants_type(t);
  }
}

size_t row_bytes(TensorType t, int64_t cols) {
  const auto tr = gguf::type_traits(t);
  assert(tr.block_elems != 0 && cols % tr.block_elems == 0);
  return static_cast<size_t>(cols / tr.block_elems) * tr.block_bytes;
}

ActKind act_kind(TensorType t) {
  switch (t) {
  case TensorType::kQ8_0:
  case TensorType::kQ4_0:
  case TensorType::kQ4_1:
  case TensorType::kQ5_0:
  case TensorType::kQ5_1:
  case TensorType::kIQ4_NL: return ActKind::kQ8;
  case TensorType::kQ2_K:
  case TensorType::kQ3_K:
  case TensorType::kQ4_K:
  case TensorType::kQ5_K:
  case TensorType::kQ6_K: return ActKind::kQ8K;
  default: return ActKind::kFloat;
  }
}

bool needs_block_sums(TensorType t) { return t == TensorType::kQ4_1 || t == TensorType::kQ5_1; }

Isa detected_isa() {
  static const Isa isa = detect();
  return isa;
}
Isa active_isa() { return active_isa_ref().load(std::memory_order_relaxed); }
void set_active_isa(Isa isa) {
  active_isa_ref().store(std::min(isa, detected_isa()), std::memory_order_relaxed);
}

// ---- fp16 / bf16 ----------------------------------------------------------------------------

float fp16_to_fp32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  const uint32_t exp = (h >> 10) & 0x1F;
  const uint32_t mant = h & 0x3FF;
  if (exp == 0) {
    // Zero or subnormal: exactly mant * 2^-24, which float represents exactly.
    const float v = static_cast<float>(mant) * 5.9604644775390625e-8f;
    return bits_float(float_bits(v) | sign);
  }
  if (exp == 31)
    return bits_float(sign | 0x7F800000u | (mant << 13));
  return bits_float(sign | ((exp + 112) << 23) | (mant << 13));
}

uint16_t fp32_to_fp16(float f) {
  uint32_t x = float_bits(f);
  const auto sign = static_cast<uint16_t>((x >> 16) & 0x8000);
  x &= 0x7FFFFFFFu;
  if (x >= 0x7F800000u)
    return sign | 0x7C00 | (x > 0x7F800000u ? 0x200 : 0);
  if (x >= 0x477FF000u)
    return sign | 0x7C00; // rounds to >= 65520: infinity
  if (x < 0x38800000u) {
    // Below the smallest normal half: the result is round(|f| * 2^24) ulps of 2^-24; 1024 ulps
    // is the smallest normal, whose encoding is also 1024.
    const auto m = static_cast<uint32_t>(std::nearbyint(bits_float(x) * 16777216.0f));
    return static_cast<uint16_t>(sign | m);
  }
  x += 0xFFFu + ((x >> 13) & 1u); // round to nearest even on the 13 dropped bits
  return static_cast<uint16_t>(sign | ((x >> 13) - (112u << 10)));
}

float bf16_to_fp32(uint16_t h) { return bits_float(static_cast<uint32_t>(h) << 16); }

uint16_t fp32_to_bf16(float f) {
  const uint32_t x = float_bits(f);
  if ((x & 0x7FFFFFFFu) > 0x7F800000u)
    return static_cast<uint16_t>((x >> 16) | 0x40); // quiet
  return static_cast<uint16_t>((x + 0x7FFFu + ((x >> 16) & 1u)) >> 16);
}

void fp16_to_fp32_row(const uint16_t *src, float *dst, int64_t n) {
  GANTRY_DISPATCH(fp16_to_fp32_row(src, dst, n));
}
void fp32_to_fp16_row(const float *src, uint16_t *dst, int64_t n) {
  GANTRY_DISPATCH(fp32_to_fp16_row(src, dst, n));
}
void fp32_to_bf16_row(const float *src, uint16_t *dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i)
    dst[i] = fp32_to_bf16(src[i]);
}

// ---- dequantization -------------------------------------------------------------------------

namespace {

void dequantize_q8_0(const BlockQ8_0 *b, float *y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, y += kQK) {
    const float d = fp16_to_fp32(b[i].d);
    for (int j = 0; j < kQK; ++j)
      y[j] = d * static_cast<float>(b[i].qs[j]);
  }
}

void dequantize_q4_0(const BlockQ4_0 *b, float *y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, y += kQK) {
    const float d = fp16_to_fp32(b[i].d);
    for (int j = 0; j < kQK / 2; ++j) {
      y[j] = d * static_cast<float>((b[i].qs[j] & 0x0F) - 8);
      y[j + kQK / 2] = d * static_cast<float>((b[i].qs[j] >> 4) - 8);
    }
  }
}

void dequantize_q4_k(const BlockQ4_K *b, float *y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    const float d = fp16_to_fp32(b[i].d);
    const float dmin = fp16_to_fp32(b[i].dmin);
    const uint8_t *q = b[i].qs;
    for (int c = 0; c < 4; ++c, q += 32) {
      uint8_t sc0, m0, sc1, m1;
      scale_min_k4(2 * c, b[i].scales, &sc0, &m0);
      scale_min_k4(2 * c + 1, b[i].scales, &sc1, &m1);
      const float d0 = d * sc0, min0 = dmin * m0, d1 = d * sc1, min1 = dmin * m1;
      for (int l = 0; l < 32; ++l)
        *y++ = d0 * static_cast<float>(q[l] & 0x0F) - min0;
      for (int l = 0; l < 32; ++l)
        *y++ = d1 * static_cast<float>(q[l] >> 4) - min1;
    }
  }
}

// The 6-bit value of element e (0..255) of a Q6_K super-block, in 0..63.
inline int q6_value(const BlockQ6_K &b, int e) {
  const int half = e / 128, k = e % 128, quarter = k / 32, l = k % 32;
  const uint8_t *ql = b.ql + 64 * half;
  const uint8_t qh = b.qh[32 * half + l];
  const int lo = (quarter & 1) ? ql[l + 32] : ql[l];
  const int low4 = (quarter < 2) ? (lo & 0x0F) : (lo >> 4);
  return low4 | (((qh >> (2 * quarter)) & 3) << 4);
}

void dequantize_q6_k(const BlockQ6_K *b, float *y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    const float d = fp16_to_fp32(b[i].d);
    for (int e = 0; e < kQKK; ++e) {
      *y++ = d * b[i].scales[e / 16] * static_cast<float>(q6_value(b[i], e) - 32);
    }
  }
}

} // namespace

void dequantize_row(TensorType t, const void *src, float *dst, int64_t n) {
  switch (t) {
  case TensorType::kF32: std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float)); return;
  case TensorType::kF16: fp16_to_fp32_row(static_cast<const uint16_t *>(src), dst, n); return;
  case TensorType::kBF16: {
    const auto *s = static_cast<const uint16_t *>(src);
    for (int64_t i = 0; i < n; ++i)
      dst[i] = bf16_to_fp32(s[i]);
    return;
  }
  case TensorType::kQ8_0:
    dequantize_q8_0(static_cast<const BlockQ8_0 *>(src), dst, n / kQK);
    return;
  case TensorType::kQ4_0:
    dequantize_q4_0(static_cast<const BlockQ4_0 *>(src), dst, n / kQK);
    return;
  case TensorType::kQ4_K:
    dequantize_q4_k(static_cast<const BlockQ4_K *>(src), dst, n / kQKK);
    return;
  case TensorType::kQ6_K:
    dequantize_q6_k(static_cast<const BlockQ6_K *>(src), dst, n / kQKK);
    return;
  default: dequantize_row_quants(t, src, dst, n); return;
  }
}

// ---- quantization ---------------------------------------------------------------------------

void quantize_row_q8_0(const float *src, void *dst, int64_t n) {
  auto *b = static_cast<BlockQ8_0 *>(dst);
  for (int64_t i = 0; i < n / kQK; ++i, src += kQK) {
    float amax = 0;
    for (int j = 0; j < kQK; ++j)
      amax = std::max(amax, std::fabs(src[j]));
    const float d = amax / 127.0f;
    const float id = d != 0 ? 1.0f / d : 0.0f;
    b[i].d = fp32_to_fp16(d);
    for (int j = 0; j < kQK; ++j)
      b[i].qs[j] = static_cast<int8_t>(std::lround(src[j] * id));
  }
}

void quantize_row_q4_0(const float *src, void *dst, int64_t n) {
  auto *b = static_cast<BlockQ4_0 *>(dst);
  for (int64_t i = 0; i < n / kQK; ++i, src += kQK) {
    // Like ggml, map the element of largest magnitude to -8 so its sign gets the extra level.
    float amax = 0, vmax = 0;
    for (int j = 0; j < kQK; ++j) {
      if (std::fabs(src[j]) > amax) {
        amax = std::fabs(src[j]);
        vmax = src[j];
      }
    }
    const float d = vmax / -8.0f;
    const float id = d != 0 ? 1.0f / d : 0.0f;
    b[i].d = fp32_to_fp16(d);
    for (int j = 0; j < kQK / 2; ++j) {
      const int lo = std::clamp(static_cast<int>(std::lround(src[j] * id)) + 8, 0, 15);
      const int hi = std::clamp(static_cast<int>(std::lround(src[j + kQK / 2] * id)) + 8, 0, 15);
      b[i].qs[j] = static_cast<uint8_t>(lo | (hi << 4));
    }
  }
}

void quantize_row_q4_k(const float *src, void *dst, int64_t n) {
  auto *b = static_cast<BlockQ4_K *>(dst);
  for (int64_t i = 0; i < n / kQKK; ++i, src += kQKK) {
    // Per 32-element sub-block: value = scale * q - min with q in 0..15, min >= 0.
    float scales[8], mins[8], max_scale = 0, max_min = 0;
    for (int j = 0; j < 8; ++j) {
      const float *x = src + 32 * j;
      float lo = 0, hi = 0;
      for (int l = 0; l < 32; ++l) {
        lo = std::min(lo, x[l]);
        hi = std::max(hi, x[l]);
      }
      scales[j] = (hi - lo) / 15.0f;
      mins[j] = -lo;
      max_scale = std::max(max_scale, scales[j]);
      max_min = std::max(max_min, mins[j]);
    }
    const float d = max_scale / 63.0f, dmin = max_min / 63.0f;
    b[i].d = fp32_to_fp16(d);
    b[i].dmin = fp32_to_fp16(dmin);
    const float dq = fp16_to_fp32(b[i].d), dminq = fp16_to_fp32(b[i].dmin);
    uint8_t sc[8], m[8];
    for (int j = 0; j < 8; ++j) {
      sc[j] = static_cast<uint8_t>(dq > 0 ? std::min(63L, std::lround(scales[j] / dq)) : 0);
      // Round the min up so that the smallest element stays representable.
      m[j] = static_cast<uint8_t>(dminq > 0 ? std::min(63.0f, std::ceil(mins[j] / dminq)) : 0);
    }
    for (int j = 0; j < 4; ++j) {
      b[i].scales[j] = static_cast<uint8_t>(sc[j] | ((sc[j + 4] >> 4) << 6));
      b[i].scales[j + 4] = static_cast<uint8_t>(m[j] | ((m[j + 4] >> 4) << 6));
      b[i].scales[j + 8] = static_cast<uint8_t>((sc[j + 4] & 0x0F) | ((m[j + 4] & 0x0F) << 4));
    }
    std::memset(b[i].qs, 0, sizeof b[i].qs);
    for (int j = 0; j < 8; ++j) {
      const float step = dq * sc[j], offset = dminq * m[j];
      const float inv = step > 0 ? 1.0f / step : 0.0f;
      for (int l = 0; l < 32; ++l) {
        const int q =
            std::clamp(static_cast<int>(std::lround((src[32 * j + l] + offset) * inv)), 0, 15);
        uint8_t &byte = b[i].qs[32 * (j / 2) + l];
        byte = static_cast<uint8_t>(byte | (j % 2 ? q << 4 : q));
      }
    }
  }
}

void quantize_row_q6_k(const float *src, void *dst, int64_t n) {
  auto *b = static_cast<BlockQ6_K *>(dst);
  for (int64_t i = 0; i < n / kQKK; ++i, src += kQKK) {
    float scales[16], max_scale = 0;
    for (int g = 0; g < 16; ++g) {
      float amax = 0;
      for (int l = 0; l < 16; ++l)
        amax = std::max(amax, std::fabs(src[16 * g + l]));
      scales[g] = amax / 31.0f;
      max_scale = std::max(max_scale, scales[g]);
    }
    const float d = max_scale / 127.0f;
    b[i].d = fp32_to_fp16(d);
    const float dq = fp16_to_fp32(b[i].d);
    std::memset(b[i].ql, 0, sizeof b[i].ql);
    std::memset(b[i].qh, 0, sizeof b[i].qh);
    for (int g = 0; g < 16; ++g) {
      b[i].scales[g] =
          static_cast<int8_t>(dq > 0 ? std::min(127L, std::lround(scales[g] / dq)) : 0);
    }
    for (int e = 0; e < kQKK; ++e) {
      const float step = dq * b[i].scales[e / 16];
      const float inv = step > 0 ? 1.0f / step : 0.0f;
      const int q = std::clamp(static_cast<int>(std::lround(src[e] * inv)), -32, 31) + 32;
      const int half = e / 128, k = e % 128, quarter = k / 32, l = k % 32;
      uint8_t &lo = b[i].ql[64 * half + l + ((quarter & 1) ? 32 : 0)];
      lo = static_cast<uint8_t>(lo | (quarter < 2 ? (q & 0x0F) : (q & 0x0F) << 4));
      uint8_t &hi = b[i].qh[32 * half + l];
      hi = static_cast<uint8_t>(hi | ((q >> 4) << (2 * quarter)));
    }
  }
}

void quantize_row(TensorType t, const float *src, void *dst, int64_t n) {
  switch (t) {
  case TensorType::kF32: std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float)); return;
  case TensorType::kF16: fp32_to_fp16_row(src, static_cast<uint16_t *>(dst), n); return;
  case TensorType::kBF16: fp32_to_bf16_row(src, static_cast<uint16_t *>(dst), n); return;
  case TensorType::kQ8_0: quantize_row_q8_0(src, dst, n); return;
  case TensorType::kQ4_0: quantize_row_q4_0(src, dst, n); return;
  case TensorType::kQ4_K: quantize_row_q4_k(src, dst, n); return;
  case TensorType::kQ6_K: quantize_row_q6_k(src, dst, n); return;
  default: quantize_row_quants(t, src, dst, n); return;
  }
}

// ---- vector helpers -------------------------------------------------------------------------

void rmsnorm(const float *x, const float *weight, float *out, int64_t n, float eps) {
  rmsnorm_rows(x, weight, out, 1, n, eps);
}

void rmsnorm_rows(const float *x, const float *weight, float *out, int64_t n_rows, int64_t n,
                  float eps) {
  // A row's sum is one chain of dependent double additions (ggml's order, no reassociation);
  // eight rows at a time let the CPU overlap eight chains, each still in its own order.
  constexpr int kRows = 8;
  for (int64_t r0 = 0; r0 < n_rows; r0 += kRows) {
    const int nr = static_cast<int>(std::min<int64_t>(kRows, n_rows - r0));
    const float *xr = x + r0 * n;
    double ss[kRows] = {};
    if (nr == kRows) {
      for (int64_t i = 0; i < n; ++i) {
        for (int r = 0; r < kRows; ++r) {
          const float v = xr[r * n + i];
          const float sq = v * v;
          ss[r] += static_cast<double>(sq);
        }
      }
    } else {
      for (int r = 0; r < nr; ++r) {
        for (int64_t i = 0; i < n; ++i) {
          const float v = xr[r * n + i];
          const float sq = v * v;
          ss[r] += static_cast<double>(sq);
        }
      }
    }
    for (int r = 0; r < nr; ++r) {
      const auto mean = static_cast<float>(ss[r] / static_cast<double>(n));
      const float scale = 1.0f / std::sqrt(mean + eps);
      const float *xi = xr + r * n;
      float *o = out + (r0 + r) * n;
      for (int64_t i = 0; i < n; ++i) {
        const float v = xi[i] * scale;
        o[i] = v * weight[i];
      }
    }
  }
}
void softmax(float *x, int64_t n) { GANTRY_DISPATCH(softmax(x, n)); }
void silu_mul(const float *gate, const float *up, float *out, int64_t n) {
  llama_order::silu_mul_row(gate, up, out, n);
}
void add(const float *a, const float *b, float *out, int64_t n) {
  GANTRY_DISPATCH(add(a, b, out, n));
}

namespace {

// ggml's GGML_GELU_FP16 table: GELU(tanh) of every fp16 value, rounded to fp16 (ggml-cpu.c
// ggml_cpu_init), with the same constants and float arithmetic.
const std::vector<uint16_t> &gelu_table() {
  static const std::vector<uint16_t> table = [] {
    std::vector<uint16_t> t(65536);
    constexpr float kCoefA = 0.044715f;
    constexpr float kSqrt2OverPi = 0.79788456080286535587989211986876f;
    for (uint32_t i = 0; i < t.size(); ++i) {
      const float x = fp16_to_fp32(static_cast<uint16_t>(i));
      t[i] =
          fp32_to_fp16(0.5f * x * (1.0f + std::tanh(kSqrt2OverPi * x * (1.0f + kCoefA * x * x))));
    }
    return t;
  }();
  return table;
}

// ggml_vec_gelu_f32: exact outside [-10, 10], the table inside.
inline float gelu_one(const std::vector<uint16_t> &table, float x) {
  if (x <= -10.0f)
    return 0.0f;
  if (x >= 10.0f)
    return x;
  return fp16_to_fp32(table[fp32_to_fp16(x)]);
}

} // namespace

void gelu_mul(const float *gate, const float *up, float *out, int64_t n) {
  const auto &table = gelu_table();
  for (int64_t i = 0; i < n; ++i)
    out[i] = gelu_one(table, gate[i]) * up[i];
}

void gelu(const float *x, float *out, int64_t n) {
  const auto &table = gelu_table();
  for (int64_t i = 0; i < n; ++i)
    out[i] = gelu_one(table, x[i]);
}

void tanh_softcap(float *x, float cap, int64_t n) {
  const float inv = 1.0f / cap;
  for (int64_t i = 0; i < n; ++i)
    x[i] = std::tanh(x[i] * inv) * cap;
}
void scale(float *x, float s, int64_t n) { GANTRY_DISPATCH(scale(x, s, n)); }
float dot_f32(const float *a, const float *b, int64_t n) {
  return GANTRY_DISPATCH(dot_f32(a, b, n));
}
void axpy(float a, const float *x, float *y, int64_t n) { GANTRY_DISPATCH(axpy(a, x, y, n)); }
void dot_rows(const float *q, const float *rows, int64_t stride, int64_t n_rows, int64_t n,
              float scale, float *out) {
  GANTRY_DISPATCH(dot_rows(q, rows, stride, n_rows, n, scale, out));
}
void axpy_rows(const float *w, const float *rows, int64_t stride, int64_t n_rows, int64_t n,
               float *y) {
  GANTRY_DISPATCH(axpy_rows(w, rows, stride, n_rows, n, y));
}
void dot_rows(const float *q, const uint16_t *rows, int64_t stride, int64_t n_rows, int64_t n,
              float scale, float *out) {
  // Flash attention's K·Q in llama.cpp's order (its logits bit for bit; same on every ISA).
  llama_order::dot_rows_f16(q, rows, stride, n_rows, n, scale, out);
}
void dot_rows_heads(const float *const *q, int n_q, const uint16_t *rows, int64_t stride,
                    int64_t n_rows, int64_t n, float scale, float *out, int64_t out_stride) {
  llama_order::dot_heads_f16(q, n_q, rows, stride, n_rows, n, scale, out, out_stride);
}
void axpy_rows(const float *w, const uint16_t *rows, int64_t stride, int64_t n_rows, int64_t n,
               float *y) {
  GANTRY_DISPATCH(axpy_rows(w, rows, stride, n_rows, n, y));
}
void attend_rows_f16(const float *s, int64_t s_stride, int n_q, const uint16_t *rows,
                     int64_t stride, int64_t n_rows, int64_t n, float *m, float *sum,
                     uint16_t *acc) {
#if defined(GANTRY_KERNELS_HAVE_AVX2)
  if (active_isa() == Isa::kAvx512Vnni &&
      avx512vnni::attend_rows_f16(s, s_stride, n_q, rows, stride, n_rows, n, m, sum, acc))
    return;
#endif
  GANTRY_DISPATCH(attend_rows_f16(s, s_stride, n_q, rows, stride, n_rows, n, m, sum, acc));
}

const ExpTable &exp_table() {
  static const ExpTable table = [] {
    ExpTable e{};
    for (int i = 0; i < 32; ++i) {
      const auto d = static_cast<double>(std::exp2l(static_cast<long double>(i) / 32.0L));
      e.t[i] = std::bit_cast<uint64_t>(d) - (static_cast<uint64_t>(i) << 47);
    }
    return e;
  }();
  return table;
}

} // namespace gantry::engine::kernels
