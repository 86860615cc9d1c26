// The BERT-family encoders (bert, nomic-bert) against llama.cpp's llama-embedding: tiny
// random-weight models written by tests/data/bert/make_bert.py with the peer's gguf-py, and the
// L2-normalised vectors llama-embedding computes on them for five inputs and two poolings each,
// plus nomic-bert with F16 matrices, whose activations llama.cpp rounds to fp16 as well
// (bert-reference.json, recorded by make-reference.sh there; see tests/data/REFERENCE.md).
// Every piece of the encoder (position and token-type embeddings, post-LayerNorms with biases,
// bidirectional attention, GELU or SwiGLU, RoPE for nomic-bert, the fp16 roundings of flash
// attention) moves the vectors by far more than the 1e-4 allowed when computed otherwise.
#include "engine/model/bert.h"
#include "engine/model/model.h"
#include "engine/model/pooling.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <boost/json.hpp>

namespace gantry::engine {
namespace {

const std::string kDir = std::string(GANTRY_TEST_DATA_DIR) + "/bert";
// Per component of a unit vector. Both engines compute in float with the same fp16 roundings
// (K, V, Q and softmax·V in attention, the GELU table) but sum in different orders; the largest
// difference seen is 3.5e-5.
constexpr double kTolerance = 1e-4;

boost::json::array cases() {
  std::ifstream in(kDir + "/bert-reference.json");
  EXPECT_TRUE(in.good()) << "missing " << kDir << "/bert-reference.json";
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return boost::json::parse(text).as_object().at("cases").as_array();
}

Pooling pooling_named(std::string_view s) {
  if (s == "cls")
    return Pooling::kCls;
  if (s == "last")
    return Pooling::kLast;
  return Pooling::kMean;
}

std::unique_ptr<Model> load(const std::string &file) {
  auto m = Model::load(kDir + "/" + file);
  EXPECT_TRUE(m.ok()) << file << ": " << m.error().message;
  return m.ok() ? std::move(m).value() : nullptr;
}

TEST(BertConfigTest, ReadsTheEncoderArchitectures) {
  auto bert = load("bert.gguf");
  ASSERT_TRUE(bert);
  const ModelConfig &c = bert->config();
  EXPECT_EQ(c.arch, "bert");
  EXPECT_TRUE(c.encoder);
  EXPECT_EQ(c.pooling, Pooling::kCls); // bert.pooling_type = 2
  EXPECT_EQ(c.n_embd, 32);
  EXPECT_EQ(c.n_vocab, 30522);
  EXPECT_EQ(c.n_ctx_train, 512);
  EXPECT_FLOAT_EQ(c.rms_eps, 1e-12f); // bert.attention.layer_norm_epsilon
  EXPECT_EQ(bert->tokenizer().kind(), "bert");

  auto nomic = load("nomic-bert.gguf");
  ASSERT_TRUE(nomic);
  EXPECT_EQ(nomic->config().arch, "nomic-bert");
  EXPECT_TRUE(nomic->config().encoder);
  EXPECT_EQ(nomic->config().pooling, Pooling::kMean);
  EXPECT_FLOAT_EQ(nomic->config().rope_freq_base, 1000.0f);
  EXPECT_TRUE(nomic->config().rope_neox);
}

TEST(BertTest, MatchesLlamaEmbeddingForEveryModelPoolingAndInput) {
  const auto all = cases();
  ASSERT_EQ(all.size(), 25u);
  std::map<std::string, std::unique_ptr<Model>> models;
  Workspace ws;
  kernels::ThreadPool pool(2);
  std::vector<float> hidden;
  double worst = 0;
  for (const auto &v : all) {
    const auto &c = v.as_object();
    const std::string file(c.at("model").as_string());
    const std::string input(c.at("input").as_string());
    const std::string pooling(c.at("pooling").as_string());
    SCOPED_TRACE(file + " " + pooling + " '" + input + "'");
    auto &m = models[file];
    if (!m)
      m = load(file);
    ASSERT_TRUE(m);

    // [CLS] ... [SEP] WordPiece ids, as llama.cpp tokenizes.
    const auto ids = m->tokenizer().encode(input, true, true);
    std::vector<int32_t> want_ids;
    for (const auto &x : c.at("ids").as_array())
      want_ids.push_back(static_cast<int32_t>(x.as_int64()));
    ASSERT_EQ(ids, want_ids);

    m->encode(ids, ws, pool, hidden);
    ASSERT_EQ(hidden.size(), ids.size() * 32);
    if (file == "nomic-bert-f16.gguf") {
      EXPECT_EQ(m->file().tensor("blk.0.attn_qkv.weight")->type, gguf::TensorType::kF16);
    }
    const auto got =
        pool_embedding(hidden, static_cast<int>(ids.size()), 32, pooling_named(pooling));
    const auto &want = c.at("embedding").as_array();
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < got.size(); ++i) {
      const double w = want[i].to_number<double>();
      EXPECT_NEAR(got[i], w, kTolerance) << "component " << i;
      worst = std::max(worst, std::abs(got[i] - w));
    }
  }
  std::printf("largest |gantry - llama.cpp| component: %.3g\n", worst);
}

// The same input twice in one workspace, then after a longer one: a pass leaves nothing behind
// that changes the next (no cache between inputs), and the result does not depend on the pool.
TEST(BertTest, PassesAreIndependentAndThreadCountDoesNotMatter) {
  auto m = load("nomic-bert.gguf");
  ASSERT_TRUE(m);
  const auto a = m->tokenizer().encode("Hello world", true, true);
  const auto b = m->tokenizer().encode(std::string(400, 'x') + " yes", true, true);
  Workspace ws;
  kernels::ThreadPool one(1), two(2);
  std::vector<float> h1, h2, h3;
  m->encode(a, ws, one, h1);
  m->encode(b, ws, two, h2);
  m->encode(a, ws, two, h3);
  EXPECT_EQ(h1, h3);
}

TEST(PoolingTest, PoolsAndNormalises) {
  // Two tokens of width 2.
  const std::vector<float> h = {3, 4, 0, 2};
  EXPECT_EQ(pool_embedding(h, 2, 2, Pooling::kCls), (std::vector<float>{0.6f, 0.8f}));
  EXPECT_EQ(pool_embedding(h, 2, 2, Pooling::kLast), (std::vector<float>{0.0f, 1.0f}));
  const auto mean = pool_embedding(h, 2, 2, Pooling::kMean); // (1.5, 3) / |(1.5, 3)|
  EXPECT_NEAR(mean[0], 1.5 / std::sqrt(11.25), 1e-7);
  EXPECT_NEAR(mean[1], 3.0 / std::sqrt(11.25), 1e-7);
  std::vector<float> zero = {0, 0};
  l2_normalize(zero);
  EXPECT_EQ(zero, (std::vector<float>{0, 0}));
}

} // namespace
} // namespace gantry::engine
