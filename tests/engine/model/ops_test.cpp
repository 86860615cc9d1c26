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
  float scores[2], out[2];
  attention_head(
      q, 2, 2, 1.0f, [&](int j) { return k[j]; }, [&](int j) { return v[j]; }, scores, out);
  const double w0 = std::exp(1.0) / (std::exp(1.0) + std::exp(3.0));
  EXPECT_NEAR(out[0], 10 * w0, 1e-5);
  EXPECT_NEAR(out[1], 10 * (1 - w0), 1e-5);
}

TEST(AttentionTest, OnePositionReturnsItsValue) {
  const float q[3] = {5, -1, 2};
  const float k[3] = {0.1f, 0.2f, 0.3f};
  const float v[3] = {7, 8, 9};
  float scores[1], out[3];
  attention_head(
      q, 1, 3, 0.5f, [&](int) { return k; }, [&](int) { return v; }, scores, out);
  EXPECT_FLOAT_EQ(out[0], 7);
  EXPECT_FLOAT_EQ(out[2], 9);
}

TEST(AttentionTest, IsStableForLargeScores) {
  const float q[1] = {1000};
  const float k[2][1] = {{1}, {1.001f}};
  const float v[2][1] = {{0}, {1}};
  float scores[2], out[1];
  attention_head(
      q, 2, 1, 1.0f, [&](int j) { return k[j]; }, [&](int j) { return v[j]; }, scores, out);
  EXPECT_TRUE(std::isfinite(out[0]));
  EXPECT_GT(out[0], 0.5f);
}

} // namespace
} // namespace gantry::engine
