// Checks the optimised forward pass against a plain double-precision reference written from the
// architecture's definition, on tiny random models of each architecture and weight type.
#include "engine/model/model.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "engine/gguf/gguf_writer.h"

#include "engine/model/synth.h"
#include "reference_forward.h"

namespace gantry::engine {
namespace {

using gguf::TensorType;
using testing_ref::Ref;

struct Case {
  const char *arch;
  TensorType type;
  bool tied;
  double tol; // relative to the largest |logit|
};

class ForwardVsReference : public ::testing::TestWithParam<Case> {};

TEST_P(ForwardVsReference, LastTokenLogitsAgree) {
  const Case &pc = GetParam();
  // K-quants need rows that are multiples of 256 elements.
  const bool k_quant = gguf::type_traits(pc.type).block_elems == 256;
  SynthShape shape{"tiny", pc.arch, k_quant ? 256 : 64, 2, 4, 2, k_quant ? 512 : 96, 256, 10000.0f,
                   1e-5f,  pc.tied};
  SynthOptions o;
  o.type = pc.type;
  o.vocab_path = std::string(GANTRY_MODELS_DIR) + "/stories260K.gguf";
  o.out_path = ::testing::TempDir() + "/tiny_" + pc.arch + "_" +
               std::string(gguf::type_traits(pc.type).name) + (pc.tied ? "_tied" : "") + ".gguf";
  ASSERT_TRUE(synth_model_shape(shape, o).ok());
  auto m = Model::load(o.out_path);
  ASSERT_TRUE(m.ok()) << m.error().message;
  const ModelConfig &c = (*m)->config();
  EXPECT_EQ(c.rope_neox, std::string(pc.arch) == "qwen2");
  EXPECT_EQ(c.tied_output, pc.tied);

  const std::vector<int32_t> tokens = {1, 400, 37, 260, 511, 3, 99};
  KvCache kv(c.n_layer, c.kv_dim(), 4);
  std::vector<int32_t> blocks = {0};
  (void)kv.allocate();
  Workspace ws;
  kernels::ThreadPool pool(2);
  std::vector<BatchToken> batch;
  for (size_t i = 0; i < tokens.size(); ++i) {
    batch.push_back({tokens[i], static_cast<int32_t>(i), &blocks, i + 1 == tokens.size()});
  }
  std::vector<float> logits;
  (*m)->forward(batch, kv, ws, pool, logits);
  ASSERT_EQ(logits.size(), static_cast<size_t>(c.n_vocab));

  Ref ref{(*m)->file(), c};
  auto want = ref.run(tokens);
  double mx = 0, err = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    mx = std::max(mx, std::abs(want[i]));
    err = std::max(err, std::abs(want[i] - logits[i]));
  }
  EXPECT_LT(err, pc.tol * mx) << "max |logit| " << mx;
}

// F32 weights are held to fp16 precision too: attention rounds Q to fp16 and accumulates
// softmax·V in fp16 as llama.cpp's CPU flash attention does (ops_inl.h), ~4e-4 here.
INSTANTIATE_TEST_SUITE_P(Archs, ForwardVsReference,
                         ::testing::Values(Case{"llama", TensorType::kF32, false, 1e-3},
                                           Case{"llama", TensorType::kF16, true, 1e-3},
                                           Case{"llama", TensorType::kQ8_0, false, 2e-2},
                                           Case{"llama", TensorType::kQ4_0, false, 5e-2},
                                           Case{"llama", TensorType::kQ4_K, false, 5e-2},
                                           Case{"llama", TensorType::kQ6_K, false, 5e-2},
                                           Case{"llama", TensorType::kQ4_1, false, 5e-2},
                                           Case{"llama", TensorType::kQ5_0, false, 5e-2},
                                           Case{"llama", TensorType::kQ5_1, false, 5e-2},
                                           Case{"llama", TensorType::kIQ4_NL, false, 5e-2},
                                           Case{"llama", TensorType::kQ2_K, false, 5e-2},
                                           Case{"llama", TensorType::kQ3_K, false, 5e-2},
                                           Case{"llama", TensorType::kQ5_K, false, 5e-2},
                                           Case{"qwen2", TensorType::kF32, true, 1e-3},
                                           Case{"qwen2", TensorType::kQ8_0, true, 2e-2}),
                         [](const auto &info) {
                           return std::string(info.param.arch) + "_" +
                                  std::string(gguf::type_traits(info.param.type).name) +
                                  (info.param.tied ? "_tied" : "");
                         });

// Q8_0/Q4_0/Q5_0/Q4_1/IQ4_NL/Q4_K/Q5_K/Q6_K/F16 (and under AVX2 Q2_K/Q3_K) matrices are
// repacked at load for the decode kernels (kernels.h, "repacked weights") when the AVX-512 VNNI or
// the AVX2 kernels run: a prompt and then token-by-token decode give the very logits of the same
// model loaded with GANTRY_NO_REPACK=1.
TEST(ModelLoadTest, RepackedWeightsGiveTheLogitsOfTheMappedOnes) {
  if (kernels::active_isa() < kernels::Isa::kAvx2)
    GTEST_SKIP() << "no AVX2 kernels active: nothing is repacked";
  for (TensorType type :
       {TensorType::kQ8_0, TensorType::kQ4_0, TensorType::kQ5_0, TensorType::kQ4_1,
        TensorType::kIQ4_NL, TensorType::kQ2_K, TensorType::kQ3_K, TensorType::kQ4_K,
        TensorType::kQ5_K, TensorType::kQ6_K, TensorType::kF16}) {
    // K-quants need rows that are multiples of 256 elements.
    const bool k_quant = gguf::type_traits(type).block_elems == 256;
    SynthShape shape{
        "tiny", "llama", k_quant ? 256 : 64, 2, 4, 2, k_quant ? 512 : 96, 256, 10000.0f,
        1e-5f,  false};
    SynthOptions o;
    o.type = type;
    o.vocab_path = std::string(GANTRY_MODELS_DIR) + "/stories260K.gguf";
    o.out_path =
        ::testing::TempDir() + "/repack_" + std::string(gguf::type_traits(type).name) + ".gguf";
    ASSERT_TRUE(synth_model_shape(shape, o).ok());
    auto run = [&](bool repack, size_t *repacked) {
      if (repack)
        ::unsetenv("GANTRY_NO_REPACK");
      else
        ::setenv("GANTRY_NO_REPACK", "1", 1);
      auto m = Model::load(o.out_path);
      ::unsetenv("GANTRY_NO_REPACK");
      EXPECT_TRUE(m.ok());
      *repacked = (*m)->repacked_bytes();
      const ModelConfig &c = (*m)->config();
      KvCache kv(c.n_layer, c.kv_dim(), 4);
      std::vector<int32_t> blocks = {0};
      (void)kv.allocate();
      Workspace ws;
      kernels::ThreadPool pool(2);
      std::vector<float> all, logits;
      const std::vector<int32_t> prompt = {1, 400, 37, 260, 511, 3, 99, 12, 7};
      std::vector<BatchToken> batch;
      for (size_t i = 0; i < prompt.size(); ++i)
        batch.push_back({prompt[i], static_cast<int32_t>(i), &blocks, i + 1 == prompt.size()});
      (*m)->forward(batch, kv, ws, pool, logits);
      all = logits;
      int32_t pos = static_cast<int32_t>(prompt.size());
      for (int step = 0; step < 6; ++step) {
        const auto best = std::max_element(logits.begin(), logits.end()) - logits.begin();
        const BatchToken next{static_cast<int32_t>(best), pos++, &blocks, true};
        (*m)->forward(std::span<const BatchToken>(&next, 1), kv, ws, pool, logits);
        all.insert(all.end(), logits.begin(), logits.end());
      }
      return all;
    };
    size_t packed = 0, mapped = 0;
    const std::vector<float> with = run(true, &packed), without = run(false, &mapped);
    // Q2_K and Q3_K are packed for the AVX2 kernels only.
    if ((type == TensorType::kQ2_K || type == TensorType::kQ3_K) &&
        kernels::active_isa() >= kernels::Isa::kAvx512Vnni)
      EXPECT_EQ(packed, 0u) << "no AVX-512 kernel reads packed Q2_K/Q3_K";
    else
      EXPECT_GT(packed, 0u) << "nothing was repacked";
    EXPECT_EQ(mapped, 0u);
    ASSERT_EQ(with.size(), without.size());
    EXPECT_EQ(std::memcmp(with.data(), without.data(), with.size() * sizeof(float)), 0)
        << gguf::type_traits(type).name;
  }
}

TEST(ModelLoadTest, RefusesUnsupportedArchitecturesAndTypesByName) {
  gguf::GgufWriter w;
  w.set_string("general.architecture", "mamba");
  std::string path = ::testing::TempDir() + "/mamba.gguf";
  ASSERT_TRUE(w.write(path).ok());
  auto m = Model::load(path);
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.error().message.find("mamba"), std::string::npos) << m.error().message;

  SynthShape shape{"tiny", "llama", 64, 1, 4, 2, 96, 256, 10000.0f, 1e-5f, false};
  SynthOptions o;
  o.type = TensorType::kQ8_0;
  o.vocab_path = std::string(GANTRY_MODELS_DIR) + "/stories260K.gguf";
  o.out_path = ::testing::TempDir() + "/i8.gguf";
  ASSERT_TRUE(synth_model_shape(shape, o).ok());
  // Rewrite one tensor's type from Q8_0 to I8 (a valid GGUF type the engine does not compute
  // with; it is smaller, so the data still fits in the file).
  std::vector<uint8_t> bytes;
  {
    FILE *fp = std::fopen(o.out_path.c_str(), "rb");
    ASSERT_NE(fp, nullptr);
    std::fseek(fp, 0, SEEK_END);
    bytes.resize(std::ftell(fp));
    std::fseek(fp, 0, SEEK_SET);
    ASSERT_EQ(std::fread(bytes.data(), 1, bytes.size(), fp), bytes.size());
    std::fclose(fp);
  }
  const std::string name = "blk.0.attn_q.weight";
  auto it = std::search(bytes.begin(), bytes.end(), name.begin(), name.end());
  ASSERT_NE(it, bytes.end());
  size_t type_off = (it - bytes.begin()) + name.size() + 4 + 2 * 8;
  uint32_t type;
  std::memcpy(&type, &bytes[type_off], 4);
  ASSERT_EQ(type, static_cast<uint32_t>(TensorType::kQ8_0));
  type = static_cast<uint32_t>(TensorType::kI8);
  std::memcpy(&bytes[type_off], &type, 4);
  FILE *fp = std::fopen(o.out_path.c_str(), "wb");
  ASSERT_NE(fp, nullptr);
  std::fwrite(bytes.data(), 1, bytes.size(), fp);
  std::fclose(fp);
  auto bad = Model::load(o.out_path);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().code, ErrorCode::kUnsupported);
  EXPECT_NE(bad.error().message.find("I8"), std::string::npos) << bad.error().message;
  EXPECT_NE(bad.error().message.find(name), std::string::npos) << bad.error().message;
}

TEST(ModelLoadTest, MissingTensorIsNamed) {
  auto f = Model::load(std::string(GANTRY_TEST_DATA_DIR) + "/vocab/ggml-vocab-llama-spm.gguf");
  ASSERT_FALSE(f.ok());
  EXPECT_NE(f.error().message.find("token_embd.weight"), std::string::npos) << f.error().message;
}

} // namespace
} // namespace gantry::engine
