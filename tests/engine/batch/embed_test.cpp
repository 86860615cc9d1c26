// Engine::embed: pooled, normalised final hidden states computed between steps on temporary KV
// blocks, without disturbing the sequences that are generating.
#include "engine/batch/engine.h"

#include "engine/model/pooling.h"

#include <gtest/gtest.h>

#include <cmath>
#include <map>

namespace gantry::engine {
namespace {

class EmbedTest : public ::testing::Test {
protected:
  static void SetUpTestSuite() {
    auto m = Model::load(std::string(GANTRY_MODELS_DIR) + "/stories260K.gguf");
    ASSERT_TRUE(m.ok()) << m.error().message;
    model_ = std::move(m).value().release();
  }
  static void TearDownTestSuite() {
    delete model_;
    model_ = nullptr;
  }
  static EngineConfig config(int max_batch_tokens = 512) {
    EngineConfig c;
    c.n_threads = 1;
    c.max_batch_tokens = max_batch_tokens;
    c.max_seqs = 1; // or the engine raises the budget to max_seqs
    c.kv_bytes = size_t{16} << 20;
    return c;
  }
  static std::vector<int32_t> tokens(const std::string &text) {
    return model_->tokenizer().encode(text, true, true);
  }
  static double norm(const std::vector<float> &v) {
    double s = 0;
    for (float x : v)
      s += static_cast<double>(x) * x;
    return std::sqrt(s);
  }
  static GenerationRequest greedy(std::vector<int32_t> prompt, int max_tokens) {
    GenerationRequest r;
    r.prompt = std::move(prompt);
    r.max_tokens = max_tokens;
    r.sampling.temperature = 0;
    r.ignore_eos = true;
    return r;
  }
  static std::vector<int32_t> run_to_end(Engine &eng, SeqId id) {
    std::vector<int32_t> out;
    while (!eng.idle()) {
      for (const auto &ev : eng.step()) {
        if (ev.seq == id && ev.token >= 0)
          out.push_back(ev.token);
      }
    }
    return out;
  }

  static Model *model_;
};
Model *EmbedTest::model_ = nullptr;

// The engine's result equals a direct computation: one forward_hidden over the whole input on a
// fresh KV cache, averaged and normalised in double precision.
TEST_F(EmbedTest, IsTheNormalisedMeanOfTheFinalHiddenStates) {
  const auto ids = tokens("Once upon a time, there was a little dog.");
  Engine eng(*model_, config());
  auto v = eng.embed(ids, "input");
  ASSERT_TRUE(v.ok()) << v.error().message;
  const size_t d = model_->config().n_embd;
  ASSERT_EQ(v->size(), d);
  EXPECT_NEAR(norm(*v), 1.0, 1e-5);

  const auto &c = model_->config();
  KvCache kv(c.n_layer, c.kv_dim(), 8);
  std::vector<int32_t> blocks;
  for (int i = 0; i < KvCache::blocks_for_tokens(static_cast<int>(ids.size())); ++i) {
    blocks.push_back(*kv.allocate());
  }
  std::vector<BatchToken> batch;
  for (size_t p = 0; p < ids.size(); ++p) {
    batch.push_back({ids[p], static_cast<int32_t>(p), &blocks, false});
  }
  Workspace ws;
  kernels::ThreadPool pool(1);
  std::vector<float> hidden;
  model_->forward_hidden(batch, kv, ws, pool, hidden);
  ASSERT_EQ(hidden.size(), ids.size() * d);
  std::vector<double> mean(d, 0);
  for (size_t p = 0; p < ids.size(); ++p) {
    for (size_t i = 0; i < d; ++i)
      mean[i] += hidden[p * d + i] / static_cast<double>(ids.size());
  }
  double n = 0;
  for (double x : mean)
    n += x * x;
  n = std::sqrt(n);
  for (size_t i = 0; i < d; ++i)
    EXPECT_NEAR((*v)[i], mean[i] / n, 1e-5) << "dimension " << i;
}

TEST_F(EmbedTest, DeterministicAndIndependentOfTheChunkSize) {
  const auto ids = tokens("The sun was shining and the birds were singing in the tall trees.");
  Engine whole(*model_, config(512));
  Engine chunked(*model_, config(3));
  auto a = whole.embed(ids, "input");
  auto b = whole.embed(ids, "input");
  auto c = chunked.embed(ids, "input");
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  EXPECT_EQ(*a, *b);
  for (size_t i = 0; i < a->size(); ++i)
    EXPECT_NEAR((*a)[i], (*c)[i], 1e-5) << i;
  // Different texts give different directions.
  auto other = whole.embed(tokens("A big red truck drove down the road."), "input");
  ASSERT_TRUE(other.ok());
  double cos = 0;
  for (size_t i = 0; i < a->size(); ++i)
    cos += (*a)[i] * (*other)[i];
  EXPECT_LT(cos, 0.9999);
}

TEST_F(EmbedTest, BetweenStepsDoesNotDisturbGeneration) {
  const auto prompt = tokens("Once upon a time");
  Engine ref(*model_, config());
  const SeqId r = *ref.submit(greedy(prompt, 24));
  const auto expected = run_to_end(ref, r);

  Engine eng(*model_, config());
  const SeqId s = *eng.submit(greedy(prompt, 24));
  std::vector<int32_t> got;
  for (int i = 0; i < 5; ++i) {
    for (const auto &ev : eng.step()) {
      if (ev.token >= 0)
        got.push_back(ev.token);
    }
  }
  ASSERT_TRUE(eng.embed(tokens("Lily went to the park with her mom."), "input").ok());
  ASSERT_TRUE(eng.embed(prompt, "input").ok()); // same tokens as the running prompt
  auto rest = run_to_end(eng, s);
  got.insert(got.end(), rest.begin(), rest.end());
  EXPECT_EQ(got, expected);
  EXPECT_EQ(eng.stats().kv_blocks_used, 0) << "embedding blocks must be returned";
}

TEST_F(EmbedTest, RefusesBadInputs) {
  EngineConfig cfg = config();
  cfg.n_ctx = 32;
  Engine eng(*model_, cfg);
  auto empty = eng.embed({}, "input");
  ASSERT_FALSE(empty.ok());
  EXPECT_EQ(empty.error().code, ErrorCode::kInvalidArgument);
  const std::vector<int32_t> bad{1, model_->config().n_vocab};
  auto oov = eng.embed(bad, "input[1]");
  ASSERT_FALSE(oov.ok());
  EXPECT_EQ(oov.error().param, "input[1]");
  std::vector<int32_t> long_input(33, 100);
  auto too_long = eng.embed(long_input, "input");
  ASSERT_FALSE(too_long.ok());
  EXPECT_EQ(too_long.error().code, ErrorCode::kContextLengthExceeded);
  long_input.resize(32);
  EXPECT_TRUE(eng.embed(long_input, "input").ok()) << "exactly the context fits";
}

// With the KV budget held by a running sequence, an embedding is asked to wait rather than
// evicting what generation needs; once the sequence ends it fits.
TEST_F(EmbedTest, WaitsForKvBlocksHeldByRunningSequences) {
  EngineConfig cfg = config();
  cfg.kv_bytes = KvCache::bytes_per_block(model_->config().n_layer, model_->config().kv_dim()) * 4;
  Engine eng(*model_, cfg);
  const SeqId s = *eng.submit(greedy(tokens("Once upon a time"), 40)); // reserves 3 of 4 blocks
  (void)eng.step();
  std::vector<int32_t> input(40, 100); // needs 3 blocks
  auto busy = eng.embed(input, "input");
  ASSERT_FALSE(busy.ok());
  EXPECT_EQ(busy.error().code, ErrorCode::kResourceExhausted);
  (void)run_to_end(eng, s);
  EXPECT_TRUE(eng.embed(input, "input").ok());
}

// An encoder (bert.h) runs through the same entry point: the whole input in one pass with the
// pooling its file declares (CLS for the tiny bert), no KV blocks held, and its context is the
// position table's length even when the engine is configured longer. Generation is refused.
TEST(EncoderEmbedTest, PoolsAsTheFileSaysAndRefusesGeneration) {
  auto m = Model::load(std::string(GANTRY_TEST_DATA_DIR) + "/bert/bert.gguf");
  ASSERT_TRUE(m.ok()) << m.error().message;
  const Model &model = **m;
  EngineConfig c;
  c.n_threads = 2;
  c.max_batch_tokens = 4; // an encoder ignores chunking: attention needs the whole input
  c.max_seqs = 1;
  c.n_ctx = 4096;
  c.kv_bytes = size_t{1} << 20;
  Engine eng(model, c);
  EXPECT_EQ(eng.n_ctx(), 512);

  const auto ids = model.tokenizer().encode("Hello world, this is a test.", true, true);
  auto got = eng.embed(ids, "input");
  ASSERT_TRUE(got.ok()) << got.error().message;
  Workspace ws;
  kernels::ThreadPool pool(1);
  std::vector<float> hidden;
  model.encode(ids, ws, pool, hidden);
  const auto want = pool_embedding(hidden, static_cast<int>(ids.size()), 32, Pooling::kCls);
  ASSERT_EQ(got->size(), want.size());
  for (size_t i = 0; i < want.size(); ++i)
    EXPECT_FLOAT_EQ((*got)[i], want[i]) << i;
  EXPECT_EQ(eng.stats().kv_blocks_used, 0);
  EXPECT_EQ(eng.stats().prompt_tokens, ids.size());

  std::vector<int32_t> too_long(513, 1000);
  auto e = eng.embed(too_long, "input[1]");
  ASSERT_FALSE(e.ok());
  EXPECT_EQ(e.error().code, ErrorCode::kContextLengthExceeded);
  EXPECT_EQ(e.error().param, "input[1]");
  EXPECT_TRUE(eng.embed(std::vector<int32_t>(512, 1000), "input").ok());

  GenerationRequest r;
  r.prompt = ids;
  r.max_tokens = 1;
  auto s = eng.submit(std::move(r));
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(s.error().param, "model");
  EXPECT_TRUE(eng.idle());
}

} // namespace
} // namespace gantry::engine
