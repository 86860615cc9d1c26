#include "engine/model/ops.h"

#include <gtest/gtest.h>

#include <cmath>

namespace gantry::engine {
namespace {

TEST(RopeTest, PositionZeroIsIdentity) {
  std::vector<float> x = {1, 2, 3, 4, 5, 6, 7, 8};
  auto y = x;
  RopeParams p;
  p.n_rot = 4;
  rope(y.data(), 2, 4, 0, p);
  EXPECT_EQ(x, y);
}

TEST(RopeTest, NormalOrderingRotatesAdjacentPairs) {
  // head_dim 4, n_rot 4, base 100: pair 0 angle = pos, pair 1 angle = pos * 100^(-1/2) = pos/10.
  std::vector<float> x = {1, 0, 0, 1};
  RopeParams p;
  p.n_rot = 4;
  p.freq_base = 100.0f;
  rope(x.data(), 1, 4, 2, p);
  EXPECT_NEAR(x[0], std::cos(2.0f), 1e-6);
  EXPECT_NEAR(x[1], std::sin(2.0f), 1e-6);
  EXPECT_NEAR(x[2], -std::sin(0.2f), 1e-6);
  EXPECT_NEAR(x[3], std::cos(0.2f), 1e-6);
}

TEST(RopeTest, NeoxOrderingRotatesHalves) {
  std::vector<float> x = {1, 0, 0, 1}; // pairs (x0, x2) and (x1, x3)
  RopeParams p;
  p.n_rot = 4;
  p.freq_base = 100.0f;
  p.neox = true;
  rope(x.data(), 1, 4, 2, p);
  EXPECT_NEAR(x[0], std::cos(2.0f), 1e-6);
  EXPECT_NEAR(x[2], std::sin(2.0f), 1e-6);
  EXPECT_NEAR(x[1], -std::sin(0.2f), 1e-6);
  EXPECT_NEAR(x[3], std::cos(0.2f), 1e-6);
}

TEST(RopeTest, PartialRotationLeavesTheRestAndPreservesNorm) {
  std::vector<float> x = {1, 2, 3, 4, 5, 6};
  RopeParams p;
  p.n_rot = 4;
  rope(x.data(), 1, 6, 7, p);
  EXPECT_EQ(x[4], 5.0f);
  EXPECT_EQ(x[5], 6.0f);
  EXPECT_NEAR(x[0] * x[0] + x[1] * x[1], 5.0f, 1e-5);
  EXPECT_NEAR(x[2] * x[2] + x[3] * x[3], 25.0f, 1e-4);
}

TEST(AttentionTest, MatchesAHandComputedSoftmax) {
  // Two positions, head_dim 2. q·k0 = 1, q·k1 = 3; scale 1.
  const float q[2] = {1, 1};
  const float k[2][2] = {{1, 0}, {1, 2}};
  const float v[2][2] = {{10, 0}, {0, 10}};
  std::vector<float> scores(attention_scratch(1, 2, 2));
  float out[2];
  attention_head(
      q, 2, 2, 1.0f, [&](int j) { return k[j]; }, [&](int j) { return v[j]; }, scores.data(), out);
  const double w0 = std::exp(1.0) / (std::exp(1.0) + std::exp(3.0));
  EXPECT_NEAR(out[0], 10 * w0, 1e-5);
  EXPECT_NEAR(out[1], 10 * (1 - w0), 1e-5);
}

TEST(AttentionTest, OnePositionReturnsItsValue) {
  const float q[3] = {5, -1, 2};
  const float k[3] = {0.1f, 0.2f, 0.3f};
  const float v[3] = {7, 8, 9};
  std::vector<float> scores(attention_scratch(1, 1, 3));
  float out[3];
  attention_head(
      q, 1, 3, 0.5f, [&](int) { return k; }, [&](int) { return v; }, scores.data(), out);
  EXPECT_FLOAT_EQ(out[0], 7);
  EXPECT_FLOAT_EQ(out[2], 9);
}

TEST(AttentionTest, IsStableForLargeScores) {
  const float q[1] = {1000};
  const float k[2][1] = {{1}, {1.001f}};
  const float v[2][1] = {{0}, {1}};
  std::vector<float> scores(attention_scratch(1, 2, 1));
  float out[1];
  attention_head(
      q, 2, 1, 1.0f, [&](int j) { return k[j]; }, [&](int j) { return v[j]; }, scores.data(), out);
  EXPECT_TRUE(std::isfinite(out[0]));
  EXPECT_GT(out[0], 0.5f);
}

// A sliding window attends only positions [first, n_ctx): the same as attention over those rows
// alone, bit for bit, also when the window starts inside a run of `run` rows (a KV block).
TEST(AttentionTest, WindowEqualsAttentionOverTheWindowRows) {
  const int n_ctx = 23, hd = 4, run = 8, first = 13;
  std::vector<uint16_t> kv(static_cast<size_t>(n_ctx) * hd * 2);
  for (size_t i = 0; i < kv.size(); ++i)
    kv[i] = kernels::fp32_to_fp16(std::sin(0.7f * static_cast<float>(i)));
  const uint16_t *k = kv.data();
  const uint16_t *v = kv.data() + static_cast<size_t>(n_ctx) * hd;
  const float q[hd] = {0.5f, -1, 2, 0.25f};
  const float *qs[1] = {q};
  float windowed[hd], sliced[hd];
  float *out_w[1] = {windowed}, *out_s[1] = {sliced};
  std::vector<float> scores(attention_scratch(1, n_ctx, hd));
  attention_group(
      qs, out_w, 1, n_ctx, hd, 0.5f, [&](int j) { return k + j * hd; },
      [&](int j) { return v + j * hd; }, hd, run, scores.data(), first);
  // The window's rows as their own context (runs aligned to its start instead: the sums are
  // the same because each row is added in order either way).
  attention_group(
      qs, out_s, 1, n_ctx - first, hd, 0.5f, [&](int j) { return k + (j + first) * hd; },
      [&](int j) { return v + (j + first) * hd; }, hd, n_ctx, scores.data());
  for (int i = 0; i < hd; ++i)
    EXPECT_EQ(windowed[i], sliced[i]) << i;
}

// Soft-capping replaces each scaled score s by cap * tanh(s): two scores far apart end up at
// most 2 * cap apart, so the weights of a softmax over them are known.
TEST(AttentionTest, SoftcapBoundsTheScores) {
  const float q[1] = {1};
  const float k[2][1] = {{100}, {-100}};
  const float v[2][1] = {{1}, {0}};
  const float *qs[1] = {q};
  float out[1];
  float *outs[1] = {out};
  std::vector<float> scores(attention_scratch(1, 2, 1));
  const float cap = 2;
  attention_group(
      qs, outs, 1, 2, 1, 1.0f / cap, [&](int j) { return k[j]; }, [&](int j) { return v[j]; }, 0, 1,
      scores.data(), 0, cap);
  // Scores cap * tanh(+-50) = +-2: weight of V = 1 is e^2 / (e^2 + e^-2).
  EXPECT_NEAR(out[0], std::exp(2.0) / (std::exp(2.0) + std::exp(-2.0)), 1e-6);
}

// Against an fp16 cache the softmax-weighted sum of V is accumulated in fp16, as llama.cpp's CPU
// flash attention does: with equal scores 1 + 2^-11 rounds back to 1 (ties to even), so the
// mean of V = 1 and V = 2^-11 comes out as exactly 1/2 rather than (1 + 2^-11) / 2.
TEST(AttentionTest, Fp16CacheAccumulatesInFp16LikeLlamaCpp) {
  const float q[1] = {0};
  const uint16_t k[2][1] = {{kernels::fp32_to_fp16(1)}, {kernels::fp32_to_fp16(2)}};
  const uint16_t v[2][1] = {{kernels::fp32_to_fp16(1)},
                            {kernels::fp32_to_fp16(std::ldexp(1.0f, -11))}};
  std::vector<float> scores(attention_scratch(1, 2, 1));
  float out[1];
  attention_head(
      q, 2, 1, 1.0f, [&](int j) { return k[j]; }, [&](int j) { return v[j]; }, scores.data(), out);
  EXPECT_EQ(out[0], 0.5f);
}

// Where the fp16 accumulator overflows (llama.cpp would return inf), the head is recomputed
// with an fp32 accumulator.
TEST(AttentionTest, Fp16AccumulatorOverflowFallsBackToFp32) {
  const float q[2] = {0, 0};
  const uint16_t k[2] = {0, 0};
  const uint16_t v[2] = {kernels::fp32_to_fp16(60000), kernels::fp32_to_fp16(-60000)};
  std::vector<float> scores(attention_scratch(1, 3, 2));
  float out[2];
  attention_head(
      q, 3, 2, 1.0f, [&](int) { return k; }, [&](int) { return v; }, scores.data(), out);
  EXPECT_EQ(out[0], 60000.0f);
  EXPECT_EQ(out[1], -60000.0f);
}

// The AVX2 and AVX-512 kernels give the scalar one's bits (rescaling included: the scores rise and
// fall), at widths the 16-lane kernel takes in pieces of 64 lanes (up to 4 heads), 32 and 16
// (the heads in blocks of 8), and one it leaves to AVX2 (19).
TEST(AttentionTest, AttendRowsF16IsTheSameOnEveryInstructionSet) {
  for (auto [n, heads] : {std::pair{19, 5}, std::pair{64, 8}, std::pair{128, 12}, std::pair{32, 3},
                          std::pair{64, 4}, std::pair{128, 2}, std::pair{112, 3}, std::pair{48, 9},
                          std::pair{16, 17}, std::pair{256, 1}}) {
    const int rows = 37;
    std::vector<uint16_t> v(static_cast<size_t>(rows) * n);
    std::vector<float> s(static_cast<size_t>(rows) * heads);
    uint32_t x = 12345;
    auto rnd = [&] {
      x = x * 1664525u + 1013904223u;
      return static_cast<float>(x >> 8) / 16777216.0f * 2.0f - 1.0f;
    };
    for (auto &e : v)
      e = kernels::fp32_to_fp16(rnd() * 8);
    for (auto &e : s)
      e = rnd() * 6;
    auto run = [&](kernels::Isa isa) {
      const kernels::Isa before = kernels::active_isa();
      kernels::set_active_isa(isa);
      std::vector<uint16_t> acc(static_cast<size_t>(heads) * n, 0);
      std::vector<float> m(heads, -INFINITY), sum(heads, 0);
      kernels::attend_rows_f16(s.data(), rows, heads, v.data(), n, rows, n, m.data(), sum.data(),
                               acc.data());
      kernels::set_active_isa(before);
      std::vector<float> r(acc.begin(), acc.end());
      r.insert(r.end(), m.begin(), m.end());
      r.insert(r.end(), sum.begin(), sum.end());
      return r;
    };
    const auto want = run(kernels::Isa::kScalar);
    for (kernels::Isa isa : {kernels::Isa::kAvx2, kernels::Isa::kAvx512Vnni}) {
      if (isa > kernels::detected_isa())
        continue;
      EXPECT_EQ(run(isa), want) << "n=" << n << " heads=" << heads << " isa "
                                << static_cast<int>(isa);
    }
  }
}

} // namespace
} // namespace gantry::engine
