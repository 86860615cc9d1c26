// Portable kernels: the reference the AVX2 path is tested against, and the path for CPUs
// without AVX2. Written for clarity first; the compiler auto-vectorizes the float loops.
#include <algorithm>
#include <cmath>

#include "engine/kernels/kernels_impl.h"

namespace gantry::engine::kernels::scalar {
namespace {

float dot_row(const WeightView &w, const void *row, const Activations &a, int64_t t) {
  const int64_t n = w.cols;
  switch (w.type) {
  case TensorType::kF32: {
    const auto *wr = static_cast<const float *>(row);
    return dot_f32(wr, a.x + t * n, n);
  }
  case TensorType::kF16: {
    const auto *wr = static_cast<const uint16_t *>(row);
    const float *x = a.x + t * n;
    float sum = 0;
    for (int64_t i = 0; i < n; ++i)
      sum += fp16_to_fp32(wr[i]) * x[i];
    return sum;
  }
  case TensorType::kBF16: {
    const auto *wr = static_cast<const uint16_t *>(row);
    const float *x = a.x + t * n;
    float sum = 0;
    for (int64_t i = 0; i < n; ++i)
      sum += bf16_to_fp32(wr[i]) * x[i];
    return sum;
  }
  case TensorType::kQ8_0: {
    const auto *b = static_cast<const BlockQ8_0 *>(row);
    const int8_t *q = a.qs + t * n;
    const float *d = a.d + t * n / kQK;
    float sum = 0;
    for (int64_t i = 0; i < n / kQK; ++i, q += kQK) {
      int isum = 0;
      for (int j = 0; j < kQK; ++j)
        isum += b[i].qs[j] * q[j];
      sum += fp16_to_fp32(b[i].d) * d[i] * static_cast<float>(isum);
    }
    return sum;
  }
  case TensorType::kQ4_0: {
    const auto *b = static_cast<const BlockQ4_0 *>(row);
    const int8_t *q = a.qs + t * n;
    const float *d = a.d + t * n / kQK;
    float sum = 0;
    for (int64_t i = 0; i < n / kQK; ++i, q += kQK) {
      int isum = 0;
      for (int j = 0; j < kQK / 2; ++j) {
        isum += ((b[i].qs[j] & 0x0F) - 8) * q[j] + ((b[i].qs[j] >> 4) - 8) * q[j + kQK / 2];
      }
      sum += fp16_to_fp32(b[i].d) * d[i] * static_cast<float>(isum);
    }
    return sum;
  }
  default: return dot_row_quants(w.type, row, a, t); // quants.cpp: K-quants and the rest
  }
}

} // namespace

void matmul_rows(const WeightView &w, const Activations &a, int64_t t0, int64_t t1, int64_t r0,
                 int64_t r1, float *y, int64_t ldy) {
  for (int64_t r = r0; r < r1; ++r) {
    const void *row = w.row(r);
    for (int64_t t = t0; t < t1; ++t)
      y[t * ldy + r] = dot_row(w, row, a, t);
  }
}

void quantize_act_q8(const float *x, int8_t *qs, float *d, int64_t n) {
  for (int64_t b = 0; b < n / kQK; ++b, x += kQK, qs += kQK) {
    float amax = 0;
    for (int j = 0; j < kQK; ++j)
      amax = std::max(amax, std::fabs(x[j]));
    d[b] = amax / 127.0f;
    const float id = amax != 0 ? 127.0f / amax : 0.0f;
    for (int j = 0; j < kQK; ++j)
      qs[j] = static_cast<int8_t>(std::nearbyint(x[j] * id));
  }
}

void quantize_act_q8k(const float *x, int8_t *qs, float *d, int16_t *bsums, int64_t n) {
  for (int64_t b = 0; b < n / kQKK; ++b, x += kQKK, qs += kQKK) {
    float amax = 0;
    for (int j = 0; j < kQKK; ++j)
      amax = std::max(amax, std::fabs(x[j]));
    d[b] = amax / 127.0f;
    const float id = amax != 0 ? 127.0f / amax : 0.0f;
    for (int j = 0; j < kQKK; ++j)
      qs[j] = static_cast<int8_t>(std::nearbyint(x[j] * id));
    for (int g = 0; g < kQKK / 16; ++g) {
      int s = 0;
      for (int l = 0; l < 16; ++l)
        s += qs[16 * g + l];
      *bsums++ = static_cast<int16_t>(s);
    }
  }
}

void fp16_to_fp32_row(const uint16_t *src, float *dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i)
    dst[i] = kernels::fp16_to_fp32(src[i]);
}
void fp32_to_fp16_row(const float *src, uint16_t *dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i)
    dst[i] = kernels::fp32_to_fp16(src[i]);
}

void softmax(float *x, int64_t n) {
  if (n <= 0)
    return;
  const float mx = *std::max_element(x, x + n);
  float sum = 0;
  for (int64_t i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - mx);
    sum += x[i];
  }
  const float inv = 1.0f / sum;
  for (int64_t i = 0; i < n; ++i)
    x[i] *= inv;
}

void add(const float *a, const float *b, float *out, int64_t n) {
  for (int64_t i = 0; i < n; ++i)
    out[i] = a[i] + b[i];
}

void scale(float *x, float s, int64_t n) {
  for (int64_t i = 0; i < n; ++i)
    x[i] *= s;
}

float dot_f32(const float *a, const float *b, int64_t n) {
  // Four partial sums: shorter dependency chains and closer to the AVX2 path's rounding.
  float s[4] = {0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    for (int k = 0; k < 4; ++k)
      s[k] += a[i + k] * b[i + k];
  }
  for (; i < n; ++i)
    s[0] += a[i] * b[i];
  return (s[0] + s[1]) + (s[2] + s[3]);
}

void axpy(float a, const float *x, float *y, int64_t n) {
  for (int64_t i = 0; i < n; ++i)
    y[i] += a * x[i];
}

void dot_rows(const float *q, const float *rows, int64_t stride, int64_t n_rows, int64_t n,
              float scale, float *out) {
  for (int64_t r = 0; r < n_rows; ++r)
    out[r] = dot_f32(q, rows + r * stride, n) * scale;
}

void axpy_rows(const float *w, const float *rows, int64_t stride, int64_t n_rows, int64_t n,
               float *y) {
  for (int64_t r = 0; r < n_rows; ++r)
    axpy(w[r], rows + r * stride, y, n);
}

void dot_rows(const float *q, const uint16_t *rows, int64_t stride, int64_t n_rows, int64_t n,
              float scale, float *out) {
  float tmp[512];
  for (int64_t r = 0; r < n_rows; ++r) {
    float s = 0;
    for (int64_t i0 = 0; i0 < n; i0 += 512) {
      const int64_t m = std::min<int64_t>(512, n - i0);
      fp16_to_fp32_row(rows + r * stride + i0, tmp, m);
      if (i0 == 0 && m == n) {
        s = dot_f32(q, tmp, n);
      } else {
        s += dot_f32(q + i0, tmp, m);
      }
    }
    out[r] = s * scale;
  }
}

void axpy_rows(const float *w, const uint16_t *rows, int64_t stride, int64_t n_rows, int64_t n,
               float *y) {
  float tmp[512];
  for (int64_t r = 0; r < n_rows; ++r) {
    for (int64_t i0 = 0; i0 < n; i0 += 512) {
      const int64_t m = std::min<int64_t>(512, n - i0);
      fp16_to_fp32_row(rows + r * stride + i0, tmp, m);
      axpy(w[r], tmp, y + i0, m);
    }
  }
}

void attend_rows_f16(const float *s, int64_t s_stride, int n_q, const uint16_t *rows,
                     int64_t stride, int64_t n_rows, int64_t n, float *m, float *sum,
                     uint16_t *acc) {
  for (int h = 0; h < n_q; ++h) {
    const float *sh = s + h * s_stride;
    uint16_t *ah = acc + h * n;
    float mx = m[h], sm = sum[h];
    for (int64_t r = 0; r < n_rows; ++r) {
      const uint16_t *v = rows + r * stride;
      float ms = 1.0f, vs = 1.0f;
      if (sh[r] > mx) {
        ms = std::exp(mx - sh[r]);
        mx = sh[r];
        for (int64_t i = 0; i < n; ++i)
          ah[i] = kernels::fp32_to_fp16(kernels::fp16_to_fp32(ah[i]) * ms);
      } else {
        vs = std::exp(sh[r] - mx);
      }
      for (int64_t i = 0; i < n; ++i) {
        ah[i] = kernels::fp32_to_fp16(
            std::fma(kernels::fp16_to_fp32(v[i]), vs, kernels::fp16_to_fp32(ah[i])));
      }
      sm = std::fma(sm, ms, vs);
    }
    m[h] = mx;
    sum[h] = sm;
  }
}

} // namespace gantry::engine::kernels::scalar
