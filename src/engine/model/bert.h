// The BERT-family encoders (GGUF architectures `bert` and `nomic-bert`: bge, e5, MiniLM,
// nomic-embed-text), as llama.cpp computes them at the anchor commit (src/models/bert.cpp there):
// every token of one input attends to every other (no causal mask), so a whole input runs in one
// pass and nothing is cached between passes; the final hidden states are pooled into one
// embedding (pooling.h). There is no LM head: these models serve /v1/embeddings only.
//
//   bert        token + token-type (row 0: "sentence A") + learned absolute position embeddings,
//               LayerNorm; per layer Q/K/V (with biases), attention, output (+bias), residual,
//               LayerNorm, GELU FFN (up+bias, down+bias), residual, LayerNorm (post-norm).
//   nomic-bert  the same without position embeddings: fused attn_qkv (no bias) and NeoX RoPE
//               over the whole head; SwiGLU FFN (ffn_gate, ffn_up, ffn_down, no biases).
//
// Arithmetic follows llama.cpp's CPU graph with its default flash attention: K and V are rounded
// to fp16 and attention runs through attention_group's fp16 path (Q rounded, fp16 softmax·V
// accumulator); GELU is ggml's fp16 table; the activations of an F16 (BF16) matmul are rounded
// to fp16 (bf16), ggml's vec_dot_type. Each of those moves a normalised embedding by 1e-4 to
// 3e-4, so computing them otherwise would break the 1e-4 match with llama-embedding.
//
// Thread safety: immutable after bind(); encode() runs on one thread at a time per Workspace and
// uses the given pool for its kernels.
#pragma once

#include <memory>
#include <span>
#include <string_view>
#include <vector>

#include "core/result.h"
#include "engine/gguf/gguf.h"
#include "engine/kernels/kernels.h"
#include "engine/kernels/thread_pool.h"
#include "engine/model/model_config.h"

namespace gantry::engine {

struct Workspace;

// True for the architectures this file runs.
bool is_encoder_arch(std::string_view arch);
// The encoder-specific hyper-parameters (`<arch>.attention.layer_norm_epsilon`, NeoX RoPE for
// nomic-bert) on top of what read_model_config reads for every architecture.
Status read_encoder_config(const gguf::GgufFile &file, ModelConfig &config);

class BertEncoder {
public:
  // Views into the mapped file's tensors (norms and biases dequantized to float).
  static Result<std::unique_ptr<BertEncoder>> bind(const gguf::GgufFile &file,
                                                   const ModelConfig &config);

  // The final hidden state of every token (n_embd floats each, in order) of one whole input.
  // tokens.size() must be in [1, n_ctx_train] and every id inside the vocabulary (the caller
  // checks: the engine turns violations into request errors).
  void encode(std::span<const int32_t> tokens, Workspace &ws, kernels::ThreadPool &pool,
              std::vector<float> &hidden) const;

private:
  struct Norm {
    std::vector<float> w, b;
  };
  struct Layer {
    kernels::WeightView wq, wk, wv, wo, w_up, w_gate, w_down;
    std::vector<float> bq, bk, bv, bo, b_up, b_down; // empty when the file has none
    Norm attn_out_norm, layer_out_norm;
  };

  explicit BertEncoder(const ModelConfig &config) : c_(config) {}
  void attention(int n, Workspace &ws, kernels::ThreadPool &pool) const;

  ModelConfig c_;
  const gguf::TensorInfo *token_embd_ = nullptr;
  const gguf::TensorInfo *pos_embd_ = nullptr; // bert only
  std::vector<float> type_row0_;               // token_types row 0; empty when absent
  Norm embd_norm_;
  std::vector<Layer> layers_;
};

} // namespace gantry::engine
