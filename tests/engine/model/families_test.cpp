// The decoder families beyond plain Llama/Qwen2 (gemma2, gemma3, phi3, and Llama 3.2's tied head)
// against llama.cpp token for token: tiny random-weight models written by
// tests/data/families/make_families.py with the peer's gguf-py, and the greedy token ids
// llama.cpp generates on them (families-greedy.json, recorded by make-greedy.sh there; see
// tests/data/REFERENCE.md). Each family's own pieces (soft-capping, sliding windows, post-norms,
// Q/K norms, GEGLU, fused QKV and gate|up, LongRoPE factors, per-layer rope bases) change the
// generated ids when computed otherwise, so an exact match checks them all.
#include "engine/model/model.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include <boost/json.hpp>

#include "engine/gguf/gguf_writer.h"
#include "engine/kernels/llama_order.h"

namespace gantry::engine {
namespace {

const std::string kDir = std::string(GANTRY_TEST_DATA_DIR) + "/families";
// llama.cpp ran with -c 256; the context size picks Phi-3's short LongRoPE factors.
constexpr int kCtx = 256;
// Relative to max(1, |logit|). These F32 models go through llama.cpp's own arithmetic
// (kernels/llama_order.h, the fp16 roundings of its attention, its GELU table), so the logits are
// its own to the precision the reference file prints them with: 3e-9, one step 2.4e-7 (before
// llama_order, up to 2e-4). Leaving out a Q/K norm or the final soft-cap moves them by 1e-2.
constexpr double kLogitTolerance = 1e-5;

boost::json::object recorded() {
  std::ifstream in(kDir + "/families-greedy.json");
  EXPECT_TRUE(in.good()) << "missing " << kDir << "/families-greedy.json";
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return boost::json::parse(text).as_object();
}

std::vector<int32_t> ids_of(const boost::json::value &v) {
  std::vector<int32_t> out;
  for (const auto &x : v.as_array())
    out.push_back(static_cast<int32_t>(x.as_int64()));
  return out;
}

// Greedy decoding as llama.cpp's greedy sampler (first index of the largest logit). The prompt
// goes through the model `chunk` tokens at a time (0: all at once). Returns the generated ids
// and appends every step's logits to `all_logits`.
std::vector<int32_t> greedy(const Model &m, const std::vector<int32_t> &prompt, int n_predict,
                            size_t chunk, std::vector<float> *all_logits) {
  const ModelConfig &c = m.config();
  KvCache kv(c.n_layer, c.kv_dim(), kCtx / KvCache::kBlockSize);
  std::vector<int32_t> blocks;
  for (int i = 0; i < kCtx / KvCache::kBlockSize; ++i)
    blocks.push_back(*kv.allocate());
  Workspace ws;
  kernels::ThreadPool pool(2);
  std::vector<float> logits;
  std::vector<BatchToken> batch;
  if (chunk == 0)
    chunk = prompt.size();
  for (size_t b = 0; b < prompt.size(); b += chunk) {
    batch.clear();
    const size_t e = std::min(prompt.size(), b + chunk);
    for (size_t i = b; i < e; ++i)
      batch.push_back({prompt[i], static_cast<int32_t>(i), &blocks, i + 1 == prompt.size()});
    m.forward(batch, kv, ws, pool, logits);
  }
  std::vector<int32_t> out;
  int32_t pos = static_cast<int32_t>(prompt.size());
  for (int step = 0; step < n_predict; ++step) {
    all_logits->insert(all_logits->end(), logits.begin(), logits.end());
    const auto tok =
        static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
    out.push_back(tok);
    if (m.tokenizer().is_eog(tok) || step + 1 == n_predict)
      break;
    batch.assign(1, BatchToken{tok, pos++, &blocks, true});
    m.forward(batch, kv, ws, pool, logits);
  }
  return out;
}

// The references were recorded with llama.cpp built natively on this project's AVX-512 machines,
// so the forward pass follows that build's arithmetic here (llama_order.h; the default, its AVX2
// build, is 1e-5..1.5e-4 from these logits).
class FamiliesTest : public ::testing::TestWithParam<const char *> {
protected:
  void SetUp() override { kernels::llama_order::set_build(kernels::llama_order::Build::kAvx512); }
  void TearDown() override { kernels::llama_order::set_build(saved_); }

private:
  kernels::llama_order::Build saved_ = kernels::llama_order::build();
};

TEST_P(FamiliesTest, GreedyIdsEqualLlamaCpp) {
  const std::string file = GetParam();
  const auto ref = recorded();
  ASSERT_TRUE(ref.at("models").as_object().contains(file)) << "run make-greedy.sh";
  auto m = Model::load(kDir + "/" + file, nullptr, kCtx);
  ASSERT_TRUE(m.ok()) << m.error().message;
  const int n_predict = static_cast<int>(ref.at("n_predict").as_int64());
  for (const auto &run : ref.at("models").at(file).as_array()) {
    const std::string prompt(run.at("prompt").as_string());
    SCOPED_TRACE(file + ": " + prompt);
    const auto prompt_ids = (*m)->tokenizer().encode(prompt, true, true);
    ASSERT_EQ(prompt_ids, ids_of(run.at("prompt_ids")));
    std::vector<float> logits;
    const auto got = greedy(**m, prompt_ids, n_predict, 0, &logits);
    const auto want = ids_of(run.at("ids"));
    EXPECT_EQ(got, want);
    // The values too, not only their order: a monotonic step such as the final soft-cap, or one
    // that moves every logit alike, leaves the argmax alone.
    const auto &top = run.at("top_logits").as_array();
    ASSERT_EQ(top.size(), want.size());
    const size_t n_vocab = static_cast<size_t>((*m)->config().n_vocab);
    double worst = 0;
    for (size_t i = 0; i < got.size() && i < want.size() && got[i] == want[i]; ++i) {
      const double theirs = top[i].to_number<double>();
      worst = std::max(worst, std::abs(logits[i * n_vocab + got[i]] - theirs) /
                                  std::max(1.0, std::abs(theirs)));
    }
    EXPECT_LT(worst, kLogitTolerance) << "largest relative |logit - llama.cpp's| over the steps";
    if (std::getenv("GANTRY_PRINT_LOGIT_ERROR"))
      std::printf("%s '%s': largest logit difference %.3g\n", file.c_str(), prompt.c_str(), worst);
  }
}

// Batch invariance on the new families: the prompt in one batch or in chunks of 7 (and thereby
// across KV blocks, with sliding windows starting mid-block) gives the same bits. One token at a
// time is what llama.cpp computes for a decode step, in another summation order for these F32
// weights (kernels/llama_order.h): the same tokens, logits within float rounding.
TEST_P(FamiliesTest, LogitsDoNotDependOnBatching) {
  const std::string file = GetParam();
  auto m = Model::load(kDir + "/" + file, nullptr, kCtx);
  ASSERT_TRUE(m.ok()) << m.error().message;
  const auto prompt = (*m)->tokenizer().encode(
      "In a hole in the ground there lived a hobbit. Not a nasty, dirty, wet hole", true, true);
  std::vector<float> whole, single, chunks;
  const auto a = greedy(**m, prompt, 20, 0, &whole);
  const auto b = greedy(**m, prompt, 20, 1, &single);
  const auto c = greedy(**m, prompt, 20, 7, &chunks);
  EXPECT_EQ(a, b);
  EXPECT_EQ(a, c);
  ASSERT_EQ(whole.size(), single.size());
  ASSERT_EQ(whole.size(), chunks.size());
  EXPECT_EQ(std::memcmp(whole.data(), chunks.data(), whole.size() * sizeof(float)), 0);
  double worst = 0;
  for (size_t i = 0; i < whole.size(); ++i) {
    worst = std::max(worst, std::abs(static_cast<double>(whole[i]) - single[i]) /
                                std::max(1.0, std::abs(static_cast<double>(whole[i]))));
  }
  // Measured: 0 (llama32-tied), 3.8e-4 (gemma2), 1.2e-3 (gemma3), 1.0e-3 (phi3): random weights
  // with soft-caps amplify a float rounding more than trained ones.
  EXPECT_LT(worst, 5e-3) << "prompt one token at a time against one batch";
}

INSTANTIATE_TEST_SUITE_P(Families, FamiliesTest,
                         ::testing::Values("llama32-tied.gguf", "gemma2.gguf", "gemma3.gguf",
                                           "phi3.gguf"),
                         [](const auto &info) {
                           std::string n = info.param;
                           n.resize(n.size() - 5);
                           std::replace(n.begin(), n.end(), '-', '_');
                           return n;
                         });

TEST(FamiliesConfigTest, ReadsEachFamilysFeatures) {
  auto g2 = Model::load(kDir + "/gemma2.gguf");
  ASSERT_TRUE(g2.ok()) << g2.error().message;
  const ModelConfig &c2 = (*g2)->config();
  EXPECT_EQ(c2.arch, "gemma2");
  EXPECT_TRUE(c2.tied_output);
  EXPECT_TRUE(c2.post_norms && c2.gelu_ffn && c2.rope_neox && !c2.qk_norm);
  EXPECT_FLOAT_EQ(c2.embd_scale, 4.0f);
  EXPECT_FLOAT_EQ(c2.attn_softcap, 50.0f);
  EXPECT_FLOAT_EQ(c2.final_softcap, 30.0f);
  EXPECT_EQ(c2.n_swa, 6);
  EXPECT_EQ(c2.swa_layers, (std::vector<bool>{true, false, true}));

  auto g3 = Model::load(kDir + "/gemma3.gguf");
  ASSERT_TRUE(g3.ok()) << g3.error().message;
  const ModelConfig &c3 = (*g3)->config();
  EXPECT_TRUE(c3.qk_norm);
  EXPECT_EQ(c3.attn_softcap, 0.0f);
  EXPECT_EQ(c3.final_softcap, 0.0f);
  EXPECT_EQ(c3.swa_layers, (std::vector<bool>{true, false, true}));
  EXPECT_FLOAT_EQ(c3.rope_freq_base, 1e6f);
  EXPECT_FLOAT_EQ(c3.rope_freq_scale, 0.125f);
  EXPECT_FLOAT_EQ(c3.rope_freq_base_swa, 1e4f);
  EXPECT_FLOAT_EQ(c3.rope_freq_scale_swa, 1.0f);

  auto p3 = Model::load(kDir + "/phi3.gguf");
  ASSERT_TRUE(p3.ok()) << p3.error().message;
  const ModelConfig &cp = (*p3)->config();
  EXPECT_TRUE(cp.fused_gate_up && cp.rope_neox && !cp.tied_output);
  EXPECT_EQ(cp.rope_dim, 6);
  EXPECT_EQ(cp.n_ctx_orig, 512);
  // llama.cpp disables Phi-3's sliding window, and never reads Llama's.
  EXPECT_EQ(cp.n_swa, 0);
  auto l32 = Model::load(kDir + "/llama32-tied.gguf");
  ASSERT_TRUE(l32.ok()) << l32.error().message;
  EXPECT_TRUE((*l32)->config().tied_output);
  EXPECT_EQ((*l32)->config().n_swa, 0);
}

// Mixtral is llama with experts: refused by name, not as a missing tensor.
TEST(FamiliesConfigTest, RefusesMixtureOfExpertsByName) {
  gguf::GgufWriter w;
  w.set_string("general.architecture", "llama");
  w.set_u32("llama.embedding_length", 64);
  w.set_u32("llama.block_count", 2);
  w.set_u32("llama.feed_forward_length", 128);
  w.set_u32("llama.attention.head_count", 4);
  w.set_u32("llama.expert_count", 8);
  w.set_u32("llama.expert_used_count", 2);
  const std::string path = ::testing::TempDir() + "/moe.gguf";
  ASSERT_TRUE(w.write(path).ok());
  auto m = Model::load(path);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.error().code, ErrorCode::kUnsupported);
  EXPECT_NE(m.error().message.find("expert_count"), std::string::npos) << m.error().message;
}

// Past rope.scaling.original_context_length Phi-3 switches to the long LongRoPE factors, as
// llama.cpp does for a context that long: the logits change.
TEST(FamiliesConfigTest, PhiLongContextUsesLongRopeFactors) {
  auto short_ctx = Model::load(kDir + "/phi3.gguf", nullptr, 512);
  auto long_ctx = Model::load(kDir + "/phi3.gguf", nullptr, 513);
  ASSERT_TRUE(short_ctx.ok() && long_ctx.ok());
  const auto prompt = (*short_ctx)->tokenizer().encode("The quick brown fox", true, true);
  std::vector<float> a, b;
  greedy(**short_ctx, prompt, 1, 0, &a);
  greedy(**long_ctx, prompt, 1, 0, &b);
  ASSERT_EQ(a.size(), b.size());
  EXPECT_NE(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0);
}

} // namespace
} // namespace gantry::engine
