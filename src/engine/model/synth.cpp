#include "engine/model/synth.h"

#include <cmath>
#include <cstring>

#include "engine/gguf/gguf.h"
#include "engine/gguf/gguf_writer.h"
#include "engine/kernels/kernels.h"

namespace gantry::engine {

const std::vector<SynthShape> &synth_shapes() {
  static const std::vector<SynthShape> shapes = {
      {"tinyllama-1.1b", "llama", 2048, 22, 32, 4, 5632, 2048, 10000.0f, 1e-5f, false},
      {"llama-3.2-1b", "llama", 2048, 16, 32, 8, 8192, 8192, 500000.0f, 1e-5f, true},
      {"qwen2.5-0.5b", "qwen2", 896, 24, 14, 2, 4864, 32768, 1000000.0f, 1e-6f, true},
  };
  return shapes;
}

namespace {

// xorshift64*: fast and deterministic; the statistics of the weights do not matter beyond
// keeping activations finite.
struct Rng {
  uint64_t s;
  float next() {
    s ^= s >> 12;
    s ^= s << 25;
    s ^= s >> 27;
    uint64_t r = s * 2685821657736338717ull;
    return static_cast<float>(r >> 40) / static_cast<float>(1ull << 24) * 2.0f - 1.0f;
  }
};

gguf::GgufWriter::Fill random_fill(gguf::TensorType type, int64_t cols, float scale,
                                   uint64_t seed) {
  return [=](uint8_t *dst, uint64_t n_bytes) {
    Rng rng{seed * 0x9E3779B97F4A7C15ull + 1};
    const size_t row_bytes = kernels::row_bytes(type, cols);
    std::vector<float> row(cols);
    for (uint64_t off = 0; off + row_bytes <= n_bytes; off += row_bytes) {
      for (auto &v : row)
        v = rng.next() * scale;
      if (type == gguf::TensorType::kF32) {
        std::memcpy(dst + off, row.data(), row_bytes);
      } else if (type == gguf::TensorType::kF16) {
        kernels::fp32_to_fp16_row(row.data(), reinterpret_cast<uint16_t *>(dst + off), cols);
      } else {
        kernels::quantize_row(type, row.data(), dst + off, cols);
      }
    }
  };
}

gguf::GgufWriter::Fill const_fill(float value) {
  return [=](uint8_t *dst, uint64_t n_bytes) {
    for (uint64_t off = 0; off + 4 <= n_bytes; off += 4)
      std::memcpy(dst + off, &value, 4);
  };
}

} // namespace

Status synth_model(const SynthOptions &o, const std::function<void(uint64_t, uint64_t)> &progress) {
  const SynthShape *shape = nullptr;
  for (const auto &s : synth_shapes())
    if (s.name == o.like)
      shape = &s;
  if (!shape) {
    std::string names;
    for (const auto &s : synth_shapes())
      names += (names.empty() ? "" : ", ") + s.name;
    return Err(Error::invalid("unknown shape '" + o.like + "' (known: " + names + ")", "like"));
  }
  return synth_model_shape(*shape, o, progress);
}

Status synth_model_shape(const SynthShape &shape, const SynthOptions &o,
                         const std::function<void(uint64_t, uint64_t)> &progress) {
  if (!kernels::is_supported(o.type)) {
    return Err(Error::invalid("unsupported weight type", "type"));
  }
  GANTRY_ASSIGN_OR_RETURN(auto vocab, gguf::GgufFile::open(o.vocab_path));
  const auto *tokens = vocab->get_string_array("tokenizer.ggml.tokens");
  if (!tokens)
    return Err(Error::corrupt(o.vocab_path + " has no tokenizer.ggml.tokens"));
  const int n_vocab = static_cast<int>(tokens->size());
  const SynthShape &s = shape;
  const int n_layer = o.n_layer_override > 0 ? o.n_layer_override : s.n_layer;
  const int head_dim = s.n_embd / s.n_head;
  const std::string a = s.arch + ".";
  const uint32_t block = gguf::type_traits(o.type).block_elems;
  if (s.n_embd % block != 0 || s.n_ff % block != 0 || (s.n_head * head_dim) % block != 0) {
    return Err(Error::invalid("the shape's widths are not multiples of the " +
                                  std::string(gguf::type_traits(o.type).name) + " block size " +
                                  std::to_string(block),
                              "type"));
  }

  gguf::GgufWriter w;
  w.set_string("general.architecture", s.arch);
  w.set_string("general.name", "synthetic " + s.name);
  w.set_u32("general.alignment", 32);
  w.set_u32(a + "context_length", s.n_ctx);
  w.set_u32(a + "embedding_length", s.n_embd);
  w.set_u32(a + "block_count", n_layer);
  w.set_u32(a + "feed_forward_length", s.n_ff);
  w.set_u32(a + "attention.head_count", s.n_head);
  w.set_u32(a + "attention.head_count_kv", s.n_head_kv);
  w.set_u32(a + "rope.dimension_count", head_dim);
  w.set_f32(a + "rope.freq_base", s.rope_base);
  w.set_f32(a + "attention.layer_norm_rms_epsilon", s.rms_eps);
  w.set_u32(a + "vocab_size", n_vocab);
  for (const auto &[key, value] : vocab->metadata()) {
    if (key.starts_with("tokenizer."))
      w.copy_value(key, value);
  }

  uint64_t seed = o.seed;
  const float scale = 0.02f * std::sqrt(3.0f); // uniform with std 0.02
  auto mat = [&](const std::string &name, int rows, int cols, gguf::TensorType t) {
    w.add_tensor(name, t, {static_cast<uint64_t>(cols), static_cast<uint64_t>(rows)},
                 random_fill(t, cols, scale, ++seed));
  };
  auto vec = [&](const std::string &name, int n, float value) {
    w.add_tensor(name, gguf::TensorType::kF32, {static_cast<uint64_t>(n)}, const_fill(value));
  };
  auto bias = [&](const std::string &name, int n) {
    w.add_tensor(name, gguf::TensorType::kF32, {static_cast<uint64_t>(n)},
                 random_fill(gguf::TensorType::kF32, n, 0.02f, ++seed));
  };
  mat("token_embd.weight", n_vocab, s.n_embd, o.type);
  vec("output_norm.weight", s.n_embd, 1.0f);
  if (!s.tied_output)
    mat("output.weight", n_vocab, s.n_embd, o.type);
  const int q_dim = s.n_head * head_dim, kv_dim = s.n_head_kv * head_dim;
  for (int l = 0; l < n_layer; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    vec(p + "attn_norm.weight", s.n_embd, 1.0f);
    mat(p + "attn_q.weight", q_dim, s.n_embd, o.type);
    mat(p + "attn_k.weight", kv_dim, s.n_embd, o.type);
    mat(p + "attn_v.weight", kv_dim, s.n_embd, o.type);
    if (s.arch == "qwen2") {
      bias(p + "attn_q.bias", q_dim);
      bias(p + "attn_k.bias", kv_dim);
      bias(p + "attn_v.bias", kv_dim);
    }
    mat(p + "attn_output.weight", s.n_embd, q_dim, o.type);
    vec(p + "ffn_norm.weight", s.n_embd, 1.0f);
    mat(p + "ffn_gate.weight", s.n_ff, s.n_embd, o.type);
    mat(p + "ffn_up.weight", s.n_ff, s.n_embd, o.type);
    mat(p + "ffn_down.weight", s.n_embd, s.n_ff, o.type);
  }
  return w.write(o.out_path, progress);
}

} // namespace gantry::engine
