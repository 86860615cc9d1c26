// `gantry model info|synth` and `gantry tokenize`.
#include <CLI/CLI.hpp>

#include <boost/json.hpp>
#include <cstdio>
#include <map>

#include "cli/commands.h"
#include "cli/progress.h"
#include "engine/gguf/gguf.h"
#include "engine/kernels/kernels.h"
#include "engine/model/model_config.h"
#include "engine/model/synth.h"
#include "engine/tokenizer/tokenizer.h"

namespace gantry::cli {
namespace {

std::string describe_value(const gguf::Value &v) {
  using gguf::ValueType;
  switch (v.type) {
  case ValueType::kString: {
    std::string s(v.str.substr(0, 80));
    for (auto &c : s)
      if (c == '\n')
        c = ' ';
    return "\"" + s + (v.str.size() > 80 ? "...\"" : "\"");
  }
  case ValueType::kArray:
    return "[" + std::string(gguf::value_type_name(v.elem_type)) + " x " + std::to_string(v.count) +
           "]";
  case ValueType::kFloat32:
  case ValueType::kFloat64: return std::to_string(v.f64);
  case ValueType::kBool: return v.u64 ? "true" : "false";
  case ValueType::kInt8:
  case ValueType::kInt16:
  case ValueType::kInt32:
  case ValueType::kInt64: return std::to_string(v.i64);
  default: return std::to_string(v.u64);
  }
}

int model_info(const std::string &path, bool all_keys) {
  auto f = gguf::GgufFile::open(path);
  if (!f) {
    std::fprintf(stderr, "error: %s\n", f.error().message.c_str());
    return 1;
  }
  const auto &g = **f;
  std::printf("file:          %s (%.1f MiB, GGUF v%u, %zu tensors, %zu metadata keys)\n",
              path.c_str(), g.file_size() / 1048576.0, g.version(), g.tensors().size(),
              g.metadata().size());
  auto cfg = engine::read_model_config(g);
  if (cfg) {
    const auto &c = *cfg;
    std::printf("architecture:  %s%s\n", c.arch.c_str(),
                c.name.empty() ? "" : (" (" + c.name + ")").c_str());
    std::printf("layers:        %d\nembedding:     %d\nfeed-forward:  %d\n", c.n_layer, c.n_embd,
                c.n_ff);
    std::printf("heads:         %d (kv %d, head dim %d)\n", c.n_head, c.n_head_kv, c.head_dim);
    std::printf("context:       %d\nvocab:         %d\n", c.n_ctx_train, c.n_vocab);
    if (c.encoder) {
      // bert has learned positions; nomic-bert rotates (bert.h).
      if (c.arch == "bert")
        std::printf("positions:     learned (position_embd)\n");
      else
        std::printf("rope:          neox, dims %d, base %g\n", c.rope_dim, c.rope_freq_base);
      static constexpr const char *kPooling[] = {"mean", "cls", "last"};
      std::printf("norm eps:      %g (LayerNorm)\nencoder:       bidirectional, embeddings "
                  "only, %s pooling\n",
                  c.rms_eps, kPooling[static_cast<int>(c.pooling)]);
    } else {
      std::printf("rope:          %s, dims %d, base %g\nrms eps:       %g\n",
                  c.rope_neox ? "neox" : "normal", c.rope_dim, c.rope_freq_base, c.rms_eps);
      std::printf("output head:   %s\n", c.tied_output ? "tied to token embedding" : "separate");
    }
  } else {
    auto arch = g.get_string("general.architecture");
    std::printf("architecture:  %s (%s)\n", arch ? std::string(*arch).c_str() : "?",
                cfg.error().message.c_str());
  }
  auto tk = g.get_string("tokenizer.ggml.model");
  auto pre = g.get_string("tokenizer.ggml.pre");
  const auto *tokens = g.get_string_array("tokenizer.ggml.tokens");
  std::printf("tokenizer:     %s%s%s, %zu tokens\n", tk ? std::string(*tk).c_str() : "none",
              pre ? " / pre " : "", pre ? std::string(*pre).c_str() : "",
              tokens ? tokens->size() : 0);
  std::map<std::string, std::pair<int, uint64_t>> by_type;
  uint64_t params = 0, bytes = 0;
  for (const auto &t : g.tensors()) {
    auto &e = by_type[std::string(gguf::type_traits(t.type).name)];
    ++e.first;
    e.second += t.n_bytes;
    params += t.n_elements;
    bytes += t.n_bytes;
  }
  std::printf("parameters:    %.3f M (%.1f MiB of tensor data)\n", params / 1e6, bytes / 1048576.0);
  for (const auto &[name, e] : by_type) {
    std::printf("  %-8s %4d tensors  %10.1f MiB\n", name.c_str(), e.first, e.second / 1048576.0);
  }
  std::printf("tensors:\n");
  for (const auto &t : g.tensors()) {
    std::string dims;
    for (auto d : t.dims)
      dims += (dims.empty() ? "" : " x ") + std::to_string(d);
    std::printf("  %-32s %-6s [%s] %.2f MiB%s\n", t.name.c_str(),
                std::string(gguf::type_traits(t.type).name).c_str(), dims.c_str(),
                t.n_bytes / 1048576.0,
                engine::kernels::is_supported(t.type) ? "" : "  (unsupported type)");
  }
  if (all_keys) {
    std::printf("metadata:\n");
    for (const auto &[k, v] : g.metadata()) {
      std::printf("  %-48s %s\n", k.c_str(), describe_value(v).c_str());
    }
  }
  return 0;
}

Result<gguf::TensorType> parse_type(const std::string &s) {
  if (s == "f32")
    return gguf::TensorType::kF32;
  if (s == "f16")
    return gguf::TensorType::kF16;
  if (s == "q8_0")
    return gguf::TensorType::kQ8_0;
  if (s == "q4_0")
    return gguf::TensorType::kQ4_0;
  return Err(Error::invalid("unknown --type '" + s + "' (f32, f16, q8_0, q4_0)"));
}

} // namespace

void register_model_commands(CLI::App &app, int &rc) {
  auto *model = app.add_subcommand("model", "Inspect or create GGUF model files");
  model->require_subcommand(1);

  auto *info = model->add_subcommand("info", "Print architecture, hyper-parameters and tensors");
  static std::string info_path;
  static bool all_keys = false;
  info->add_option("file", info_path, "GGUF file")->required();
  info->add_flag("--metadata", all_keys, "Also print every metadata key");
  info->callback([&rc] { rc = model_info(info_path, all_keys); });

  auto *synth = model->add_subcommand("synth", "Write a random-weight model of a known shape");
  static engine::SynthOptions so;
  static std::string type_name = "q8_0";
  static int layers = 0;
  std::string shapes;
  for (const auto &s : engine::synth_shapes())
    shapes += (shapes.empty() ? "" : "|") + s.name;
  synth->add_option("--like", so.like, shapes)->required();
  synth->add_option("--type", type_name, "f16|q8_0|q4_0")->default_val("q8_0");
  synth->add_option("--vocab", so.vocab_path, "vocab-only GGUF to copy the tokenizer from")
      ->required();
  synth->add_option("--out", so.out_path, "output file")->required();
  synth->add_option("--seed", so.seed, "random seed")->default_val(42);
  synth->add_option("--layers", layers, "override the layer count (small test files)");
  synth->callback([&rc] {
    auto t = parse_type(type_name);
    if (!t) {
      std::fprintf(stderr, "error: %s\n", t.error().message.c_str());
      rc = 2;
      return;
    }
    so.type = *t;
    so.n_layer_override = layers;
    Progress bar("synth " + so.out_path);
    auto st = engine::synth_model(so, [&bar](uint64_t d, uint64_t t) { bar.update(d, t); });
    bar.finish();
    if (!st) {
      std::fprintf(stderr, "error: %s\n", st.error().message.c_str());
      rc = 1;
      return;
    }
    std::fprintf(stderr, "wrote %s\n", so.out_path.c_str());
  });

  auto *tok = app.add_subcommand("tokenize", "Print the token ids of a text as JSON");
  static std::string tok_model, tok_text;
  static bool no_special = false;
  tok->add_option("--model", tok_model, "GGUF file (a vocab-only file works)");
  tok->add_option("--text", tok_text, "text to tokenize")->required();
  tok->add_flag("--no-special", no_special,
                "no BOS/EOS and no parsing of special-token text (default: both, like llama.cpp)");
  tok->callback([&rc] {
    if (tok_model.empty())
      tok_model = default_model_path();
    auto f = gguf::GgufFile::open(tok_model);
    if (!f) {
      std::fprintf(stderr, "error: %s\n", f.error().message.c_str());
      rc = 1;
      return;
    }
    auto t = engine::Tokenizer::from_gguf(**f);
    if (!t) {
      std::fprintf(stderr, "error: %s\n", t.error().message.c_str());
      rc = 1;
      return;
    }
    auto ids = (*t)->encode(tok_text, !no_special, !no_special);
    boost::json::array a;
    for (auto id : ids)
      a.push_back(id);
    std::printf("%s\n", boost::json::serialize(a).c_str());
  });
}

} // namespace gantry::cli
