// The forward-pass vector helpers against straightforward double-precision references.
#include <bit>
#include <cmath>
#include <cstdint>
#include <vector>

#include <gtest/gtest.h>

#include "engine/kernels/kernels.h"
#include "engine/kernels/kernels_impl.h"
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

#if defined(GANTRY_KERNELS_HAVE_AVX2)
// Attention's weights on AVX-512 and AVX2 use a copy of glibc's expf: every bit must be
// std::exp's. A sweep over every 997th float (all 32 table entries and both signs many times
// over; every float was checked once by hand with a step of 1), the boundaries of glibc's
// special cases, and the values themselves.
using ExpLanes = void (*)(const float *, float *, int64_t);
void expect_std_exp_bits(ExpLanes exp_lanes, const std::vector<float> &x) {
  std::vector<float> y(x.size() + 1, 7.0f);
  exp_lanes(x.data(), y.data(), static_cast<int64_t>(x.size()));
  for (size_t i = 0; i < x.size(); ++i) {
    const float want = std::exp(x[i]);
    if (std::isnan(want)) {
      ASSERT_TRUE(std::isnan(y[i])) << x[i];
      continue;
    }
    ASSERT_EQ(std::bit_cast<uint32_t>(y[i]), std::bit_cast<uint32_t>(want))
        << "exp(" << x[i] << " = 0x" << std::hex << std::bit_cast<uint32_t>(x[i]) << ")";
  }
  ASSERT_EQ(y[x.size()], 7.0f) << "wrote past the end";
}

void exp_lanes_give_std_exps_bits(ExpLanes exp_lanes) {
  constexpr uint64_t kStep = 997;
  std::vector<float> x;
  for (uint64_t u = 0; u <= 0xffffffffu; u += kStep) {
    x.push_back(std::bit_cast<float>(static_cast<uint32_t>(u)));
    if (x.size() == (1u << 20) + 3) {
      expect_std_exp_bits(exp_lanes, x);
      x.clear();
    }
  }
  for (float v : {0.0f, -0.0f, 88.0f, -88.0f, 0x1.62e42ep6f, 0x1.62e430p6f, -0x1.9fe368p6f,
                  -0x1.9d1d9ep6f, -103.5f, -104.0f, INFINITY, -INFINITY, NAN, 1e-30f, -1e-45f})
    x.push_back(v);
  x.push_back(std::nextafter(88.0f, 0.0f));
  x.push_back(std::nextafter(-88.0f, 0.0f));
  // Lengths that end in a partial vector.
  for (int n = 1; n < 16; ++n)
    x.push_back(-0.5f * static_cast<float>(n));
  expect_std_exp_bits(exp_lanes, x);
}

TEST(OpsTest, ExpLanesGiveStdExpsBits) {
  if (detected_isa() != Isa::kAvx512Vnni)
    GTEST_SKIP() << "no AVX-512 on this CPU";
  exp_lanes_give_std_exps_bits(&avx512vnni::exp_lanes);
}

TEST(OpsTest, Avx2ExpLanesGiveStdExpsBits) {
  if (detected_isa() < Isa::kAvx2)
    GTEST_SKIP() << "no AVX2 on this CPU";
  exp_lanes_give_std_exps_bits(&avx2::exp_lanes);
}
#endif

// The read probe's kernel must read every byte of its range and none beyond it, whatever the
// pattern, size and alignment: its result changes when any byte inside changes and not when one
// just outside does.
TEST(OpsTest, ReadBytesReadsEveryByteOfItsRangeOnly) {
  const size_t span = 8 * (size_t{64} << 10); // the widest pattern's span
  const size_t sizes[] = {0, 1, 31, 33, 64, 4095, span - 1, span, 2 * span + 100};
  std::vector<uint8_t> buf(3 * span + 256);
  for (size_t i = 0; i < buf.size(); ++i)
    buf[i] = static_cast<uint8_t>(i * 131 + 7);
  for (Isa isa : available_isas()) {
    ScopedIsa scope(isa);
    for (const ReadPattern pat : kReadPatterns) {
      for (size_t n : sizes) {
        for (size_t off : {size_t{64}, size_t{65}, size_t{99}}) {
          const uint8_t *p = buf.data() + off;
          const uint64_t base = read_bytes(p, n, pat);
          std::vector<size_t> at = {0, n / 2, n - 1, n / 3 + 1};
          for (size_t b = 64 << 10; b < n; b += 64 << 10)
            at.push_back(b); // the 64 KiB block boundaries
          for (size_t i : at) {
            if (i >= n)
              continue;
            buf[off + i] ^= 0x5A;
            const uint64_t changed = read_bytes(p, n, pat);
            buf[off + i] ^= 0x5A;
            ASSERT_NE(changed, base) << isa_name(isa) << " streams=" << pat.streams << " n=" << n
                                     << " off=" << off << " byte " << i;
          }
          buf[off + n] ^= 0x5A; // just past the end
          buf[off - 1] ^= 0x5A; // just before the start
          EXPECT_EQ(read_bytes(p, n, pat), base) << isa_name(isa) << " n=" << n;
          buf[off + n] ^= 0x5A;
          buf[off - 1] ^= 0x5A;
        }
      }
    }
  }
}

} // namespace
} // namespace gantry::engine::kernels
