// Placeholder: forwards to the scalar kernels until the AVX2 versions land.
#include "engine/kernels/kernels_impl.h"

namespace gantry::engine::kernels::avx2 {

void matmul_rows(const WeightView &w, const Activations &a, int64_t t0, int64_t t1, int64_t r0,
                 int64_t r1, float *y, int64_t ldy) {
  scalar::matmul_rows(w, a, t0, t1, r0, r1, y, ldy);
}
void quantize_act_q8(const float *x, int8_t *qs, float *d, int64_t n) {
  scalar::quantize_act_q8(x, qs, d, n);
}
void quantize_act_q8k(const float *x, int8_t *qs, float *d, int16_t *bsums, int64_t n) {
  scalar::quantize_act_q8k(x, qs, d, bsums, n);
}
void fp16_to_fp32_row(const uint16_t *src, float *dst, int64_t n) {
  scalar::fp16_to_fp32_row(src, dst, n);
}
void fp32_to_fp16_row(const float *src, uint16_t *dst, int64_t n) {
  scalar::fp32_to_fp16_row(src, dst, n);
}
void rmsnorm(const float *x, const float *weight, float *out, int64_t n, float eps) {
  scalar::rmsnorm(x, weight, out, n, eps);
}
void softmax(float *x, int64_t n) { scalar::softmax(x, n); }
void silu_mul(const float *gate, const float *up, float *out, int64_t n) {
  scalar::silu_mul(gate, up, out, n);
}
void add(const float *a, const float *b, float *out, int64_t n) { scalar::add(a, b, out, n); }
void scale(float *x, float s, int64_t n) { scalar::scale(x, s, n); }
float dot_f32(const float *a, const float *b, int64_t n) { return scalar::dot_f32(a, b, n); }
void axpy(float a, const float *x, float *y, int64_t n) { scalar::axpy(a, x, y, n); }

} // namespace gantry::engine::kernels::avx2
