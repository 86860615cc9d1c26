#include "engine/model/model_config.h"

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

} // namespace

Result<ModelConfig> read_model_config(const gguf::GgufFile &f) {
  ModelConfig c;
  auto arch = f.get_string("general.architecture");
  if (!arch)
    return Err(Error::corrupt("missing metadata key 'general.architecture'"));
  c.arch = std::string(*arch);
  if (c.arch != "llama" && c.arch != "qwen2") {
    return Err(
        Error::unsupported("unsupported architecture '" + c.arch + "' (supported: llama, qwen2)"));
  }
  if (auto n = f.get_string("general.name"))
    c.name = std::string(*n);
  const std::string a = c.arch + ".";
  GANTRY_ASSIGN_OR_RETURN(c.n_embd, need_int(f, a + "embedding_length", 1 << 16));
  GANTRY_ASSIGN_OR_RETURN(c.n_layer, need_int(f, a + "block_count", 1024));
  GANTRY_ASSIGN_OR_RETURN(c.n_ff, need_int(f, a + "feed_forward_length", 1 << 18));
  GANTRY_ASSIGN_OR_RETURN(c.n_head, need_int(f, a + "attention.head_count", 1024));
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
  if (auto s = f.get_float(a + "rope.scale_linear")) {
    if (*s > 0)
      c.rope_freq_scale = 1.0f / static_cast<float>(*s);
  }
  if (auto e = f.get_float(a + "attention.layer_norm_rms_epsilon")) {
    c.rms_eps = static_cast<float>(*e);
  }
  if (auto p = f.get_uint(a + "pooling_type")) {
    if (*p == 2)
      c.pooling = Pooling::kCls;
    if (*p == 3)
      c.pooling = Pooling::kLast;
  }
  c.rope_neox = c.arch == "qwen2";
  c.qkv_bias = c.arch == "qwen2";

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
