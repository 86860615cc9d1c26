// The batched stepping engine: the contract continuous batching is built on.
//
// Callers submit() sequences and call step() repeatedly. Each step runs ONE forward pass over a
// set of sequences: one decode token for every running sequence plus chunks of waiting prompts
// (chunked prefill, up to max_batch_tokens in all), so each weight matrix is read once per step
// however many sequences share it. Sequences join and leave between steps; cancel() takes
// effect at the next step.
//
// Memory: the KV cache has a fixed budget (EngineConfig::kv_bytes). A sequence is admitted only
// when blocks for its whole context (prompt + max_tokens) can be reserved, so a running
// sequence never runs out of KV memory mid-generation; until then it waits in FIFO order. A
// request that could never fit is refused at submit() with kContextLengthExceeded.
//
// Thread ownership: one engine thread owns an Engine; nothing here is thread-safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "core/result.h"
#include "engine/batch/text_stream.h"
#include "engine/kernels/thread_pool.h"
#include "engine/kv/kv_cache.h"
#include "engine/kv/prefix_cache.h"
#include "engine/model/model.h"
#include "engine/sampling/constraint.h"
#include "engine/sampling/logprobs.h"
#include "engine/sampling/sampler.h"

namespace gantry::engine {

using SeqId = uint64_t;

enum class FinishReason { kNone, kStop, kLength, kCancelled };
const char *finish_reason_name(FinishReason r);

struct GenerationRequest {
  std::vector<int32_t> prompt;
  SamplingParams sampling;
  int max_tokens = 16;
  std::vector<std::string> stop;
  bool ignore_eos = false;
  // Who may share this request's prefix-cache blocks: the project, or "" where projects share
  // caches (audit M2). Requests in different scopes never reuse each other's KV.
  std::string cache_scope;
  // logit_bias: added to the token's logit before sampling (never to the reported logprobs).
  std::vector<std::pair<int32_t, float>> logit_bias;
  // -1: no log-probabilities; 0..20: the chosen token's logprob plus this many alternatives.
  int logprobs = -1;
  // Constrained decoding (structured outputs, forced tool calls); cloned per sequence.
  std::shared_ptr<const TokenConstraint> constraint;
  // Control tokens whose text is released like any other token's instead of dropped: the
  // tool-call markers ([TOOL_CALLS], <|python_tag|>) the tool-call parser reads.
  std::vector<int32_t> rendered_controls;
};

struct TokenEvent {
  SeqId seq = 0;
  int32_t token = -1; // -1 when the event carries no new token (cancellation)
  std::string text;   // text released by this event (UTF-8 complete, stop-string safe)
  FinishReason finish = FinishReason::kNone;
  int n_prompt = 0;
  int n_generated = 0;
  int n_cached = 0; // prompt tokens whose KV came from the prefix cache
  // With GenerationRequest::logprobs >= 0: the chosen token's log-probability under the model's
  // raw distribution (before penalties, bias, temperature and the constraint) and the top
  // alternatives, most likely first.
  float logprob = 0;
  std::vector<std::pair<int32_t, float>> top_logprobs;
};

// The OpenAI-style context check shared by the engine and the HTTP edge (which runs it before a
// stream starts so the error is a plain 400): a prompt that fills the context names
// `prompt_param`; a prompt + max_tokens over it names "max_tokens".
Status check_context(int64_t n_prompt, int64_t max_tokens, int n_ctx,
                     std::string_view prompt_param);

struct EngineConfig {
  int max_batch_tokens = 512; // tokens per forward pass (decode + prefill chunks), >= max_seqs
  int max_seqs = 16;          // sequences generating at once
  size_t kv_bytes = size_t{256} << 20;
  int n_threads = 0;        // 0 = one per core
  int n_ctx = 0;            // per-sequence context; 0 = the model's training context
  bool prefix_cache = true; // reuse KV blocks of earlier sequences with the same prefix
};

// The KV budget that lets `max_seqs` sequences each fill the context (`n_ctx`, 0 = the model's
// training context), at most `cap` bytes: the default when no budget is configured. Blocks beyond
// it could only hold prefix-cache entries, and a budget far above what a small model can use
// becomes resident page by page as the prefix cache wanders through it.
// Encoders (ModelConfig::encoder) need none: 0.
size_t kv_bytes_for_context(const ModelConfig &model, int n_ctx, int max_seqs, size_t cap);

struct EngineStats {
  int running = 0;
  int waiting = 0;
  int kv_blocks_used = 0;   // held by sequences (cached-only blocks are reclaimable, not used)
  int kv_blocks_cached = 0; // in the prefix cache (some may also be in use)
  int kv_blocks_total = 0;
  uint64_t prefix_queried_tokens = 0;
  uint64_t prefix_hit_tokens = 0;
  uint64_t steps = 0;
  uint64_t prompt_tokens = 0;
  uint64_t generated_tokens = 0;
};

class Engine {
public:
  Engine(const Model &model, const EngineConfig &config);

  // Validates and queues a sequence; it starts at a later step().
  Result<SeqId> submit(GenerationRequest req);
  // Finishes the sequence with kCancelled at the next step (no-op when unknown or finished).
  void cancel(SeqId id);
  // The embedding of one input, computed between steps: its tokens run through the network in
  // chunks of max_batch_tokens on temporary KV blocks (never shared with the prefix cache, freed
  // before returning); the final hidden states are pooled as the model declares
  // (ModelConfig::pooling) and L2-normalised. kResourceExhausted means the free KV blocks cannot
  // hold the input while other sequences run: retry after later steps. Inputs longer than the
  // context are kContextLengthExceeded, naming `param`.
  Result<std::vector<float>> embed(std::span<const int32_t> tokens, std::string_view param);

  // One forward pass; returns the events it produced (at most one per sequence, plus
  // cancellations). Returns nothing when idle.
  std::vector<TokenEvent> step();

  // Tokens each sequence had in the last step's forward pass (decode token or prompt chunk), so
  // a caller timing step() can split its cost between the sequences.
  const std::vector<std::pair<SeqId, int>> &last_step_tokens() const { return step_tokens_; }

  bool idle() const { return running_.empty() && waiting_.empty() && cancelled_.empty(); }
  bool has_sequence(SeqId id) const;
  EngineStats stats() const;
  int n_ctx() const { return n_ctx_; }
  const Model &model() const { return model_; }
  kernels::ThreadPool &pool() { return pool_; }

private:
  struct Sequence {
    SeqId id = 0;
    GenerationRequest req;
    std::vector<int32_t> tokens; // prompt, then generated
    size_t n_prompt = 0;
    size_t n_evaluated = 0; // tokens whose K/V are in the cache
    size_t n_cached = 0;    // of those, taken from the prefix cache at admission
    std::vector<int32_t> blocks;
    size_t n_registered = 0; // leading blocks offered to the prefix cache
    uint64_t last_hash = 0;  // chain hash of block n_registered - 1 (the root when none)
    std::unique_ptr<Sampler> sampler;
    std::unique_ptr<TextStream> text;
    std::unique_ptr<TokenConstraint> constraint; // this sequence's own state (req's clone)
  };

  bool admit(Sequence &s);
  void release(Sequence &s);
  void register_blocks(Sequence &s);
  TokenEvent finish_event(Sequence &s, FinishReason r);
  // Samples the next token of `s` from its logits row (modified in place), honouring the
  // constraint; -1 when the constraint allows no token at all.
  int32_t choose(Sequence &s, std::span<float> logits);

  const Model &model_;
  EngineConfig config_;
  int n_ctx_;
  kernels::ThreadPool pool_;
  KvCache kv_;
  PrefixCache prefix_;
  Workspace ws_;
  std::vector<float> logits_;
  std::vector<float> raw_row_; // a row's raw logits, kept for logprobs
  LogprobScratch lp_scratch_;
  std::vector<float> hidden_; // embed()'s per-chunk hidden states
  std::vector<BatchToken> batch_;
  std::vector<std::pair<SeqId, int>> step_tokens_;
  std::vector<Sequence *> batch_owner_; // sequence of each want_logits row
  std::vector<int32_t> cand_;           // choose(): greedy candidates in rank order
  SeqId next_id_ = 1;
  std::deque<std::unique_ptr<Sequence>> waiting_;
  std::vector<std::unique_ptr<Sequence>> running_;
  std::vector<SeqId> cancelled_;
  std::mt19937_64 seed_rng_;
  EngineStats totals_;
};

} // namespace gantry::engine
