// fp16/bf16 conversion and the ggml block layouts, checked against hand-built blocks.
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "engine/kernels/blocks.h"
#include "engine/kernels/kernels.h"
#include "kernels_test_util.h"

namespace gantry::engine::kernels {
namespace {

using testing::available_isas;
using testing::isa_name;
using testing::random_floats;
using testing::ScopedIsa;

TEST(Fp16Test, KnownValues) {
  EXPECT_EQ(fp32_to_fp16(0.0f), 0x0000);
  EXPECT_EQ(fp32_to_fp16(-0.0f), 0x8000);
  EXPECT_EQ(fp32_to_fp16(1.0f), 0x3C00);
  EXPECT_EQ(fp32_to_fp16(-2.0f), 0xC000);
  EXPECT_EQ(fp32_to_fp16(65504.0f), 0x7BFF);
  EXPECT_EQ(fp32_to_fp16(65520.0f), 0x7C00); // ties to even: rounds up to infinity
  EXPECT_EQ(fp32_to_fp16(1e9f), 0x7C00);
  EXPECT_EQ(fp32_to_fp16(5.9604645e-8f), 0x0001);      // smallest subnormal
  EXPECT_EQ(fp32_to_fp16(6.103515625e-05f), 0x0400);   // smallest normal
  EXPECT_EQ(fp32_to_fp16(1.0f + 1.0f / 2048), 0x3C00); // tie, even stays
  EXPECT_EQ(fp32_to_fp16(1.0f + 3.0f / 2048), 0x3C02); // tie, odd rounds up
  EXPECT_TRUE(std::isnan(fp16_to_fp32(fp32_to_fp16(std::numeric_limits<float>::quiet_NaN()))));
  EXPECT_EQ(fp16_to_fp32(0x3555), 0.333251953125f);
  EXPECT_EQ(fp16_to_fp32(0x0001), 5.9604644775390625e-8f);
  EXPECT_EQ(fp16_to_fp32(0xFC00), -std::numeric_limits<float>::infinity());
}

TEST(Fp16Test, RoundTripsEveryHalf) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float f = fp16_to_fp32(static_cast<uint16_t>(h));
    if (std::isnan(f))
      continue;
    ASSERT_EQ(fp32_to_fp16(f), h) << std::hex << h;
  }
}

TEST(Fp16Test, RowConversionMatchesScalarOnEveryIsa) {
  std::vector<uint16_t> all(0x10000);
  for (uint32_t h = 0; h < 0x10000; ++h)
    all[h] = static_cast<uint16_t>(h);
  auto xs = random_floats(1003, 5, 100.0f);
  for (Isa isa : available_isas()) {
    ScopedIsa scope(isa);
    std::vector<float> f(all.size());
    fp16_to_fp32_row(all.data(), f.data(), static_cast<int64_t>(all.size()));
    for (uint32_t h = 0; h < 0x10000; ++h) {
      const float want = fp16_to_fp32(static_cast<uint16_t>(h));
      if (std::isnan(want)) {
        ASSERT_TRUE(std::isnan(f[h])) << isa_name(isa);
      } else {
        ASSERT_EQ(f[h], want) << isa_name(isa) << " " << std::hex << h;
      }
    }
    std::vector<uint16_t> h(xs.size());
    fp32_to_fp16_row(xs.data(), h.data(), static_cast<int64_t>(xs.size()));
    for (size_t i = 0; i < xs.size(); ++i)
      ASSERT_EQ(h[i], fp32_to_fp16(xs[i])) << isa_name(isa);
  }
}

TEST(Bf16Test, RoundsToNearestEven) {
  EXPECT_EQ(fp32_to_bf16(1.0f), 0x3F80);
  EXPECT_EQ(bf16_to_fp32(0x3F80), 1.0f);
  EXPECT_EQ(fp32_to_bf16(1.0f + 1.0f / 256), 0x3F80); // tie, even stays
  EXPECT_EQ(fp32_to_bf16(1.0f + 3.0f / 256), 0x3F82); // tie, odd rounds up
  EXPECT_TRUE(std::isnan(bf16_to_fp32(fp32_to_bf16(std::numeric_limits<float>::quiet_NaN()))));
}

TEST(SupportTest, WeightTypes) {
  for (auto t : {TensorType::kF32, TensorType::kF16, TensorType::kBF16, TensorType::kQ8_0,
                 TensorType::kQ4_0, TensorType::kQ4_K, TensorType::kQ6_K}) {
    EXPECT_TRUE(is_supported(t)) << gguf::type_traits(t).name;
  }
  // What llama-quantize's common presets produce besides the above (Q5_K_M, Q3_K_M, Q2_K, and
  // the Q5_0 fallback of Q4_K_M files whose widths are not multiples of 256).
  for (auto t : {TensorType::kQ4_1, TensorType::kQ5_0, TensorType::kQ5_1, TensorType::kIQ4_NL,
                 TensorType::kQ2_K, TensorType::kQ3_K, TensorType::kQ5_K}) {
    EXPECT_TRUE(is_supported(t)) << gguf::type_traits(t).name;
  }
  EXPECT_FALSE(is_supported(TensorType::kQ8_K)); // activations only
  EXPECT_FALSE(is_supported(TensorType::kIQ4_XS));
  EXPECT_EQ(row_bytes(TensorType::kQ4_0, 64), 36u);
  EXPECT_EQ(row_bytes(TensorType::kQ6_K, 512), 420u);
}

// ---- layouts, from hand-built blocks --------------------------------------------------------

// The word-at-a-time decode of a Q4_K/Q5_K super-block's 6-bit scales and mins gives
// scale_min_k4's values, on random bytes and on the all-ones pattern (every spare bit set).
TEST(LayoutTest, ScalesMinsK4MatchesOneAtATime) {
  std::mt19937 rng(7);
  for (int iter = 0; iter < 20000; ++iter) {
    uint8_t q[12];
    for (uint8_t &b : q)
      b = iter == 0 ? 0xFF : static_cast<uint8_t>(rng());
    uint8_t all[16];
    scales_mins_k4(q, all);
    for (int j = 0; j < 8; ++j) {
      uint8_t sc = 0, m = 0;
      scale_min_k4(j, q, &sc, &m);
      ASSERT_EQ(all[j], sc) << "scale " << j << " iteration " << iter;
      ASSERT_EQ(all[8 + j], m) << "min " << j << " iteration " << iter;
    }
  }
}

// Q3_K's 16 scales decoded four at a time match q3_k_scale one at a time.
TEST(LayoutTest, Q3KScales6MatchesOneAtATime) {
  std::mt19937 rng(11);
  for (int iter = 0; iter < 20000; ++iter) {
    uint8_t s[12];
    for (uint8_t &b : s)
      b = iter == 0 ? 0xFF : static_cast<uint8_t>(rng());
    uint8_t all[16];
    q3_k_scales6(s, all);
    for (int j = 0; j < 16; ++j)
      ASSERT_EQ(all[j] - 32, q3_k_scale(j, s)) << "scale " << j << " iteration " << iter;
  }
}

TEST(LayoutTest, Q8_0) {
  uint8_t block[34] = {};
  const uint16_t d = fp32_to_fp16(0.5f);
  std::memcpy(block, &d, 2);
  for (int i = 0; i < 32; ++i)
    block[2 + i] = static_cast<uint8_t>(static_cast<int8_t>(i - 16));
  float out[32];
  dequantize_row(TensorType::kQ8_0, block, out, 32);
  for (int i = 0; i < 32; ++i)
    EXPECT_EQ(out[i], 0.5f * static_cast<float>(i - 16)) << i;
}

TEST(LayoutTest, Q4_0LowNibblesFirstHalf) {
  uint8_t block[18] = {};
  const uint16_t d = fp32_to_fp16(2.0f);
  std::memcpy(block, &d, 2);
  for (int i = 0; i < 16; ++i)
    block[2 + i] = static_cast<uint8_t>(i | ((15 - i) << 4));
  float out[32];
  dequantize_row(TensorType::kQ4_0, block, out, 32);
  for (int i = 0; i < 16; ++i) {
    EXPECT_EQ(out[i], 2.0f * static_cast<float>(i - 8)) << i;
    EXPECT_EQ(out[i + 16], 2.0f * static_cast<float>(7 - i)) << i;
  }
}

TEST(LayoutTest, Q4_KScalesAndNibbles) {
  uint8_t block[144] = {};
  const uint16_t d = fp32_to_fp16(1.0f), dmin = fp32_to_fp16(0.5f);
  std::memcpy(block, &d, 2);
  std::memcpy(block + 2, &dmin, 2);
  uint8_t *scales = block + 4;
  // Sub-block scales sc[j] = 10 + j*7 (up to 59: uses the top bits), mins m[j] = 3 + j*8.
  int sc[8], m[8];
  for (int j = 0; j < 8; ++j) {
    sc[j] = 10 + 7 * j;
    m[j] = 3 + 8 * j;
  }
  for (int j = 0; j < 4; ++j) {
    scales[j] = static_cast<uint8_t>(sc[j] | ((sc[j + 4] >> 4) << 6));
    scales[j + 4] = static_cast<uint8_t>(m[j] | ((m[j + 4] >> 4) << 6));
    scales[j + 8] = static_cast<uint8_t>((sc[j + 4] & 15) | ((m[j + 4] & 15) << 4));
  }
  uint8_t *qs = block + 16;
  for (int i = 0; i < 128; ++i)
    qs[i] = static_cast<uint8_t>((i % 16) | (((i + 5) % 16) << 4));
  float out[256];
  dequantize_row(TensorType::kQ4_K, block, out, 256);
  for (int e = 0; e < 256; ++e) {
    const int chunk = e / 64, within = e % 64, j = e / 32;
    const int byte = 32 * chunk + within % 32;
    const int q = within < 32 ? byte % 16 : (byte + 5) % 16;
    const float want = 1.0f * static_cast<float>(sc[j] * q) - 0.5f * static_cast<float>(m[j]);
    ASSERT_EQ(out[e], want) << e;
  }
}

TEST(LayoutTest, Q6_KQuartersAndHighBits) {
  uint8_t block[210] = {};
  uint8_t *ql = block, *qh = block + 128;
  auto *scales = reinterpret_cast<int8_t *>(block + 192);
  const uint16_t d = fp32_to_fp16(0.25f);
  std::memcpy(block + 208, &d, 2);
  for (int g = 0; g < 16; ++g)
    scales[g] = static_cast<int8_t>(g % 2 ? -(g + 1) : g + 1);
  // Element e of half h, quarter k, lane l: low 4 bits in ql[64h + l + 32(k&1)] (low nibble for
  // k < 2, high for k >= 2), high 2 bits in qh[32h + l] bits 2k..2k+1.
  int want_q[256];
  for (int e = 0; e < 256; ++e)
    want_q[e] = (e * 37 + 11) % 64;
  for (int e = 0; e < 256; ++e) {
    const int h = e / 128, k = (e % 128) / 32, l = e % 32, q = want_q[e];
    ql[64 * h + l + 32 * (k & 1)] |= static_cast<uint8_t>(k < 2 ? (q & 15) : (q & 15) << 4);
    qh[32 * h + l] |= static_cast<uint8_t>((q >> 4) << (2 * k));
  }
  float out[256];
  dequantize_row(TensorType::kQ6_K, block, out, 256);
  for (int e = 0; e < 256; ++e) {
    ASSERT_EQ(out[e], 0.25f * scales[e / 16] * static_cast<float>(want_q[e] - 32)) << e;
  }
}

// ---- quantize -> dequantize round trips -----------------------------------------------------

struct RoundTrip {
  TensorType type;
  float max_rel_err; // of the block's largest magnitude
};

TEST(QuantizeTest, RoundTripWithinQuantizationStep) {
  for (RoundTrip rt : {RoundTrip{TensorType::kF32, 0.0f}, RoundTrip{TensorType::kF16, 1e-3f},
                       RoundTrip{TensorType::kBF16, 8e-3f}, RoundTrip{TensorType::kQ8_0, 0.0041f},
                       RoundTrip{TensorType::kQ4_0, 0.07f}, RoundTrip{TensorType::kQ4_K, 0.15f},
                       RoundTrip{TensorType::kQ6_K, 0.04f}}) {
    const int64_t n = 512;
    auto x = random_floats(n, 42);
    std::vector<uint8_t> q(row_bytes(rt.type, n));
    quantize_row(rt.type, x.data(), q.data(), n);
    std::vector<float> back(n);
    dequantize_row(rt.type, q.data(), back.data(), n);
    float amax = 0;
    for (float v : x)
      amax = std::max(amax, std::fabs(v));
    for (int64_t i = 0; i < n; ++i) {
      ASSERT_NEAR(back[i], x[i], rt.max_rel_err * amax + 1e-7f)
          << gguf::type_traits(rt.type).name << " at " << i;
    }
  }
}

TEST(QuantizeTest, ZerosStayZero) {
  for (auto t : {TensorType::kQ8_0, TensorType::kQ4_0, TensorType::kQ4_K, TensorType::kQ6_K}) {
    std::vector<float> x(256, 0.0f), back(256, 1.0f);
    std::vector<uint8_t> q(row_bytes(t, 256));
    quantize_row(t, x.data(), q.data(), 256);
    dequantize_row(t, q.data(), back.data(), 256);
    for (float v : back)
      ASSERT_EQ(v, 0.0f) << gguf::type_traits(t).name;
  }
}

} // namespace
} // namespace gantry::engine::kernels
