#include "engine/sampling/sampler.h"

#include <gtest/gtest.h>

#include <map>

namespace gantry::engine {
namespace {

std::vector<float> logits() { return {1.0f, 3.0f, 2.5f, -1.0f, 0.0f, 2.9f}; }

TEST(SamplerTest, GreedyPicksTheArgmax) {
  SamplingParams p;
  p.temperature = 0;
  Sampler s(p, 1);
  auto l = logits();
  EXPECT_EQ(s.sample(l, {}, 0), 1);
}

TEST(SamplerTest, SameSeedSameTokens) {
  SamplingParams p;
  p.temperature = 1.0f;
  p.seed = 7;
  Sampler a(p, 7), b(p, 7), c(p, 8);
  std::vector<int32_t> ra, rb, rc;
  for (int i = 0; i < 50; ++i) {
    auto l1 = logits(), l2 = logits(), l3 = logits();
    ra.push_back(a.sample(l1, {}, 0));
    rb.push_back(b.sample(l2, {}, 0));
    rc.push_back(c.sample(l3, {}, 0));
  }
  EXPECT_EQ(ra, rb);
  EXPECT_NE(ra, rc) << "a different seed should give a different sequence";
}

TEST(SamplerTest, TopKRestrictsTheCandidates) {
  SamplingParams p;
  p.temperature = 1.5f;
  p.top_k = 2;
  Sampler s(p, 3);
  for (int i = 0; i < 200; ++i) {
    auto l = logits();
    int32_t t = s.sample(l, {}, 0);
    EXPECT_TRUE(t == 1 || t == 5) << t;
  }
}

TEST(SamplerTest, TopPAndMinPCutTheTail) {
  SamplingParams p;
  p.temperature = 1.0f;
  p.top_p = 0.5f; // token 1 alone holds ~35%, with token 5 ~67%
  Sampler s(p, 3);
  std::map<int32_t, int> seen;
  for (int i = 0; i < 300; ++i) {
    auto l = logits();
    ++seen[s.sample(l, {}, 0)];
  }
  for (auto [t, n] : seen)
    EXPECT_TRUE(t == 1 || t == 5) << "token " << t << " x" << n;

  SamplingParams m;
  m.temperature = 1.0f;
  m.min_p = 0.5f; // keeps tokens with p >= 0.5 * p(max): 1 (1.0), 5 (0.90), 2 (0.61)
  Sampler s2(m, 4);
  for (int i = 0; i < 300; ++i) {
    auto l = logits();
    int32_t t = s2.sample(l, {}, 0);
    EXPECT_TRUE(t == 1 || t == 5 || t == 2) << t;
  }
}

TEST(SamplerTest, PenaltiesDemoteSeenTokens) {
  SamplingParams p;
  p.temperature = 0;
  p.presence_penalty = 1.0f;
  Sampler s(p, 1);
  auto l = logits();
  std::vector<int32_t> ctx = {1}; // prompt 0 tokens; token 1 was generated
  EXPECT_EQ(s.sample(l, ctx, 0), 5) << "token 1 loses 1.0 and falls below token 5";

  SamplingParams r;
  r.temperature = 0;
  r.repetition_penalty = 2.0f;
  Sampler s2(r, 1);
  auto l2 = logits();
  std::vector<int32_t> prompt = {1, 5};
  EXPECT_EQ(s2.sample(l2, prompt, 2), 2) << "repetition penalty also covers the prompt";
}

TEST(SamplerTest, ValidationNamesTheParameter) {
  SamplingParams p;
  p.temperature = 5;
  auto st = p.validate();
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().param, "temperature");
  p.temperature = 1;
  p.top_p = 0;
  EXPECT_EQ(p.validate().error().param, "top_p");
}

TEST(SamplerTest, LogprobIsNormalised) {
  SamplingParams p;
  p.temperature = 0;
  Sampler s(p, 1);
  auto l = logits();
  int32_t t = s.sample(l, {}, 0);
  double total = 0;
  for (int i = 0; i < 6; ++i)
    total += std::exp(s.last_logprob(i));
  EXPECT_NEAR(total, 1.0, 1e-5);
  EXPECT_LT(s.last_logprob(t), 0.0f);
}

TEST(SamplerTest, LogitBiasIsAddedAfterThePenalties) {
  SamplingParams p;
  p.temperature = 0;
  Sampler s(p, 1, {{3, 4.5f}, {99, 100.0f}}); // id 99 is outside this vocabulary: ignored
  auto l = logits();
  EXPECT_EQ(s.sample(l, {}, 0), 3);
  EXPECT_FLOAT_EQ(l[3], 3.5f);
}

TEST(SamplerTest, PickNeverDrawsAMaskedToken) {
  SamplingParams p;
  p.temperature = 2.0f;
  Sampler s(p, 5);
  for (int i = 0; i < 500; ++i) {
    auto l = logits();
    for (int t : {1, 2, 5})
      l[t] = -INFINITY;
    const int32_t t = s.pick(l);
    EXPECT_TRUE(t == 0 || t == 3 || t == 4) << t;
  }
}

} // namespace
} // namespace gantry::engine
