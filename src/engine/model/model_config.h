// Hyper-parameters of a Llama-family model, read once from GGUF metadata and validated.
#pragma once

#include <string>

#include "core/result.h"
#include "engine/gguf/gguf.h"

namespace gantry::engine {

// How a sequence's final hidden states become one embedding (GGUF `<arch>.pooling_type`:
// 1 mean, 2 cls, 3 last; 0 "none" and absent mean the average too, since an embedding endpoint
// needs one vector per input).
enum class Pooling { kMean, kCls, kLast };

struct ModelConfig {
  std::string arch; // "llama" or "qwen2"
  std::string name; // general.name, or the file stem
  int n_vocab = 0;
  int n_embd = 0;
  int n_layer = 0;
  int n_head = 0;
  int n_head_kv = 0;
  int head_dim = 0;
  int n_ff = 0;
  int n_ctx_train = 0;
  int rope_dim = 0;
  float rope_freq_base = 10000.0f;
  float rope_freq_scale = 1.0f;
  float rms_eps = 1e-5f;
  bool rope_neox = false; // qwen2 rotates (x[i], x[i+d/2]) pairs; llama rotates adjacent pairs
  bool qkv_bias = false;
  bool tied_output = false;
  Pooling pooling = Pooling::kMean;

  int q_dim() const { return n_head * head_dim; }
  int kv_dim() const { return n_head_kv * head_dim; }
};

// Errors name the missing or inconsistent key; unsupported architectures are refused by name.
Result<ModelConfig> read_model_config(const gguf::GgufFile &file);

} // namespace gantry::engine
