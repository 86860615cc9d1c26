// Files quantized by llama.cpp's own llama-quantize (not by our encoders): each preset's file
// loads, holds the block types the preset is known to produce, its weights decode to the F16
// source's values within the type's quantization error (a misread layout gives errors of the
// order of the values themselves), and the engine's logits and greedy tokens agree with the
// double-precision reference on the same weights. Where llama.cpp's own greedy tokens were
// recorded (greedy.json beside the files), they must match too, except where the reference
// shows a near-tie.
//
// The files in tests/data/quantized/ were written by llama-quantize (commit 3f545bec) from the
// F16 sources this test writes with synth_model_shape (deterministic). When the peer is built
// (../peers/llama.cpp/build/bin/llama-quantize, or $GANTRY_LLAMA_QUANTIZE), FreshFromPeer
// quantizes the sources again and checks those files as well; with GANTRY_UPDATE_QUANT_FILES=1 it
// also copies them over the committed ones. The committed files are always checked.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include <unistd.h>

#include <boost/json.hpp>

#include "engine/model/model.h"
#include "engine/model/synth.h"
#include "reference_forward.h"

namespace gantry::engine {
namespace {

using gguf::TensorType;
using testing_ref::Ref;
namespace fs = std::filesystem;

// Widths that are multiples of 256 (K-quants apply) and widths that are not (llama-quantize
// falls back to Q5_0/Q5_1/Q8_0/IQ4_NL for such tensors, as for Qwen2.5-0.5B's 896).
const SynthShape kWide{"quant-wide", "llama", 256, 1, 4, 2, 512, 256, 10000.0f, 1e-5f, false};
const SynthShape kNarrow{"quant-narrow", "llama", 96, 1, 3, 1, 224, 256, 10000.0f, 1e-5f, false};

struct Preset {
  const char *file;   // under tests/data/quantized/
  const char *preset; // llama-quantize's name for it
  bool narrow;
  std::vector<TensorType> must_have; // block types the file must contain
};

const std::vector<Preset> &presets() {
  static const std::vector<Preset> p = {
      {"wide-q4_1.gguf", "Q4_1", false, {TensorType::kQ4_1}},
      {"wide-q5_0.gguf", "Q5_0", false, {TensorType::kQ5_0}},
      {"wide-q5_1.gguf", "Q5_1", false, {TensorType::kQ5_1}},
      {"wide-iq4_nl.gguf", "IQ4_NL", false, {TensorType::kIQ4_NL}},
      {"wide-q2_k.gguf", "Q2_K", false, {TensorType::kQ2_K}},
      {"wide-q3_k_m.gguf", "Q3_K_M", false, {TensorType::kQ3_K}},
      {"wide-q4_k_m.gguf", "Q4_K_M", false, {TensorType::kQ4_K, TensorType::kQ6_K}},
      {"wide-q5_k_m.gguf", "Q5_K_M", false, {TensorType::kQ5_K, TensorType::kQ6_K}},
      {"narrow-q4_k_m.gguf", "Q4_K_M", true, {TensorType::kQ5_0}},
      {"narrow-q5_k_m.gguf", "Q5_K_M", true, {TensorType::kQ5_1}},
  };
  return p;
}

// Relative RMS error of the decoded weights against the source, per block type: about what
// ggml's encoders reach on uniform random values, with room (a wrong layout is near 1 or more).
double max_rel_rms(TensorType t) {
  switch (t) {
  case TensorType::kQ2_K: return 0.45;
  case TensorType::kQ3_K: return 0.25;
  case TensorType::kQ4_0:
  case TensorType::kQ4_1:
  case TensorType::kIQ4_NL:
  case TensorType::kQ4_K: return 0.12;
  case TensorType::kQ5_0:
  case TensorType::kQ5_1:
  case TensorType::kQ5_K: return 0.06;
  case TensorType::kQ6_K: return 0.03;
  case TensorType::kQ8_0: return 0.01;
  default: return 1e-3; // F16/F32
  }
}

std::string source_path(bool narrow) {
  const std::string path =
      ::testing::TempDir() + (narrow ? "/quant-narrow-f16.gguf" : "/quant-wide-f16.gguf");
  if (!fs::exists(path)) {
    // Written aside and renamed: ctest may run this suite's tests in parallel processes.
    SynthOptions o;
    o.type = TensorType::kF16;
    o.vocab_path = std::string(GANTRY_MODELS_DIR) + "/stories260K.gguf";
    o.out_path = path + "." + std::to_string(::getpid());
    o.seed = 7;
    const Status st = synth_model_shape(narrow ? kNarrow : kWide, o);
    if (!st)
      ADD_FAILURE() << st.error().message;
    fs::rename(o.out_path, path);
  }
  return path;
}

std::vector<float> decode_tensor(const gguf::TensorInfo &t) {
  std::vector<float> out(static_cast<size_t>(t.n_elements));
  const int64_t cols = static_cast<int64_t>(t.dims[0]);
  for (uint64_t r = 0; r < t.n_elements / t.dims[0]; ++r) {
    kernels::dequantize_row(t.type, t.data + t.row_bytes() * r, out.data() + r * cols, cols);
  }
  return out;
}

// The weights of `file` against those of its F16 source, tensor by tensor.
void check_weights(const gguf::GgufFile &file, const gguf::GgufFile &source, const Preset &p) {
  std::set<TensorType> seen;
  for (const auto &t : file.tensors()) {
    seen.insert(t.type);
    ASSERT_TRUE(kernels::is_supported(t.type))
        << p.file << ": " << t.name << " is " << gguf::type_traits(t.type).name;
    const gguf::TensorInfo *s = source.tensor(t.name);
    ASSERT_NE(s, nullptr) << t.name;
    ASSERT_EQ(s->n_elements, t.n_elements) << t.name;
    const auto got = decode_tensor(t), want = decode_tensor(*s);
    double err2 = 0, x2 = 0;
    for (size_t i = 0; i < got.size(); ++i) {
      err2 += (static_cast<double>(got[i]) - want[i]) * (static_cast<double>(got[i]) - want[i]);
      x2 += static_cast<double>(want[i]) * want[i];
    }
    const double rel = x2 > 0 ? std::sqrt(err2 / x2) : std::sqrt(err2);
    EXPECT_LT(rel, max_rel_rms(t.type))
        << p.file << ": " << t.name << " (" << gguf::type_traits(t.type).name << ")";
  }
  for (TensorType t : p.must_have) {
    EXPECT_TRUE(seen.count(t)) << p.file << " has no " << gguf::type_traits(t).name
                               << " tensor: llama-quantize's " << p.preset
                               << " preset no longer produces it?";
  }
}

struct Step {
  int32_t token;
  double margin;     // reference logit of the best token minus the second best
  double engine_err; // the engine's largest logit error against the reference at this step
};

Step argmax(const std::vector<double> &logits) {
  size_t best = 0;
  for (size_t i = 1; i < logits.size(); ++i)
    if (logits[i] > logits[best])
      best = i;
  double second = -1e300;
  for (size_t i = 0; i < logits.size(); ++i)
    if (i != best)
      second = std::max(second, logits[i]);
  return {static_cast<int32_t>(best), logits[best] - second, 0.0};
}

// The prompt llama.cpp's greedy tokens were recorded for (make-greedy.sh), and its ids with BOS
// as llama.cpp's --verbose-prompt printed them.
constexpr const char *kPromptText = "Once upon a time";
const std::vector<int32_t> kPromptIds = {1, 403, 407, 261, 378};
constexpr int kSteps = 12;

// Greedy decoding with the engine: the prompt in one forward pass, then one token per pass (so
// both the prefill and the decode kernels are used), stopping after EOS like llama.cpp. Every
// step's logits are checked against the reference; returns the tokens and the reference's steps.
std::vector<int32_t> check_generation(const Model &m, const Preset &p,
                                      std::vector<Step> *ref_steps) {
  const ModelConfig &c = m.config();
  EXPECT_EQ(m.tokenizer().encode(kPromptText, true, true), kPromptIds);
  KvCache kv(c.n_layer, c.kv_dim(), 4);
  std::vector<int32_t> blocks;
  for (int i = 0; i < 2; ++i)
    blocks.push_back(*kv.allocate());
  Workspace ws;
  kernels::ThreadPool pool(2);
  Ref ref{m.file(), c};
  std::vector<int32_t> seq = kPromptIds, out;
  std::vector<float> logits;
  std::vector<BatchToken> batch;
  for (size_t i = 0; i < seq.size(); ++i)
    batch.push_back({seq[i], static_cast<int32_t>(i), &blocks, i + 1 == seq.size()});
  for (int step = 0; step < kSteps; ++step) {
    m.forward(batch, kv, ws, pool, logits);
    const auto want = ref.run(seq);
    double mx = 0, err = 0;
    for (size_t i = 0; i < want.size(); ++i) {
      mx = std::max(mx, std::abs(want[i]));
      err = std::max(err, std::abs(want[i] - logits[i]));
    }
    // The reference keeps activations in double; the engine quantizes them to 8 bits per block.
    EXPECT_LT(err, 3e-2 * mx) << p.file << " step " << step << ": max |logit| " << mx;
    const auto best = std::max_element(logits.begin(), logits.end()) - logits.begin();
    Step r = argmax(want);
    r.engine_err = err;
    ref_steps->push_back(r);
    // A different choice is only allowed where the reference itself nearly ties.
    if (best != r.token) {
      EXPECT_LT(r.margin, 2 * err)
          << p.file << " step " << step << ": engine chose " << best << ", reference " << r.token;
    }
    const auto tok = static_cast<int32_t>(best);
    out.push_back(tok);
    if (m.tokenizer().is_eog(tok))
      break;
    seq.push_back(tok);
    batch = {{tok, static_cast<int32_t>(seq.size() - 1), &blocks, true}};
  }
  return out;
}

// llama.cpp's greedy text per file (hex), recorded by make-greedy.sh; empty if absent.
boost::json::object recorded_greedy(const std::string &dir) {
  std::ifstream in(dir + "/greedy.json");
  if (!in)
    return {};
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto v = boost::json::parse(text).as_object();
  EXPECT_EQ(v.at("prompt").as_string(), kPromptText);
  EXPECT_EQ(v.at("n_predict").as_int64(), kSteps);
  return v.at("files").as_object();
}

std::string from_hex(std::string_view hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2)
    out.push_back(static_cast<char>(std::stoi(std::string(hex.substr(i, 2)), nullptr, 16)));
  return out;
}

// The engine's greedy text against llama.cpp's: equal, or diverging only at a step where the
// reference nearly ties (different rounding may then pick either token). After a divergence the
// two continue different sequences, so there is nothing more to compare.
void check_against_llama(const Model &m, const Preset &p, const std::vector<int32_t> &tokens,
                         const std::vector<Step> &ref_steps, const std::string &want) {
  std::string got;
  for (size_t i = 0; i < tokens.size(); ++i) {
    const std::string piece =
        m.tokenizer().is_eog(tokens[i]) ? "" : m.tokenizer().token_to_piece(tokens[i]);
    const bool ends = m.tokenizer().is_eog(tokens[i]) && got.size() < want.size();
    if (ends || want.compare(got.size(), piece.size(), piece) != 0) {
      // llama.cpp quantizes activations too (with fp16 block scales where the engine keeps
      // float ones), so its logits are taken to be no closer to the reference than the engine's.
      EXPECT_LT(ref_steps[i].margin, 2 * ref_steps[i].engine_err)
          << p.file << ": the engine's token " << tokens[i] << " at step " << i
          << " departs from llama.cpp's text, and the reference does not nearly tie there";
      return;
    }
    got += piece;
  }
  EXPECT_EQ(got, want) << p.file << ": llama.cpp generated more";
}

void check_file(const std::string &path, const Preset &p, const boost::json::object *greedy) {
  SCOPED_TRACE(path);
  auto file = gguf::GgufFile::open(path);
  ASSERT_TRUE(file.ok()) << file.error().message;
  auto source = gguf::GgufFile::open(source_path(p.narrow));
  ASSERT_TRUE(source.ok()) << source.error().message;
  check_weights(**file, **source, p);

  auto m = Model::load(path);
  ASSERT_TRUE(m.ok()) << m.error().message;
  std::vector<Step> ref_steps;
  const auto tokens = check_generation(**m, p, &ref_steps);
  if (greedy != nullptr && greedy->contains(p.file)) {
    check_against_llama(**m, p, tokens, ref_steps,
                        from_hex(greedy->at(p.file).as_string().c_str()));
  }
}

TEST(QuantizedFilesTest, CommittedFilesFromLlamaQuantize) {
  const std::string dir = std::string(GANTRY_TEST_DATA_DIR) + "/quantized";
  const auto greedy = recorded_greedy(dir);
  ASSERT_EQ(greedy.size(), presets().size()) << "greedy.json lacks files: run make-greedy.sh";
  for (const Preset &p : presets())
    check_file(dir + "/" + p.file, p, &greedy);
}

std::string peer_quantize() {
  if (const char *env = std::getenv("GANTRY_LLAMA_QUANTIZE"))
    return env;
  return std::string(GANTRY_TEST_DATA_DIR) + "/../../../peers/llama.cpp/build/bin/llama-quantize";
}

TEST(QuantizedFilesTest, FreshFromPeerLlamaQuantize) {
  const std::string bin = peer_quantize();
  if (!fs::exists(bin))
    GTEST_SKIP() << "no llama-quantize at " << bin << " (the committed files are still checked)";
  const bool update = std::getenv("GANTRY_UPDATE_QUANT_FILES") != nullptr;
  for (const Preset &p : presets()) {
    const std::string out = ::testing::TempDir() + "/fresh-" + p.file;
    const std::string cmd = "'" + bin + "' '" + source_path(p.narrow) + "' '" + out + "' " +
                            p.preset + " 2 > '" + out + ".log' 2>&1";
    ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
    check_file(out, p, nullptr);
    if (update) {
      fs::copy_file(out, std::string(GANTRY_TEST_DATA_DIR) + "/quantized/" + p.file,
                    fs::copy_options::overwrite_existing);
    }
  }
}

} // namespace
} // namespace gantry::engine
