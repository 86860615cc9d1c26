// The forward-pass vector helpers against straightforward double-precision references.
#include <cmath>
#include <vector>

#include <gtest/gtest.h>

#include "engine/kernels/kernels.h"
#include "kernels_test_util.h"

namespace gantry::engine::kernels {
namespace {

using testing::available_isas;
using testing::isa_name;
using testing::random_floats;
using testing::ScopedIsa;

constexpr int64_t kSizes[] = {1, 7, 8, 31, 64, 1000, 2048};

TEST(OpsTest, RmsNorm) {
  for (Isa isa : available_isas()) {
    ScopedIsa scope(isa);
    for (int64_t n : kSizes) {
      auto x = random_floats(n, 1, 3.0f), w = random_floats(n, 2);
      std::vector<float> out(static_cast<size_t>(n));
      rmsnorm(x.data(), w.data(), out.data(), n, 1e-5f);
      double ss = 0;
      for (float v : x)
        ss += static_cast<double>(v) * v;
      const double inv = 1.0 / std::sqrt(ss / static_cast<double>(n) + 1e-5);
      for (int64_t i = 0; i < n; ++i) {
        const double want = x[static_cast<size_t>(i)] * inv * w[static_cast<size_t>(i)];
        ASSERT_NEAR(out[static_cast<size_t>(i)], want, 1e-5 * (1 + std::fabs(want)))
            << isa_name(isa) << " n=" << n;
      }
      rmsnorm(x.data(), w.data(), x.data(), n, 1e-5f); // in place
      for (int64_t i = 0; i < n; ++i)
        ASSERT_EQ(x[static_cast<size_t>(i)], out[static_cast<size_t>(i)]);
    }
  }
}

TEST(OpsTest, GeluIsGgmlsFp16Table) {
  // ggml_vec_gelu_f32: GELU(tanh) of the fp16-rounded input, rounded to fp16; exact (x, or 0)
  // outside [-10, 10]. gelu_mul multiplies the same values.
  const std::vector<float> x = {-12.0f, -10.0f, -3.3f,    -1.0f, -0.001f, 0.0f, 0.1234567f,
                                0.5f,   1.0f,   2.71828f, 9.99f, 10.0f,   15.5f};
  std::vector<float> g(x.size()), gm(x.size());
  const std::vector<float> ones(x.size(), 1.0f);
  gelu(x.data(), g.data(), static_cast<int64_t>(x.size()));
  gelu_mul(x.data(), ones.data(), gm.data(), static_cast<int64_t>(x.size()));
  for (size_t i = 0; i < x.size(); ++i) {
    SCOPED_TRACE(x[i]);
    EXPECT_EQ(g[i], gm[i]);
    if (x[i] <= -10.0f) {
      EXPECT_EQ(g[i], 0.0f);
    } else if (x[i] >= 10.0f) {
      EXPECT_EQ(g[i], x[i]);
    } else {
      const float h = fp16_to_fp32(fp32_to_fp16(x[i]));
      const float exact =
          0.5f * h * (1.0f + std::tanh(0.7978845608f * h * (1.0f + 0.044715f * h * h)));
      EXPECT_EQ(g[i], fp16_to_fp32(fp32_to_fp16(exact)));
      // In place too.
      float y = x[i];
      gelu(&y, &y, 1);
      EXPECT_EQ(y, g[i]);
    }
  }
}

TEST(OpsTest, Softmax) {
  for (Isa isa : available_isas()) {
    ScopedIsa scope(isa);
    for (int64_t n : kSizes) {
      auto x = random_floats(n, 3, 10.0f);
      auto y = x;
      softmax(y.data(), n);
      double mx = -1e30, sum = 0;
      for (float v : x)
        mx = std::max(mx, static_cast<double>(v));
      for (float v : x)
        sum += std::exp(v - mx);
      for (int64_t i = 0; i < n; ++i) {
        const double want = std::exp(x[static_cast<size_t>(i)] - mx) / sum;
        ASSERT_NEAR(y[static_cast<size_t>(i)], want, 1e-6 + 1e-5 * want)
            << isa_name(isa) << " n=" << n << " i=" << i;
      }
    }
    std::vector<float> big = {1000.0f, 1000.0f, -1e30f};
    softmax(big.data(), 3);
    EXPECT_NEAR(big[0], 0.5f, 1e-6) << isa_name(isa);
    EXPECT_EQ(big[2], 0.0f) << isa_name(isa);
  }
}

TEST(OpsTest, SiluMulAddScaleDotAxpy) {
  for (Isa isa : available_isas()) {
    ScopedIsa scope(isa);
    for (int64_t n : kSizes) {
      auto a = random_floats(n, 4, 4.0f), b = random_floats(n, 5);
      std::vector<float> out(static_cast<size_t>(n));
      silu_mul(a.data(), b.data(), out.data(), n);
      for (int64_t i = 0; i < n; ++i) {
        const double g = a[static_cast<size_t>(i)];
        const double want = g / (1 + std::exp(-g)) * b[static_cast<size_t>(i)];
        ASSERT_NEAR(out[static_cast<size_t>(i)], want, 1e-5 * (1 + std::fabs(want)))
            << isa_name(isa);
      }
      add(a.data(), b.data(), out.data(), n);
      for (int64_t i = 0; i < n; ++i) {
        ASSERT_EQ(out[static_cast<size_t>(i)],
                  a[static_cast<size_t>(i)] + b[static_cast<size_t>(i)]);
      }
      auto s = a;
      scale(s.data(), 0.5f, n);
      for (int64_t i = 0; i < n; ++i)
        ASSERT_EQ(s[static_cast<size_t>(i)], a[static_cast<size_t>(i)] * 0.5f);
      double dot = 0, mag = 0;
      for (int64_t i = 0; i < n; ++i) {
        dot += static_cast<double>(a[static_cast<size_t>(i)]) * b[static_cast<size_t>(i)];
        mag +=
            std::fabs(static_cast<double>(a[static_cast<size_t>(i)]) * b[static_cast<size_t>(i)]);
      }
      ASSERT_NEAR(dot_f32(a.data(), b.data(), n), dot, 1e-5 * mag + 1e-6) << isa_name(isa);
      auto y = b;
      axpy(2.0f, a.data(), y.data(), n);
      for (int64_t i = 0; i < n; ++i) {
        ASSERT_NEAR(y[static_cast<size_t>(i)],
                    b[static_cast<size_t>(i)] + 2.0 * a[static_cast<size_t>(i)], 1e-5);
      }
    }
  }
}

} // namespace
} // namespace gantry::engine::kernels
