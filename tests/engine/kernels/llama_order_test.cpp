// llama.cpp's summation orders (kernels/llama_order.h) of its AVX2 and AVX-512 builds against
// plain reference loops written from ggml's source (ggml_vec_dot_f32 as GCC vectorises it,
// tinyBLAS, the reduction trees, ggml_vec_dot_f16), and the same bits on every instruction set.
// The end-to-end check against llama.cpp itself is engine_logprobs_test (its server's logprobs)
// and families_test (its logits).
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include <gtest/gtest.h>

#include "engine/kernels/kernels.h"
#include "engine/kernels/llama_order.h"
#include "kernels_test_util.h"

namespace gantry::engine::kernels {
namespace {

using testing::available_isas;
using testing::isa_name;
using testing::random_floats;
using testing::ScopedIsa;

using llama_order::Build;

// The reduction trees. AVX-512 (_mm512_reduce_add_ps, used by both ggml_vec_dot_f32 and
// tinyBLAS): lanes i and i+8, then i and i+4, then (0+2) + (1+3). AVX2: halves first, then
// ggml_vec_dot_f32's two horizontal adds give (0+1) + (2+3) and tinyBLAS's movehl/movehdup give
// (0+2) + (1+3).
float tree16(const float *v) {
  float a[8], b[4];
  for (int i = 0; i < 8; ++i)
    a[i] = v[i + 8] + v[i];
  for (int i = 0; i < 4; ++i)
    b[i] = a[i + 4] + a[i];
  return (b[0] + b[2]) + (b[1] + b[3]);
}
float tree8_hadd(const float *v) {
  float t[4];
  for (int i = 0; i < 4; ++i)
    t[i] = v[i] + v[i + 4];
  return (t[0] + t[1]) + (t[2] + t[3]);
}
float tree8_movehl(const float *v) {
  float t[4];
  for (int i = 0; i < 4; ++i)
    t[i] = v[i + 4] + v[i];
  return (t[0] + t[2]) + (t[1] + t[3]);
}

int lanes(Build b) { return b == Build::kAvx512 ? 16 : 8; }

float ref_vec_dot(Build bd, const float *x, const float *y, int64_t n) {
  const int w = lanes(bd), step = 4 * w;
  const int64_t np = n / step * step;
  float sum = 0.0f;
  if (np > 0) {
    float acc[4][16] = {};
    for (int64_t i = 0; i < np; i += step) {
      for (int j = 0; j < 4; ++j) {
        for (int l = 0; l < w; ++l)
          acc[j][l] = std::fma(x[i + w * j + l], y[i + w * j + l], acc[j][l]);
      }
    }
    float s[16];
    for (int l = 0; l < w; ++l)
      s[l] = (acc[0][l] + acc[2][l]) + (acc[1][l] + acc[3][l]);
    sum = w == 16 ? tree16(s) : tree8_hadd(s);
  }
  int64_t i = np;
  // Leftovers: w then w/2 rounded products at a time, in order; the last ones fused.
  for (; n - i >= w; i += w) {
    for (int l = 0; l < w; ++l) {
      const volatile float p = x[i + l] * y[i + l];
      sum = sum + p;
    }
  }
  if (n - i >= w / 2) {
    for (int l = 0; l < w / 2; ++l) {
      const volatile float p = x[i + l] * y[i + l];
      sum = sum + p;
    }
    i += w / 2;
  }
  for (; i < n; ++i)
    sum = std::fma(x[i], y[i], sum);
  return sum;
}

float ref_tiny_blas(Build bd, const float *a, const float *b, int64_t k) {
  const int w = lanes(bd);
  float acc[16] = {};
  for (int64_t c = 0; c < k; c += w) {
    for (int l = 0; l < w; ++l)
      acc[l] = std::fma(a[c + l], b[c + l], acc[l]);
  }
  return w == 16 ? tree16(acc) : tree8_movehl(acc);
}

class ScopedBuild {
public:
  explicit ScopedBuild(Build b) : saved_(llama_order::build()) { llama_order::set_build(b); }
  ~ScopedBuild() { llama_order::set_build(saved_); }
  ScopedBuild(const ScopedBuild &) = delete;
  ScopedBuild &operator=(const ScopedBuild &) = delete;

private:
  Build saved_;
};

const char *build_name(Build b) { return b == Build::kAvx512 ? "avx512-build" : "avx2-build"; }

bool same_bits(float a, float b) { return std::memcmp(&a, &b, sizeof a) == 0; }

TEST(LlamaOrderTest, F32MatmulSumsInLlamaCppsOrderOnEveryIsa) {
  ThreadPool pool1(1), pool2(2);
  // rows x cols: tinyBLAS's shapes (rows % 4 == 0, cols % 16 == 0) and the others, and columns
  // that exercise every leftover path (172 = 128 + 16 + 16 + 8 + 4; 90 = 64 + 16 + 8 + 2).
  const std::pair<int64_t, int64_t> shapes[] = {
      {64, 64}, {172, 64}, {64, 172}, {512, 64}, {32, 200}, {48, 90}, {37, 96}, {8, 8}, {400, 256}};
  for (Build bd : {Build::kAvx2, Build::kAvx512}) {
    ScopedBuild build_scope(bd);
    for (Isa isa : available_isas()) {
      ScopedIsa scope(isa);
      for (auto [rows, cols] : shapes) {
        const auto w = random_floats(rows * cols, 3);
        const WeightView view = make_weight_view(TensorType::kF32, w.data(), rows, cols);
        const int64_t n = 5;
        const auto x = random_floats(n * cols, 4);
        const bool tiny_blas = rows % 4 == 0 && cols % lanes(bd) == 0;
        const uint8_t single[n] = {0, 1, 0, 0, 1};
        for (ThreadPool *pool : {&pool1, &pool2}) {
          std::vector<float> batch(static_cast<size_t>(n * rows)), marked(batch.size()),
              alone(batch.size());
          matmul(view, x.data(), n, batch.data(), *pool);
          matmul(view, x.data(), n, marked.data(), *pool, single);
          for (int64_t t = 0; t < n; ++t)
            matmul(view, x.data() + t * cols, 1, alone.data() + t * rows, *pool);
          for (int64_t t = 0; t < n; ++t) {
            for (int64_t r = 0; r < rows; ++r) {
              const float *row = w.data() + r * cols, *xt = x.data() + t * cols;
              const float vec = ref_vec_dot(bd, row, xt, cols);
              const float tb = tiny_blas ? ref_tiny_blas(bd, row, xt, cols) : vec;
              const size_t i = static_cast<size_t>(t * rows + r);
              ASSERT_TRUE(same_bits(alone[i], vec))
                  << build_name(bd) << " " << isa_name(isa) << " " << rows << "x" << cols
                  << " alone t=" << t << " r=" << r;
              ASSERT_TRUE(same_bits(batch[i], tb))
                  << build_name(bd) << " " << isa_name(isa) << " " << rows << "x" << cols
                  << " batch t=" << t << " r=" << r;
              ASSERT_TRUE(same_bits(marked[i], single[t] ? vec : tb))
                  << build_name(bd) << " " << isa_name(isa) << " " << rows << "x" << cols
                  << " marked t=" << t << " r=" << r;
            }
          }
        }
      }
    }
  }
}

// SwiGLU in vector chunks of each build's polynomial exp (16 lanes with vscalefps for AVX-512,
// 8 lanes with its own exponent handling for AVX2) and libm's expf for the rest: the same bits on
// every instruction set (emulated where the instruction set lacks the build's), close to the
// exact function, and saturating where ggml's does.
TEST(LlamaOrderTest, SiluMulSameBitsOnEveryIsaAndCloseToExact) {
  std::vector<float> gate = random_floats(1000, 9, 6.0f);
  const float extremes[] = {0.0f,   -0.0f,   1e-30f, -1e-30f, 88.0f,  -88.0f,  89.0f, -89.0f,
                            100.0f, -100.0f, 150.0f, -150.0f, 200.0f, -200.0f, 1e30f, -1e30f};
  std::copy(std::begin(extremes), std::end(extremes), gate.begin());
  const std::vector<float> up = random_floats(1000, 10);
  for (Build bd : {Build::kAvx2, Build::kAvx512}) {
    ScopedBuild build_scope(bd);
    for (int64_t n : {1, 7, 8, 9, 15, 16, 17, 172, 1000}) {
      std::vector<std::vector<float>> outs;
      for (Isa isa : available_isas()) {
        ScopedIsa scope(isa);
        std::vector<float> out(static_cast<size_t>(n));
        silu_mul(gate.data(), up.data(), out.data(), n);
        for (int64_t i = 0; i < n; ++i) {
          const double g = gate[i];
          const double want = g / (1 + std::exp(-g)) * up[i];
          ASSERT_NEAR(out[i], want, 2e-6 * (1 + std::fabs(want)))
              << isa_name(isa) << " n=" << n << " i=" << i << " gate=" << g;
        }
        outs.push_back(std::move(out));
      }
      for (size_t k = 1; k < outs.size(); ++k) {
        for (int64_t i = 0; i < n; ++i) {
          ASSERT_TRUE(same_bits(outs[k][i], outs[0][i]))
              << isa_name(available_isas()[k]) << " n=" << n << " i=" << i << ": " << outs[k][i]
              << " vs scalar " << outs[0][i] << " (gate " << gate[i] << ")";
        }
      }
    }
  }
}

// Flash attention's K·Q against fp16 rows: rows shorter than a step (4 vectors) summed in double,
// longer ones in four accumulators of the build's width and the rest in double, then scaled.
TEST(LlamaOrderTest, F16DotRowsSumLikeGgmlVecDotF16) {
  for (Build bd : {Build::kAvx2, Build::kAvx512}) {
    ScopedBuild build_scope(bd);
    const int w = lanes(bd), step = 4 * w;
    for (int64_t n : {8, 32, 40, 64, 72, 128, 200}) {
      auto q = random_floats(n, 11);
      for (auto &v : q)
        v = fp16_to_fp32(fp32_to_fp16(v)); // llama.cpp rounds Q to fp16 first
      const int64_t n_rows = 3;
      const auto kf = random_floats(n * n_rows, 12);
      std::vector<uint16_t> k(kf.size());
      fp32_to_fp16_row(kf.data(), k.data(), static_cast<int64_t>(kf.size()));
      for (Isa isa : available_isas()) {
        ScopedIsa scope(isa);
        float out[n_rows];
        dot_rows(q.data(), k.data(), n, n_rows, n, 0.125f, out);
        for (int64_t r = 0; r < n_rows; ++r) {
          const uint16_t *kr = k.data() + r * n;
          const int64_t np = n / step * step;
          double sum = 0;
          if (np > 0) {
            float acc[4][16] = {};
            for (int64_t i = 0; i < np; i += step) {
              for (int j = 0; j < 4; ++j) {
                for (int l = 0; l < w; ++l) {
                  const int64_t c = i + w * j + l;
                  acc[j][l] = std::fma(fp16_to_fp32(kr[c]), q[c], acc[j][l]);
                }
              }
            }
            float s[16];
            for (int l = 0; l < w; ++l)
              s[l] = (acc[0][l] + acc[2][l]) + (acc[1][l] + acc[3][l]);
            sum = w == 16 ? tree16(s) : tree8_hadd(s);
          }
          for (int64_t i = np; i < n; ++i)
            sum += static_cast<double>(fp16_to_fp32(kr[i]) * q[i]);
          const float want = static_cast<float>(sum) * 0.125f;
          ASSERT_TRUE(same_bits(out[r], want))
              << build_name(bd) << " " << isa_name(isa) << " n=" << n << " row " << r;
        }
      }
    }
  }
}

// A GQA group's heads against the same fp16 rows in one call: each head's scores are exactly
// dot_rows' (which the test above ties to ggml_vec_dot_f16), for odd head counts, more heads
// than one vector block holds, rows with a stride, and widths with and without the fast path.
TEST(LlamaOrderTest, F16DotHeadsGiveEachHeadsDotRows) {
  for (Build bd : {Build::kAvx2, Build::kAvx512}) {
    ScopedBuild build_scope(bd);
    for (int64_t n : {32, 40, 64, 128, 256}) {
      for (int n_q : {1, 2, 3, 7, 8, 9, 16}) {
        const int64_t n_rows = 13, stride = n + 24;
        std::vector<std::vector<float>> qs(n_q);
        std::vector<const float *> qp(n_q);
        for (int h = 0; h < n_q; ++h) {
          qs[h] = random_floats(n, 100 + h);
          for (auto &v : qs[h])
            v = fp16_to_fp32(fp32_to_fp16(v));
          qp[h] = qs[h].data();
        }
        const auto kf = random_floats(stride * n_rows, 7);
        std::vector<uint16_t> k(kf.size());
        fp32_to_fp16_row(kf.data(), k.data(), static_cast<int64_t>(kf.size()));
        for (Isa isa : available_isas()) {
          ScopedIsa scope(isa);
          const int64_t out_stride = n_rows + 5;
          std::vector<float> got(n_q * out_stride, -1.0f);
          dot_rows_heads(qp.data(), n_q, k.data(), stride, n_rows, n, 0.125f, got.data(),
                         out_stride);
          for (int h = 0; h < n_q; ++h) {
            float want[n_rows];
            dot_rows(qp[h], k.data(), stride, n_rows, n, 0.125f, want);
            for (int64_t r = 0; r < n_rows; ++r)
              ASSERT_TRUE(same_bits(got[h * out_stride + r], want[r]))
                  << build_name(bd) << " " << isa_name(isa) << " n=" << n << " n_q=" << n_q
                  << " head " << h << " row " << r << ": " << got[h * out_stride + r] << " vs "
                  << want[r];
            for (int64_t r = n_rows; r < out_stride && h + 1 < n_q; ++r)
              ASSERT_EQ(got[h * out_stride + r], -1.0f) << "wrote past the rows";
          }
        }
      }
    }
  }
}

} // namespace
} // namespace gantry::engine::kernels
