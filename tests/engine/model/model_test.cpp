// Checks the optimised forward pass against a plain double-precision reference written from the
// architecture's definition, on tiny random models of each architecture and weight type.
#include "engine/model/model.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>

#include "engine/gguf/gguf_writer.h"

#include "engine/model/synth.h"

namespace gantry::engine {
namespace {

using gguf::TensorType;

struct Ref {
  const gguf::GgufFile &f;
  const ModelConfig &c;

  std::vector<double> row(const std::string &name, int64_t r) const {
    const auto *t = f.tensor(name);
    const int64_t cols = static_cast<int64_t>(t->dims[0]);
    std::vector<float> tmp(cols);
    kernels::dequantize_row(t->type, t->data + t->row_bytes() * r, tmp.data(), cols);
    return {tmp.begin(), tmp.end()};
  }
  std::vector<double> vec(const std::string &name) const { return row(name, 0); }
  std::vector<double> matvec(const std::string &name, const std::vector<double> &x) const {
    const auto *t = f.tensor(name);
    std::vector<double> y(t->dims[1]);
    for (size_t r = 0; r < y.size(); ++r) {
      auto w = row(name, static_cast<int64_t>(r));
      double s = 0;
      for (size_t i = 0; i < x.size(); ++i)
        s += w[i] * x[i];
      y[r] = s;
    }
    return y;
  }
  std::vector<double> rmsnorm(const std::vector<double> &x, const std::string &w) const {
    double ss = 0;
    for (double v : x)
      ss += v * v;
    const double k = 1.0 / std::sqrt(ss / x.size() + c.rms_eps);
    auto g = vec(w);
    std::vector<double> y(x.size());
    for (size_t i = 0; i < x.size(); ++i)
      y[i] = x[i] * k * g[i];
    return y;
  }
  void rope(std::vector<double> &x, int n_heads, int pos) const {
    const int hd = c.head_dim, half = c.rope_dim / 2;
    for (int h = 0; h < n_heads; ++h) {
      for (int i = 0; i < half; ++i) {
        const double theta = pos * std::pow(c.rope_freq_base, -2.0 * i / c.rope_dim);
        const int a = c.rope_neox ? i : 2 * i, b = c.rope_neox ? i + half : 2 * i + 1;
        const double x0 = x[h * hd + a], x1 = x[h * hd + b];
        x[h * hd + a] = x0 * std::cos(theta) - x1 * std::sin(theta);
        x[h * hd + b] = x0 * std::sin(theta) + x1 * std::cos(theta);
      }
    }
  }

  // Logits of the last token of `tokens`.
  std::vector<double> run(const std::vector<int32_t> &tokens) const {
    const int n = static_cast<int>(tokens.size()), d = c.n_embd, hd = c.head_dim;
    std::vector<std::vector<double>> x(n);
    for (int t = 0; t < n; ++t)
      x[t] = row("token_embd.weight", tokens[t]);
    for (int l = 0; l < c.n_layer; ++l) {
      const std::string p = "blk." + std::to_string(l) + ".";
      std::vector<std::vector<double>> q(n), k(n), v(n);
      for (int t = 0; t < n; ++t) {
        auto xn = rmsnorm(x[t], p + "attn_norm.weight");
        q[t] = matvec(p + "attn_q.weight", xn);
        k[t] = matvec(p + "attn_k.weight", xn);
        v[t] = matvec(p + "attn_v.weight", xn);
        if (c.qkv_bias) {
          auto bq = vec(p + "attn_q.bias"), bk = vec(p + "attn_k.bias"),
               bv = vec(p + "attn_v.bias");
          for (size_t i = 0; i < q[t].size(); ++i)
            q[t][i] += bq[i];
          for (size_t i = 0; i < k[t].size(); ++i)
            k[t][i] += bk[i], v[t][i] += bv[i];
        }
        rope(q[t], c.n_head, t);
        rope(k[t], c.n_head_kv, t);
        // The KV cache holds f16-precision values, like llama.cpp's default cache type.
        for (auto *kv : {&k[t], &v[t]}) {
          for (double &e : *kv) {
            e = kernels::fp16_to_fp32(kernels::fp32_to_fp16(static_cast<float>(e)));
          }
        }
      }
      for (int t = 0; t < n; ++t) {
        std::vector<double> att(c.q_dim(), 0.0);
        for (int h = 0; h < c.n_head; ++h) {
          const int g = h / (c.n_head / c.n_head_kv);
          std::vector<double> s(t + 1);
          double mx = -1e300;
          for (int j = 0; j <= t; ++j) {
            double dot = 0;
            for (int i = 0; i < hd; ++i)
              dot += q[t][h * hd + i] * k[j][g * hd + i];
            s[j] = dot / std::sqrt(static_cast<double>(hd));
            mx = std::max(mx, s[j]);
          }
          double sum = 0;
          for (auto &e : s)
            sum += (e = std::exp(e - mx));
          for (int j = 0; j <= t; ++j)
            for (int i = 0; i < hd; ++i)
              att[h * hd + i] += s[j] / sum * v[j][g * hd + i];
        }
        auto o = matvec(p + "attn_output.weight", att);
        for (int i = 0; i < d; ++i)
          x[t][i] += o[i];
        auto xn = rmsnorm(x[t], p + "ffn_norm.weight");
        auto gate = matvec(p + "ffn_gate.weight", xn), up = matvec(p + "ffn_up.weight", xn);
        for (size_t i = 0; i < gate.size(); ++i)
          gate[i] = gate[i] / (1 + std::exp(-gate[i])) * up[i];
        auto down = matvec(p + "ffn_down.weight", gate);
        for (int i = 0; i < d; ++i)
          x[t][i] += down[i];
      }
    }
    auto xn = rmsnorm(x[n - 1], "output_norm.weight");
    return matvec(f.tensor("output.weight") ? "output.weight" : "token_embd.weight", xn);
  }
};

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
