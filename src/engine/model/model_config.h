// Hyper-parameters of a decoder model, read once from GGUF metadata and validated.
//
// Architectures (GGUF general.architecture) and what sets them apart, each as llama.cpp reads
// and computes it at the anchor commit (src/models/<arch>.cpp there):
//   llama   the base: RMSNorm, RoPE on adjacent pairs, SwiGLU FFN. Llama 3.2's tied head (no
//           output.weight) and Llama 3.1's rope_freqs. `llama.attention.sliding_window` is NOT
//           applied: llama.cpp ignores it for this architecture (no converter writes it; Mistral
//           7B v0.1's 4096 window runs as full attention there), and so does Gantry, so that
//           outputs stay the same as llama.cpp's.
//   qwen2   llama + NeoX RoPE + Q/K/V biases.
//   gemma2  embeddings scaled by sqrt(n_embd); RMSNorm after attention and after the FFN too;
//           GELU(tanh)-gated FFN; Q scaled by 1/sqrt(head_dim) before attention (the 27B shape:
//           1/sqrt(n_embd/n_head)); attention logits soft-capped (default 50) and final logits
//           (default 30); sliding window (default 4096) on layers il % pattern < pattern - 1
//           (pattern default 2); tied head; NeoX RoPE.
//   gemma3  gemma2 without attention soft-capping (final only when the key is present), plus
//           RMSNorm of each Q and K head before RoPE; sliding window only when the key is present
//           (pattern default 6); local layers use rope.freq_base_swa (default 10000) and no
//           linear scaling, global layers rope.freq_base and rope.scaling.
//   phi3    Phi-3/3.5/4-mini: fused attn_qkv and ffn_up (gate | up halves), NeoX RoPE over
//           rope.dimension_count dims, LongRoPE factor tensors (long when the context exceeds
//           rope.scaling.original_context_length, else short) with rope.scaling.attn_factor;
//           `phi3.attention.sliding_window` is ignored as llama.cpp does ("Phi SWA is currently
//           disabled").
//   bert, nomic-bert  encoder-only embedding models (bge, e5, nomic-embed): bidirectional
//           attention, LayerNorm, no LM head; computed by BertEncoder (bert.h), which lists how.
#pragma once

#include <string>
#include <vector>

#include "core/result.h"
#include "engine/gguf/gguf.h"

namespace gantry::engine {

// How a sequence's final hidden states become one embedding (GGUF `<arch>.pooling_type`:
// 1 mean, 2 cls, 3 last; 0 "none" and absent mean the average too, since an embedding endpoint
// needs one vector per input).
enum class Pooling { kMean, kCls, kLast };

struct ModelConfig {
  std::string arch; // llama, qwen2, gemma2, gemma3, phi3, bert, nomic-bert
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
  // An encoder (bert.h): embeddings only, no generation; rms_eps holds its LayerNorm epsilon.
  bool encoder = false;

  // Family features (see the table above); the defaults are Llama's.
  float embd_scale = 1.0f;      // token embeddings are multiplied by this (gemma: sqrt(n_embd))
  bool post_norms = false;      // post_attention_norm / post_ffw_norm (gemma2/3)
  bool qk_norm = false;         // attn_q_norm / attn_k_norm per head (gemma3)
  bool gelu_ffn = false;        // GELU(tanh)-gated FFN instead of SwiGLU (gemma)
  bool fused_gate_up = false;   // ffn_up holds gate then up rows, no ffn_gate (phi3)
  bool q_prescale = false;      // Q is multiplied by attn_scale before attention (its fp16
                                // rounding then sees the scaled values, as llama.cpp's graph)
  float attn_scale = 0.0f;      // 1/sqrt(head_dim) unless the family says otherwise
  float attn_softcap = 0.0f;    // 0 = none
  float final_softcap = 0.0f;   // 0 = none
  int n_swa = 0;                // sliding window in positions; 0 = none
  std::vector<bool> swa_layers; // per layer: true = sliding window (when n_swa > 0)
  float rope_freq_base_swa = 10000.0f;
  float rope_freq_scale_swa = 1.0f;
  float rope_attn_factor = 1.0f; // multiplies RoPE's cos/sin (LongRoPE's magnitude scaling)
  int n_ctx_orig = 0;            // rope.scaling.original_context_length (0 = n_ctx_train)

  bool is_swa(int layer) const { return n_swa > 0 && swa_layers[layer]; }

  int q_dim() const { return n_head * head_dim; }
  int kv_dim() const { return n_head_kv * head_dim; }
};

// Errors name the missing or inconsistent key; unsupported architectures are refused by name.
Result<ModelConfig> read_model_config(const gguf::GgufFile &file);

} // namespace gantry::engine
