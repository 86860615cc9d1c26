#include "engine/sampling/logprobs.h"

#include <gtest/gtest.h>

#include <cmath>

namespace gantry::engine {
namespace {

TEST(LogprobsTest, LogSoftmaxOfTheChosenTokenAndTheTopOnesMostLikelyFirst) {
  const std::vector<float> l = {1.0f, 3.0f, 2.0f, 3.0f, -1.0f};
  LogprobScratch scratch;
  std::vector<std::pair<int32_t, float>> top;
  const float lp = token_logprobs(l, 2, 3, scratch, top);
  double z = 0;
  for (float x : l)
    z += std::exp(static_cast<double>(x));
  EXPECT_NEAR(lp, 2.0 - std::log(z), 1e-6);
  ASSERT_EQ(top.size(), 3u);
  EXPECT_EQ(top[0].first, 1) << "equal logits: the lower id first";
  EXPECT_EQ(top[1].first, 3);
  EXPECT_EQ(top[2].first, 2);
  EXPECT_FLOAT_EQ(top[0].second, top[1].second);
  EXPECT_NEAR(top[2].second, lp, 1e-7);
}

TEST(LogprobsTest, ZeroAlternativesAndMoreThanTheVocabulary) {
  const std::vector<float> l = {0.0f, 0.0f};
  LogprobScratch scratch;
  std::vector<std::pair<int32_t, float>> top = {{7, 1.0f}};
  EXPECT_NEAR(token_logprobs(l, 1, 0, scratch, top), std::log(0.5), 1e-7);
  EXPECT_TRUE(top.empty());
  token_logprobs(l, 0, 20, scratch, top);
  EXPECT_EQ(top.size(), 2u);
}

} // namespace
} // namespace gantry::engine
