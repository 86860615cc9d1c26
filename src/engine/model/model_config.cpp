#include "engine/model/model_config.h"

#include "engine/model/bert.h"

#include <algorithm>
#include <cmath>

namespace gantry::engine {
namespace {

Result<int> need_int(const gguf::GgufFile &f, const std::string &key, int64_t max) {
  auto v = f.get_uint(key);
  if (!v)
    return Err(Error::corrupt("missing or non-integer metadata key '" + key + "'"));
  if (*v == 0 || *v > static_cast<uint64_t>(max)) {
    return Err(
        Error::corrupt("metadata key '" + key + "' has out-of-range value " + std::to_string(*v)));
  }
  return static_cast<int>(*v);
}

bool supported_arch(const std::string &a) {
  return a == "llama" || a == "qwen2" || a == "gemma2" || a == "gemma3" || a == "phi3" ||
         is_encoder_arch(a);
}

// llama_hparams::set_swa_pattern: with period p, layer il slides unless il % p == p - 1 (every
// p-th layer is global); p == 0 makes every layer slide. An array gives the layers one by one.
Status read_swa_pattern(const gguf::GgufFile &f, const std::string &key, uint32_t period,
                        ModelConfig &c) {
  c.swa_layers.assign(c.n_layer, false);
  if (const gguf::Value *v = f.find(key); v && v->type == gguf::ValueType::kArray) {
    GANTRY_ASSIGN_OR_RETURN(auto arr, f.get_int_array(key));
    if (!arr || arr->size() != static_cast<size_t>(c.n_layer)) {
      return Err(Error::corrupt("metadata key '" + key + "' must have one entry per layer"));
    }
    for (int i = 0; i < c.n_layer; ++i)
      c.swa_layers[i] = (*arr)[i] != 0;
    return Ok();
  }
  if (f.find(key)) {
    auto p = f.get_uint(key);
    if (!p || *p > 1024)
      return Err(Error::corrupt("metadata key '" + key + "' is not a layer period"));
    period = static_cast<uint32_t>(*p);
  }
  for (int i = 0; i < c.n_layer; ++i) {
    c.swa_layers[i] = period == 0 || static_cast<uint32_t>(i) % period < period - 1;
  }
  return Ok();
}

// What sets gemma2, gemma3 and phi3 apart from llama (model_config.h has the table).
Status read_family(const gguf::GgufFile &f, ModelConfig &c) {
  const std::string a = c.arch + ".";
  const bool gemma = c.arch == "gemma2" || c.arch == "gemma3";
  c.rope_neox = c.arch != "llama";
  c.qkv_bias = c.arch == "qwen2";
  c.attn_scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  c.rope_freq_base_swa = c.rope_freq_base;
  c.rope_freq_scale_swa = c.rope_freq_scale;
  c.swa_layers.assign(c.n_layer, false);
  if (gemma) {
    c.embd_scale = std::sqrt(static_cast<float>(c.n_embd));
    c.post_norms = true;
    c.gelu_ffn = true;
    c.q_prescale = true;
    c.qk_norm = c.arch == "gemma3";
    // gemma_pytorch's query_pre_attn_scalar, which llama.cpp infers from the layer count: the
    // 27B models scale by n_embd / n_head instead of head_dim.
    const bool is_27b = c.n_layer == (c.arch == "gemma2" ? 46 : 62);
    if (is_27b)
      c.attn_scale = 1.0f / std::sqrt(static_cast<float>(c.n_embd / c.n_head));
    if (c.arch == "gemma2") {
      c.attn_softcap = 50.0f;
      c.final_softcap = 30.0f;
      c.n_swa = 4096;
      if (auto v = f.get_float(a + "attn_logit_softcapping"))
        c.attn_softcap = static_cast<float>(*v);
      if (auto v = f.get_float(a + "final_logit_softcapping"))
        c.final_softcap = static_cast<float>(*v);
      if (auto w = f.get_uint(a + "attention.sliding_window"))
        c.n_swa = static_cast<int>(std::min<uint64_t>(*w, 1u << 30));
      GANTRY_TRY(read_swa_pattern(f, a + "attention.sliding_window_pattern", 2, c));
      if (auto b = f.get_float(a + "rope.freq_base_swa"))
        c.rope_freq_base_swa = static_cast<float>(*b);
    } else {
      if (auto v = f.get_float(a + "final_logit_softcapping"))
        c.final_softcap = static_cast<float>(*v);
      if (auto w = f.get_uint(a + "attention.sliding_window"); w && *w > 0) {
        c.n_swa = static_cast<int>(std::min<uint64_t>(*w, 1u << 30));
        GANTRY_TRY(read_swa_pattern(f, a + "attention.sliding_window_pattern", 6, c));
        // llama.cpp's defaults for local layers: base 10000 and no scaling.
        c.rope_freq_base_swa = 10000.0f;
        c.rope_freq_scale_swa = 1.0f;
        if (auto b = f.get_float(a + "rope.freq_base_swa"))
          c.rope_freq_base_swa = static_cast<float>(*b);
      }
    }
  }
  if (c.arch == "phi3") {
    c.fused_gate_up = true;
    c.q_prescale = true;
    if (auto v = f.get_float(a + "rope.scaling.attn_factor"))
      c.rope_attn_factor = static_cast<float>(*v);
  }
  c.n_ctx_orig = c.n_ctx_train;
  if (auto v = f.get_uint(a + "rope.scaling.original_context_length"); v && *v > 0)
    c.n_ctx_orig = static_cast<int>(std::min<uint64_t>(*v, 1u << 30));
  return Ok();
}

} // namespace

Result<ModelConfig> read_model_config(const gguf::GgufFile &f) {
  ModelConfig c;
  auto arch = f.get_string("general.architecture");
  if (!arch)
    return Err(Error::corrupt("missing metadata key 'general.architecture'"));
  c.arch = std::string(*arch);
  if (!supported_arch(c.arch)) {
    return Err(
        Error::unsupported("unsupported architecture '" + c.arch +
                           "' (supported: llama, qwen2, gemma2, gemma3, phi3, bert, nomic-bert)"));
  }
  if (auto n = f.get_string("general.name"))
    c.name = std::string(*n);
  const std::string a = c.arch + ".";
  GANTRY_ASSIGN_OR_RETURN(c.n_embd, need_int(f, a + "embedding_length", 1 << 16));
  GANTRY_ASSIGN_OR_RETURN(c.n_layer, need_int(f, a + "block_count", 1024));
  GANTRY_ASSIGN_OR_RETURN(c.n_ff, need_int(f, a + "feed_forward_length", 1 << 18));
  GANTRY_ASSIGN_OR_RETURN(c.n_head, need_int(f, a + "attention.head_count", 1024));
  // Mixtral-style files are llama with experts (ffn_*_exps tensors): refused by name rather than
  // as a missing ffn_gate.weight.
  if (auto e = f.get_uint(a + "expert_count"); e && *e > 0) {
    return Err(Error::unsupported("mixture-of-experts models (" + a + "expert_count " +
                                  std::to_string(*e) + ") are not supported"));
  }
  c.n_head_kv = c.n_head;
  if (f.find(a + "attention.head_count_kv")) {
    GANTRY_ASSIGN_OR_RETURN(c.n_head_kv, need_int(f, a + "attention.head_count_kv", 1024));
  }
  c.n_ctx_train = 2048;
  if (f.find(a + "context_length")) {
    GANTRY_ASSIGN_OR_RETURN(c.n_ctx_train, need_int(f, a + "context_length", 1 << 24));
  }
  if (c.n_head % c.n_head_kv != 0) {
    return Err(Error::corrupt("attention.head_count " + std::to_string(c.n_head) +
                              " is not a multiple of head_count_kv " +
                              std::to_string(c.n_head_kv)));
  }
  c.head_dim = c.n_embd / c.n_head;
  if (f.find(a + "attention.key_length")) {
    GANTRY_ASSIGN_OR_RETURN(c.head_dim, need_int(f, a + "attention.key_length", 1 << 12));
  }
  if (c.head_dim % 2 != 0)
    return Err(Error::corrupt("head dimension must be even"));
  if (c.n_head / c.n_head_kv > 64) {
    return Err(Error::unsupported("more than 64 query heads per KV head"));
  }
  c.rope_dim = c.head_dim;
  if (f.find(a + "rope.dimension_count")) {
    GANTRY_ASSIGN_OR_RETURN(c.rope_dim, need_int(f, a + "rope.dimension_count", c.head_dim));
  }
  if (auto b = f.get_float(a + "rope.freq_base"))
    c.rope_freq_base = static_cast<float>(*b);
  // As llama.cpp: rope.scaling.factor, else the older rope.scale_linear; type "none" never
  // scales.
  auto factor = f.get_float(a + "rope.scaling.factor");
  if (!factor)
    factor = f.get_float(a + "rope.scale_linear");
  if (factor && *factor > 0)
    c.rope_freq_scale = 1.0f / static_cast<float>(*factor);
  if (auto t = f.get_string(a + "rope.scaling.type"); t && *t == "none")
    c.rope_freq_scale = 1.0f;
  if (auto e = f.get_float(a + "attention.layer_norm_rms_epsilon")) {
    c.rms_eps = static_cast<float>(*e);
  }
  if (auto p = f.get_uint(a + "pooling_type")) {
    if (*p == 2)
      c.pooling = Pooling::kCls;
    if (*p == 3)
      c.pooling = Pooling::kLast;
  }
  GANTRY_TRY(read_family(f, c));
  if (is_encoder_arch(c.arch))
    GANTRY_TRY(read_encoder_config(f, c));

  const gguf::TensorInfo *emb = f.tensor("token_embd.weight");
  if (!emb || emb->dims.size() != 2) {
    return Err(Error::corrupt("missing or malformed tensor 'token_embd.weight'"));
  }
  if (emb->dims[0] != static_cast<uint64_t>(c.n_embd)) {
    return Err(Error::corrupt("tensor 'token_embd.weight' width " + std::to_string(emb->dims[0]) +
                              " does not match embedding_length " + std::to_string(c.n_embd)));
  }
  c.n_vocab = static_cast<int>(emb->dims[1]);
  c.tied_output = f.tensor("output.weight") == nullptr;
  return c;
}

} // namespace gantry::engine
