#include "engine/batch/engine.h"

#include "engine/model/pooling.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace gantry::engine {

const char *finish_reason_name(FinishReason r) {
  switch (r) {
  case FinishReason::kNone: return "";
  case FinishReason::kStop: return "stop";
  case FinishReason::kLength: return "length";
  case FinishReason::kCancelled: return "cancelled";
  }
  return "";
}

Status check_context(int64_t n_prompt, int64_t max_tokens, int n_ctx,
                     std::string_view prompt_param) {
  const std::string limit =
      "This model's maximum context length is " + std::to_string(n_ctx) + " tokens. However, ";
  if (n_prompt >= n_ctx) {
    return Err(ErrorCode::kContextLengthExceeded,
               limit + "your messages resulted in " + std::to_string(n_prompt) +
                   " tokens. Please reduce the length of the messages.",
               std::string(prompt_param));
  }
  // In 64 bits: max_tokens may be as large as INT32_MAX.
  if (n_prompt + max_tokens > n_ctx) {
    return Err(ErrorCode::kContextLengthExceeded,
               limit + "you requested " + std::to_string(n_prompt + max_tokens) + " tokens (" +
                   std::to_string(n_prompt) + " in the messages, " + std::to_string(max_tokens) +
                   " in the completion). Please reduce the length of the messages or completion.",
               "max_tokens");
  }
  return Ok();
}

namespace {
int context_for_config(const ModelConfig &m, const EngineConfig &c) {
  int n = m.n_ctx_train;
  if (c.n_ctx > 0)
    n = c.n_ctx;
  // An encoder has no positions past its training context (BERT's learned position table).
  if (m.encoder)
    n = std::min(n, m.n_ctx_train);
  return std::max(n, 1);
}

int context_for(const Model &m, const EngineConfig &c) { return context_for_config(m.config(), c); }
} // namespace

size_t kv_bytes_for_context(const ModelConfig &model, int n_ctx, int max_seqs, size_t cap) {
  if (model.encoder)
    return 0; // nothing is cached between an encoder's passes (the cache keeps its one block)
  EngineConfig c;
  c.n_ctx = n_ctx;
  const size_t blocks_per_seq =
      (static_cast<size_t>(context_for_config(model, c)) + KvCache::kBlockSize - 1) /
      KvCache::kBlockSize;
  const size_t need = KvCache::bytes_per_block(model.n_layer, model.kv_dim()) * blocks_per_seq *
                      static_cast<size_t>(std::max(max_seqs, 1));
  return std::min(need, cap);
}

Engine::Engine(const Model &model, const EngineConfig &config)
    : model_(model), config_(config), n_ctx_(context_for(model, config)), pool_(config.n_threads),
      kv_(model.config().n_layer, model.config().kv_dim(),
          KvCache::blocks_for_budget(model.config().n_layer, model.config().kv_dim(),
                                     config.kv_bytes)),
      prefix_(kv_), seed_rng_(std::random_device{}()) {
  config_.max_seqs = std::max(config_.max_seqs, 1);
  // Every generating sequence's token fits each step (as vLLM requires max_num_batched_tokens >=
  // max_num_seqs): with a smaller budget, decode tokens are served first in running order, so the
  // sequences at the front would take every step while the others, and any prompt still being
  // read, stalled until they finished.
  config_.max_batch_tokens = std::max(config_.max_batch_tokens, config_.max_seqs);
}

Result<SeqId> Engine::submit(GenerationRequest req) {
  if (model_.config().encoder) {
    return Err(Error::invalid("model '" + model_.config().name +
                                  "' is an embeddings model and cannot generate text",
                              "model"));
  }
  if (req.prompt.empty())
    return Err(Error::invalid("the prompt is empty", "prompt"));
  const int n_vocab = model_.config().n_vocab;
  for (int32_t t : req.prompt) {
    if (t < 0 || t >= n_vocab) {
      return Err(
          Error::invalid("prompt token id " + std::to_string(t) + " is out of range", "prompt"));
    }
  }
  if (req.max_tokens < 1)
    return Err(Error::invalid("max_tokens must be at least 1", "max_tokens"));
  GANTRY_TRY(req.sampling.validate());
  for (const auto &[t, b] : req.logit_bias) {
    if (t < 0 || t >= n_vocab) {
      return Err(Error::invalid(
          "logit_bias token id " + std::to_string(t) + " is outside the vocabulary", "logit_bias"));
    }
    if (!(b >= -100.0f && b <= 100.0f))
      return Err(Error::invalid("logit_bias values must be between -100 and 100", "logit_bias"));
  }
  if (req.logprobs < -1 || req.logprobs > kMaxTopLogprobs) {
    return Err(Error::invalid("logprobs must be between 0 and " + std::to_string(kMaxTopLogprobs),
                              "logprobs"));
  }
  GANTRY_TRY(
      check_context(static_cast<int64_t>(req.prompt.size()), req.max_tokens, n_ctx_, "prompt"));
  const size_t total = req.prompt.size() + static_cast<size_t>(req.max_tokens);
  if (KvCache::blocks_for_tokens(static_cast<int>(total)) > kv_.n_blocks()) {
    return Err(ErrorCode::kContextLengthExceeded,
               "the request needs " + std::to_string(total) +
                   " tokens of KV cache but the server's whole KV budget holds " +
                   std::to_string(kv_.n_blocks() * KvCache::kBlockSize),
               "max_tokens");
  }
  auto s = std::make_unique<Sequence>();
  s->id = next_id_++;
  uint64_t seed = req.sampling.seed ? *req.sampling.seed : seed_rng_();
  s->sampler = std::make_unique<Sampler>(req.sampling, seed, req.logit_bias);
  if (req.constraint)
    s->constraint = req.constraint->clone();
  s->text = std::make_unique<TextStream>(req.stop);
  s->tokens = req.prompt;
  s->n_prompt = req.prompt.size();
  s->req = std::move(req);
  SeqId id = s->id;
  waiting_.push_back(std::move(s));
  return id;
}

void Engine::cancel(SeqId id) {
  if (has_sequence(id))
    cancelled_.push_back(id);
}

bool Engine::has_sequence(SeqId id) const {
  for (const auto &s : running_)
    if (s->id == id)
      return true;
  for (const auto &s : waiting_)
    if (s->id == id)
      return true;
  return false;
}

EngineStats Engine::stats() const {
  EngineStats st = totals_;
  st.running = static_cast<int>(running_.size());
  st.waiting = static_cast<int>(waiting_.size());
  st.kv_blocks_used = kv_.n_used() - prefix_.evictable();
  st.kv_blocks_cached = prefix_.size();
  st.kv_blocks_total = kv_.n_blocks();
  st.prefix_queried_tokens = prefix_.queried_tokens();
  st.prefix_hit_tokens = prefix_.hit_tokens();
  return st;
}

bool Engine::admit(Sequence &s) {
  const int total = KvCache::blocks_for_tokens(static_cast<int>(s.n_prompt + s.req.max_tokens));
  // At least the last prompt token is evaluated, since its logits pick the first new token.
  std::vector<int32_t> reused;
  const uint64_t root = prefix_.root(s.req.cache_scope);
  if (config_.prefix_cache) {
    reused = prefix_.acquire(root, std::span<const int32_t>(s.tokens.data(), s.n_prompt - 1),
                             std::numeric_limits<int>::max());
  }
  const int need = total - static_cast<int>(reused.size());
  while (kv_.n_free() < need && prefix_.evict_one()) {
  }
  if (kv_.n_free() < need) {
    for (int32_t b : reused)
      kv_.release(b);
    return false;
  }
  s.blocks = std::move(reused);
  s.n_registered = s.blocks.size();
  s.n_cached = s.blocks.size() * KvCache::kBlockSize;
  s.n_evaluated = s.n_cached;
  s.last_hash = root;
  for (size_t i = 0; i < s.n_registered; ++i) {
    s.last_hash = prefix_.chain_hash(
        s.last_hash,
        std::span<const int32_t>(s.tokens.data() + i * KvCache::kBlockSize, KvCache::kBlockSize));
  }
  s.blocks.reserve(total);
  for (int i = 0; i < need; ++i)
    s.blocks.push_back(*kv_.allocate());
  return true;
}

void Engine::register_blocks(Sequence &s) {
  if (!config_.prefix_cache)
    return;
  while ((s.n_registered + 1) * KvCache::kBlockSize <= s.n_evaluated) {
    std::span<const int32_t> blk(s.tokens.data() + s.n_registered * KvCache::kBlockSize,
                                 KvCache::kBlockSize);
    const uint64_t parent = s.last_hash;
    s.last_hash = prefix_.chain_hash(parent, blk);
    prefix_.insert(parent, s.last_hash, blk, s.blocks[s.n_registered]);
    ++s.n_registered;
  }
}

void Engine::release(Sequence &s) {
  for (int32_t b : s.blocks)
    kv_.release(b);
  s.blocks.clear();
}

TokenEvent Engine::finish_event(Sequence &s, FinishReason r) {
  TokenEvent ev;
  ev.seq = s.id;
  ev.finish = r;
  ev.n_prompt = static_cast<int>(s.n_prompt);
  ev.n_generated = static_cast<int>(s.tokens.size() - s.n_prompt);
  ev.n_cached = static_cast<int>(s.n_cached);
  return ev;
}

int32_t Engine::choose(Sequence &s, std::span<float> logits) {
  if (!s.constraint)
    return s.sampler->sample(logits, s.tokens, s.n_prompt);
  s.sampler->adjust(logits, s.tokens, s.n_prompt);
  int32_t t = s.sampler->pick(logits);
  if (s.constraint->allows(t))
    return t;
  if (s.sampler->params().greedy()) {
    // Greedy wants the best allowed token: the next candidates in the order argmax ranks them
    // (higher logit, then lower id) are checked one by one, which is far cheaper than masking
    // the whole vocabulary and picks the same token. Masking remains the fallback.
    constexpr size_t kCandidates = 32;
    const size_t k = std::min(kCandidates, logits.size());
    cand_.resize(logits.size());
    for (size_t i = 0; i < logits.size(); ++i)
      cand_[i] = static_cast<int32_t>(i);
    const auto better = [&logits](int32_t a, int32_t b) {
      return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
    };
    std::partial_sort(cand_.begin(), cand_.begin() + static_cast<std::ptrdiff_t>(k), cand_.end(),
                      better);
    for (size_t i = 0; i < k; ++i) {
      if (logits[cand_[i]] == -INFINITY)
        break;
      if (cand_[i] != t && s.constraint->allows(cand_[i]))
        return cand_[i];
    }
  }
  // Masking only when the cheap check fails; a second draw from the masked logits gives
  // exactly the masked distribution (the rejected first draw carries no bias).
  s.constraint->apply(logits);
  t = s.sampler->pick(logits);
  return logits[t] != -INFINITY && s.constraint->allows(t) ? t : -1;
}

std::vector<TokenEvent> Engine::step() {
  std::vector<TokenEvent> events;
  step_tokens_.clear();

  // Cancellations first, so that their memory is available to this step's admissions.
  for (SeqId id : cancelled_) {
    auto rit =
        std::find_if(running_.begin(), running_.end(), [id](const auto &s) { return s->id == id; });
    if (rit != running_.end()) {
      release(**rit);
      events.push_back(finish_event(**rit, FinishReason::kCancelled));
      running_.erase(rit);
      continue;
    }
    auto wit =
        std::find_if(waiting_.begin(), waiting_.end(), [id](const auto &s) { return s->id == id; });
    if (wit != waiting_.end()) {
      events.push_back(finish_event(**wit, FinishReason::kCancelled));
      waiting_.erase(wit);
    }
  }
  cancelled_.clear();

  // FIFO admission: the head of the queue waits for memory rather than being overtaken, so a
  // long request cannot starve behind a stream of short ones.
  while (!waiting_.empty() && static_cast<int>(running_.size()) < config_.max_seqs &&
         admit(*waiting_.front())) {
    running_.push_back(std::move(waiting_.front()));
    waiting_.pop_front();
  }
  if (running_.empty())
    return events;

  // Decode tokens first (one per generating sequence), then prompt chunks in arrival order.
  batch_.clear();
  batch_owner_.clear();
  int budget = config_.max_batch_tokens;
  for (auto &s : running_) {
    if (s->n_evaluated < s->n_prompt || budget == 0)
      continue;
    BatchToken bt;
    bt.token = s->tokens[s->n_evaluated];
    bt.pos = static_cast<int32_t>(s->n_evaluated);
    bt.blocks = &s->blocks;
    bt.want_logits = true;
    batch_.push_back(bt);
    batch_owner_.push_back(s.get());
    step_tokens_.emplace_back(s->id, 1);
    ++s->n_evaluated; // the forward pass below writes its K/V
    --budget;
  }
  for (auto &s : running_) {
    if (s->n_evaluated >= s->n_prompt || budget == 0)
      continue;
    const size_t take = std::min<size_t>(budget, s->n_prompt - s->n_evaluated);
    for (size_t i = 0; i < take; ++i) {
      BatchToken bt;
      bt.pos = static_cast<int32_t>(s->n_evaluated + i);
      bt.token = s->tokens[bt.pos];
      bt.blocks = &s->blocks;
      bt.want_logits = s->n_evaluated + i + 1 == s->n_prompt;
      batch_.push_back(bt);
      if (bt.want_logits)
        batch_owner_.push_back(s.get());
    }
    s->n_evaluated += take;
    step_tokens_.emplace_back(s->id, static_cast<int>(take));
    budget -= static_cast<int>(take);
    totals_.prompt_tokens += take;
  }
  if (batch_.empty())
    return events;

  model_.forward(batch_, kv_, ws_, pool_, logits_);
  ++totals_.steps;
  // Blocks completed by this pass become reusable by later sequences.
  for (auto &s : running_)
    register_blocks(*s);

  // Decode tokens' owners come first in batch_owner_, prompt owners after, both in batch order,
  // which is also the order of the logits rows.
  const int n_vocab = model_.config().n_vocab;
  const Tokenizer &tok = model_.tokenizer();
  std::vector<Sequence *> finished;
  for (size_t row = 0; row < batch_owner_.size(); ++row) {
    Sequence &s = *batch_owner_[row];
    std::span<float> lg(logits_.data() + row * static_cast<size_t>(n_vocab), n_vocab);
    const bool want_lp = s.req.logprobs >= 0;
    if (want_lp)
      raw_row_.assign(lg.begin(), lg.end()); // sampling rewrites the row in place
    const int32_t t = choose(s, lg);
    if (t < 0) {
      // The constraint allows nothing (a dead grammar state): end rather than emit a token the
      // constraint refuses.
      TokenEvent ev = finish_event(s, FinishReason::kStop);
      ev.text = s.text->flush();
      finished.push_back(&s);
      events.push_back(std::move(ev));
      continue;
    }
    TokenEvent ev;
    ev.seq = s.id;
    ev.token = t;
    if (want_lp)
      ev.logprob = token_logprobs(raw_row_, t, s.req.logprobs, lp_scratch_, ev.top_logprobs);
    s.tokens.push_back(t);
    ++totals_.generated_tokens;
    const int n_gen = static_cast<int>(s.tokens.size() - s.n_prompt);
    if (!s.req.ignore_eos && tok.is_eog(t)) {
      ev.finish = FinishReason::kStop;
      ev.text = s.text->flush();
    } else {
      if (s.constraint)
        s.constraint->accept(t);
      bool stopped = false;
      const auto &shown = s.req.rendered_controls;
      const bool render = std::find(shown.begin(), shown.end(), t) != shown.end();
      ev.text = s.text->push(tok.token_to_piece(t, render), stopped);
      if (stopped) {
        ev.finish = FinishReason::kStop;
      } else if (s.constraint && s.constraint->finished()) {
        // Nothing but the end can follow: stop here instead of spending a step on it.
        ev.finish = FinishReason::kStop;
        ev.text += s.text->flush();
      } else if (n_gen >= s.req.max_tokens) {
        ev.finish = FinishReason::kLength;
        ev.text += s.text->flush();
      }
    }
    ev.n_prompt = static_cast<int>(s.n_prompt);
    ev.n_generated = n_gen;
    ev.n_cached = static_cast<int>(s.n_cached);
    if (ev.finish != FinishReason::kNone)
      finished.push_back(&s);
    events.push_back(std::move(ev));
  }
  for (Sequence *s : finished) {
    release(*s);
    running_.erase(std::find_if(running_.begin(), running_.end(),
                                [s](const auto &p) { return p.get() == s; }));
  }
  return events;
}

Result<std::vector<float>> Engine::embed(std::span<const int32_t> tokens, std::string_view param) {
  const int n = static_cast<int>(tokens.size());
  const int n_vocab = model_.config().n_vocab;
  if (tokens.empty())
    return Err(Error::invalid("the input is empty", std::string(param)));
  for (int32_t t : tokens) {
    if (t < 0 || t >= n_vocab) {
      return Err(Error::invalid("token id " + std::to_string(t) + " is outside the vocabulary",
                                std::string(param)));
    }
  }
  // An encoder runs the whole input in one pass without the KV cache (bert.h).
  const bool encoder = model_.config().encoder;
  const int limit = encoder ? n_ctx_ : std::min(n_ctx_, kv_.n_blocks() * KvCache::kBlockSize);
  if (n > limit) {
    return Err(ErrorCode::kContextLengthExceeded,
               "This model's maximum context length is " + std::to_string(limit) +
                   " tokens, however you requested " + std::to_string(n) +
                   " tokens in the input. Please reduce the length of the input.",
               std::string(param));
  }
  if (encoder) {
    model_.encode(tokens, ws_, pool_, hidden_);
    totals_.prompt_tokens += static_cast<uint64_t>(n);
    return pool_embedding(hidden_, n, model_.config().n_embd, model_.config().pooling);
  }
  const int need = KvCache::blocks_for_tokens(n);
  while (kv_.n_free() < need && prefix_.evict_one()) {
  }
  if (kv_.n_free() < need) {
    return Err(ErrorCode::kResourceExhausted, "the KV cache is busy; retry after a step");
  }
  std::vector<int32_t> blocks;
  blocks.reserve(need);
  for (int i = 0; i < need; ++i)
    blocks.push_back(*kv_.allocate());

  const size_t d = model_.config().n_embd;
  const Pooling pooling = model_.config().pooling;
  std::vector<float> out(d, 0.0f);
  std::vector<double> sum(pooling == Pooling::kMean ? d : 0, 0.0);
  std::vector<BatchToken> batch;
  for (int start = 0; start < n; start += config_.max_batch_tokens) {
    const int end = std::min(n, start + config_.max_batch_tokens);
    batch.clear();
    for (int p = start; p < end; ++p)
      batch.push_back({tokens[p], p, &blocks, false});
    model_.forward_hidden(batch, kv_, ws_, pool_, hidden_);
    for (int p = start; p < end; ++p) {
      const float *h = hidden_.data() + static_cast<size_t>(p - start) * d;
      if (pooling == Pooling::kMean) {
        for (size_t i = 0; i < d; ++i)
          sum[i] += h[i];
      } else if ((pooling == Pooling::kCls && p == 0) ||
                 (pooling == Pooling::kLast && p == n - 1)) {
        std::copy(h, h + d, out.begin());
      }
    }
  }
  for (int32_t b : blocks)
    kv_.release(b);
  if (pooling == Pooling::kMean) {
    for (size_t i = 0; i < d; ++i)
      out[i] = static_cast<float>(sum[i] / n);
  }
  l2_normalize(out);
  totals_.prompt_tokens += static_cast<uint64_t>(n);
  return out;
}

} // namespace gantry::engine
