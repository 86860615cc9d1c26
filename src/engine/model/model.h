// A loaded decoder model (model_config.h lists the architectures): config, tokenizer and weight
// views into the mapped GGUF file. Weights are never copied; resident memory grows only as pages
// are touched.
//
// Thread safety: immutable after load(); forward() is called by one engine thread at a time per
// (KvCache, Workspace) pair and uses the given ThreadPool for its kernels.
#pragma once

#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "core/result.h"
#include "engine/gguf/gguf.h"
#include "engine/kernels/kernels.h"
#include "engine/kernels/thread_pool.h"
#include "engine/kv/kv_cache.h"
#include "engine/model/bert.h"
#include "engine/model/model_config.h"
#include "engine/tokenizer/tokenizer.h"

namespace gantry::engine {

// One token of a forward pass. Tokens of one sequence appear in position order; a token may
// attend to every earlier position of its sequence, including ones earlier in the same batch.
struct BatchToken {
  int32_t token = 0;
  int32_t pos = 0;
  const std::vector<int32_t> *blocks = nullptr; // the sequence's KV block table
  bool want_logits = false;
};

// Scratch memory for forward(), grown on demand and reused across steps so that a steady state
// allocates nothing.
struct Workspace {
  std::vector<float> x, xn, q, k, v, attn, gate, up, out;
  std::vector<float> rope_cos, rope_sin;         // per token, n_rot/2 each
  std::vector<float> rope_cos_swa, rope_sin_swa; // the same for sliding-window layers
  std::vector<std::vector<float>> scores;        // one per pool thread
  std::vector<uint16_t> k16, v16;                // an encoder's K/V of the whole input (fp16)
  std::vector<uint8_t> single; // per token: alone in the batch for its sequence (kernels::matmul)
};

class Model {
public:
  using Progress = std::function<void(uint64_t done, uint64_t total)>;

  // n_ctx_seq: the longest sequence the caller will run (0: the model's training context), as
  // llama.cpp's n_ctx_seq; it picks LongRoPE's long or short factors (Phi-3.5/4-mini).
  static Result<std::unique_ptr<Model>> load(const std::string &path,
                                             const Progress &progress = nullptr, int n_ctx_seq = 0);

  const ModelConfig &config() const { return config_; }
  const Tokenizer &tokenizer() const { return *tokenizer_; }
  const gguf::GgufFile &file() const { return *file_; }

  // Runs the batch through the network, writing K/V of every token into the cache and the
  // logits (n_vocab floats each) of tokens with want_logits into `logits`, in batch order.
  void forward(std::span<const BatchToken> batch, KvCache &kv, Workspace &ws,
               kernels::ThreadPool &pool, std::vector<float> &logits) const;
  // The same pass without the output head: writes the final hidden state of every token (after
  // the final norm; n_embd floats each, in batch order) into `hidden`. For embeddings.
  void forward_hidden(std::span<const BatchToken> batch, KvCache &kv, Workspace &ws,
                      kernels::ThreadPool &pool, std::vector<float> &hidden) const;

  // Encoder models (config().encoder: bert, nomic-bert) have no LM head and no causal mask:
  // forward() and forward_hidden() are for decoders only, and encode() runs one whole input
  // (1..n_ctx_train tokens) at once, writing every token's final hidden state (BertEncoder).
  void encode(std::span<const int32_t> tokens, Workspace &ws, kernels::ThreadPool &pool,
              std::vector<float> &hidden) const;

  // Bytes of weights repacked at load for the decode kernels (0 when none were).
  size_t repacked_bytes() const { return repacked_bytes_; }
  // Bytes of the matrices one decode step reads whole: every layer's projections and the LM
  // head (the token embedding gives one row per token). What decode bandwidth is counted by:
  // the file's size overstates it by the embedding table (6 % of a 1.1B F16 file).
  size_t decode_weight_bytes() const;
  // Those matrices' bytes, in the order a decode step reads them (`gantry bench engine` reads
  // them between decode steps to measure the bandwidth decode is judged against).
  std::vector<std::pair<const void *, size_t>> decode_weight_ranges() const;

private:
  struct Layer {
    // Norm weights and biases are small and may be stored in any type; they are dequantized
    // once at load.
    std::vector<float> attn_norm, ffn_norm, bq, bk, bv;
    std::vector<float> post_attn_norm, post_ffn_norm, q_norm, k_norm; // gemma
    kernels::WeightView wq, wk, wv, wo, w_gate, w_up, w_down;
  };

  Model() = default;
  Status bind_weights(int n_ctx_seq);
  // Repacks the layers' and the LM head's Q8_0/Q4_0 matrices into the decode kernels' layout
  // (kernels::pack_rows16) when the active kernels have one and GANTRY_NO_REPACK is not set;
  // the mapped pages of what was repacked are released, so memory stays at the file's size.
  // Returns the mapped ranges released.
  std::vector<std::pair<const void *, size_t>> pack_weights();
  void attention(std::span<const BatchToken> batch, int layer, KvCache &kv, Workspace &ws,
                 kernels::ThreadPool &pool) const;
  // Every layer; leaves the residual stream of each token in ws.x and returns how many rows it
  // holds. With logit_rows_only, the last layer's feed-forward runs only for the tokens that
  // want logits (their rows first, in batch order), as llama.cpp does: nothing else reads the
  // other rows, and a matmul's summation order depends on its row count (llama_order.h).
  int run_layers(std::span<const BatchToken> batch, KvCache &kv, Workspace &ws,
                 kernels::ThreadPool &pool, bool logit_rows_only) const;

  std::unique_ptr<gguf::GgufFile> file_;
  std::unique_ptr<Tokenizer> tokenizer_;
  ModelConfig config_;
  std::vector<Layer> layers_;
  const gguf::TensorInfo *token_embd_ = nullptr;
  std::vector<float> output_norm_;
  kernels::WeightView output_;
  // Storage of the repacked matrices the views above point into: one anonymous mapping, asked
  // for transparent huge pages (decode streams all of it every token).
  struct Arena {
    void *base = nullptr;
    size_t size = 0;
    Arena() = default;
    Arena(const Arena &) = delete;
    Arena &operator=(const Arena &) = delete;
    ~Arena();
  };
  Arena packed_;
  size_t repacked_bytes_ = 0;
  // Llama 3.1's "rope_freqs.weight", or Phi-3's long or short LongRoPE factors; empty when absent.
  std::vector<float> rope_freq_factors_;
  std::unique_ptr<BertEncoder> encoder_; // set for encoder architectures, which bind no Layer
};

} // namespace gantry::engine
