// The block layouts of Q4_1, Q5_0, Q5_1, IQ4_NL, Q2_K, Q3_K and Q5_K (ggml-common.h), checked on
// hand-built blocks: every byte placed by the format's definition spelled out here, and a few
// elements worked out by hand.
#include <cmath>
#include <cstring>
#include <vector>

#include <gtest/gtest.h>

#include "engine/kernels/kernels.h"
#include "kernels_test_util.h"

namespace gantry::engine::kernels {
namespace {

using testing::random_floats;

void put_half(uint8_t *at, float v) {
  const uint16_t h = fp32_to_fp16(v);
  std::memcpy(at, &h, 2);
}

// The 16 nibble bytes of a 32-element block: element i low nibble of byte i, element i + 16 the
// high nibble.
void put_nibbles(uint8_t *qs, const int *q) {
  for (int i = 0; i < 16; ++i)
    qs[i] = static_cast<uint8_t>((q[i] & 15) | ((q[i + 16] & 15) << 4));
}

std::vector<float> dequant(TensorType t, const uint8_t *block, int64_t n) {
  std::vector<float> out(static_cast<size_t>(n));
  dequantize_row(t, block, out.data(), n);
  return out;
}

TEST(QuantLayoutTest, Q4_1ScaleMinAndNibbles) {
  uint8_t block[20] = {};
  put_half(block, 0.5f);
  put_half(block + 2, -1.25f);
  int q[32];
  for (int i = 0; i < 32; ++i)
    q[i] = (i * 7 + 3) % 16;
  put_nibbles(block + 4, q);
  const auto out = dequant(TensorType::kQ4_1, block, 32);
  for (int i = 0; i < 32; ++i)
    ASSERT_EQ(out[i], 0.5f * static_cast<float>(q[i]) - 1.25f) << i;
  EXPECT_EQ(out[0], 0.25f);  // q = 3, the low nibble of byte 0
  EXPECT_EQ(out[17], 3.75f); // q = (17 * 7 + 3) % 16 = 10, the high nibble of byte 1
}

// qh is a little-endian word: element i's fifth bit is bit i % 8 of byte i / 8.
TEST(QuantLayoutTest, Q5_0FifthBitsLittleEndian) {
  uint8_t block[22] = {};
  put_half(block, 2.0f);
  const uint8_t qh[4] = {0x0F, 0xF0, 0xA5, 0x5A};
  std::memcpy(block + 2, qh, 4);
  int q[32];
  for (int i = 0; i < 32; ++i)
    q[i] = i % 16;
  put_nibbles(block + 6, q);
  const auto out = dequant(TensorType::kQ5_0, block, 32);
  for (int i = 0; i < 32; ++i) {
    const int bit = (qh[i / 8] >> (i % 8)) & 1;
    ASSERT_EQ(out[i], 2.0f * static_cast<float>((q[i] | (bit << 4)) - 16)) << i;
  }
  EXPECT_EQ(out[0], 0.0f);    // nibble 0, bit 1: 16 - 16
  EXPECT_EQ(out[4], -24.0f);  // nibble 4, bit 0: 4 - 16
  EXPECT_EQ(out[17], -30.0f); // nibble 1, bit 1 of byte 2 (0xA5) clear: 1 - 16
  EXPECT_EQ(out[18], 4.0f);   // nibble 2, bit 2 of 0xA5 set: 18 - 16
  EXPECT_EQ(out[31], -2.0f);  // nibble 15, bit 7 of 0x5A = 0: 15 - 16
}

TEST(QuantLayoutTest, Q5_1ScaleMinAndFifthBits) {
  uint8_t block[24] = {};
  put_half(block, 0.25f);
  put_half(block + 2, 1.0f);
  const uint8_t qh[4] = {0x01, 0x80, 0x00, 0xFF};
  std::memcpy(block + 4, qh, 4);
  int q[32];
  for (int i = 0; i < 32; ++i)
    q[i] = 15 - i % 16;
  put_nibbles(block + 8, q);
  const auto out = dequant(TensorType::kQ5_1, block, 32);
  for (int i = 0; i < 32; ++i) {
    const int bit = (qh[i / 8] >> (i % 8)) & 1;
    ASSERT_EQ(out[i], 0.25f * static_cast<float>(q[i] | (bit << 4)) + 1.0f) << i;
  }
  EXPECT_EQ(out[0], 0.25f * 31 + 1.0f); // nibble 15 + 16
  EXPECT_EQ(out[1], 0.25f * 14 + 1.0f);
  EXPECT_EQ(out[31], 0.25f * 16 + 1.0f); // nibble 0 + 16
}

TEST(QuantLayoutTest, IQ4_NLTable) {
  const float table[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                           1,    13,   25,  38,  53,  69,  89,  113};
  uint8_t block[18] = {};
  put_half(block, 0.5f);
  int q[32];
  for (int i = 0; i < 32; ++i)
    q[i] = i < 16 ? i : 31 - i;
  put_nibbles(block + 2, q);
  const auto out = dequant(TensorType::kIQ4_NL, block, 32);
  for (int i = 0; i < 32; ++i)
    ASSERT_EQ(out[i], 0.5f * table[q[i]]) << i;
  EXPECT_EQ(out[0], -63.5f);
  EXPECT_EQ(out[16], 56.5f);
}

// Q2_K: per 16 elements a byte (low nibble scale, high nibble min); element e of half h,
// j = (e % 128) / 32, l = e % 32 sits in bits 2j..2j+1 of qs[32h + l]; d and dmin come last.
TEST(QuantLayoutTest, Q2_KScalesMinsAndCrumbs) {
  uint8_t block[84] = {};
  uint8_t *scales = block, *qs = block + 16;
  for (int g = 0; g < 16; ++g)
    scales[g] = static_cast<uint8_t>(g | ((15 - g) << 4));
  for (int b = 0; b < 64; ++b)
    qs[b] = static_cast<uint8_t>(b * 37);
  put_half(block + 80, 1.0f);
  put_half(block + 82, 0.5f);
  const auto out = dequant(TensorType::kQ2_K, block, 256);
  for (int e = 0; e < 256; ++e) {
    const int h = e / 128, j = (e % 128) / 32, l = e % 32, g = e / 16;
    const int q = (qs[32 * h + l] >> (2 * j)) & 3;
    ASSERT_EQ(out[e], static_cast<float>(g * q) - 0.5f * static_cast<float>(15 - g)) << e;
  }
  EXPECT_EQ(out[0], -7.5f);  // q = 0, min 15
  EXPECT_EQ(out[33], -4.5f); // qs[1] = 37 = 0b100101: j = 1 -> q = 1; g = 2: 2 * 1 - 6.5
}

// Q3_K: hmask[32], qs[64], 12 bytes of 6-bit scales, d. A clear high bit subtracts 4.
TEST(QuantLayoutTest, Q3_KHighBitsAndSixBitScales) {
  uint8_t block[110] = {};
  uint8_t *hmask = block, *qs = block + 32, *scales = block + 96;
  int sc[16];
  for (int j = 0; j < 16; ++j) {
    sc[j] = 4 * j - 30; // -30..30: uses the sign and both high bits
    const int s = sc[j] + 32;
    if (j < 8) {
      scales[j] |= static_cast<uint8_t>(s & 15);
    } else {
      scales[j - 8] |= static_cast<uint8_t>((s & 15) << 4);
    }
    scales[8 + j % 4] |= static_cast<uint8_t>((s >> 4) << (2 * (j / 4)));
  }
  for (int b = 0; b < 32; ++b)
    hmask[b] = static_cast<uint8_t>(b * 29 + 7);
  for (int b = 0; b < 64; ++b)
    qs[b] = static_cast<uint8_t>(b * 53 + 1);
  put_half(block + 108, 0.125f);
  const auto out = dequant(TensorType::kQ3_K, block, 256);
  for (int e = 0; e < 256; ++e) {
    const int h = e / 128, j = (e % 128) / 32, l = e % 32;
    const int low = (qs[32 * h + l] >> (2 * j)) & 3;
    const int high = (hmask[l] >> (4 * h + j)) & 1;
    const int v = low - (high ? 0 : 4);
    ASSERT_EQ(out[e], 0.125f * static_cast<float>(sc[e / 16] * v)) << e;
  }
  // Element 0: qs[0] = 1 -> low 1; hmask[0] = 7 -> bit 0 set: v = 1; scale -30.
  EXPECT_EQ(out[0], 0.125f * -30.0f);
  // Element 128 + 3 (h = 1, j = 0, l = 3): qs[35] = 35 * 53 + 1 = 1856 % 256 = 64 -> low 0;
  // hmask[3] = 94 = 0b1011110 -> bit 4 set: v = 0.
  EXPECT_EQ(out[131], 0.0f);
}

// Q5_K: Q4_K's scales and nibbles plus qh: element 32j + l has bit j of qh[l].
TEST(QuantLayoutTest, Q5_KFifthBits) {
  uint8_t block[176] = {};
  put_half(block, 1.0f);
  put_half(block + 2, 0.5f);
  uint8_t *scales = block + 4, *qh = block + 16, *qs = block + 48;
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
  for (int l = 0; l < 32; ++l)
    qh[l] = static_cast<uint8_t>(l * 41 + 3);
  for (int i = 0; i < 128; ++i)
    qs[i] = static_cast<uint8_t>((i % 16) | (((i + 5) % 16) << 4));
  const auto out = dequant(TensorType::kQ5_K, block, 256);
  for (int e = 0; e < 256; ++e) {
    const int j = e / 32, l = e % 32;
    const uint8_t byte = qs[32 * (j / 2) + l];
    const int q = (j % 2 ? byte >> 4 : byte & 15) | (((qh[l] >> j) & 1) << 4);
    ASSERT_EQ(out[e], static_cast<float>(sc[j] * q) - 0.5f * static_cast<float>(m[j])) << e;
  }
  // Element 0: nibble 0, qh[0] = 3 -> bit 0 set: q = 16; 10 * 16 - 1.5.
  EXPECT_EQ(out[0], 158.5f);
}

// ---- the encoders: round trips within a quantization step ---------------------------------------

TEST(QuantLayoutTest, EncodersRoundTrip) {
  struct Case {
    TensorType type;
    float max_rel_err; // of the row's largest magnitude
    double max_rms;    // relative to the row's RMS
  };
  for (Case c : {Case{TensorType::kQ4_1, 0.07f, 0.1}, Case{TensorType::kQ5_0, 0.035f, 0.05},
                 Case{TensorType::kQ5_1, 0.035f, 0.05}, Case{TensorType::kIQ4_NL, 0.1f, 0.1},
                 Case{TensorType::kQ2_K, 0.4f, 0.35}, Case{TensorType::kQ3_K, 0.2f, 0.2},
                 Case{TensorType::kQ5_K, 0.08f, 0.05}}) {
    const int64_t n = 512;
    auto x = random_floats(n, 42);
    std::vector<uint8_t> q(row_bytes(c.type, n));
    quantize_row(c.type, x.data(), q.data(), n);
    std::vector<float> back(n);
    dequantize_row(c.type, q.data(), back.data(), n);
    float amax = 0;
    for (float v : x)
      amax = std::max(amax, std::fabs(v));
    double err2 = 0, x2 = 0;
    for (int64_t i = 0; i < n; ++i) {
      ASSERT_NEAR(back[i], x[i], c.max_rel_err * amax + 1e-7f)
          << gguf::type_traits(c.type).name << " at " << i;
      err2 += (back[i] - x[i]) * (back[i] - x[i]);
      x2 += x[i] * x[i];
    }
    // And not just within bounds: the values carry the signal (the bounds are loose for a
    // search-free encoder, tight enough to catch a misplaced bit).
    EXPECT_LT(std::sqrt(err2 / x2), c.max_rms) << gguf::type_traits(c.type).name;
    std::vector<float> zeros(256, 0.0f), zback(256, 1.0f);
    std::vector<uint8_t> zq(row_bytes(c.type, 256));
    quantize_row(c.type, zeros.data(), zq.data(), 256);
    dequantize_row(c.type, zq.data(), zback.data(), 256);
    for (float v : zback)
      ASSERT_EQ(v, 0.0f) << gguf::type_traits(c.type).name;
  }
}

} // namespace
} // namespace gantry::engine::kernels
