#include "engine/model/model.h"

#include "engine/model/ops.h"

#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <cassert>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string_view>
#include <thread>

namespace gantry::engine {
namespace {

using kernels::WeightView;

Result<const gguf::TensorInfo *> need_tensor(const gguf::GgufFile &f, const std::string &name) {
  const gguf::TensorInfo *t = f.tensor(name);
  if (!t)
    return Err(Error::corrupt("missing tensor '" + name + "'"));
  return t;
}

Result<WeightView> matrix(const gguf::GgufFile &f, const std::string &name, int64_t rows,
                          int64_t cols) {
  GANTRY_ASSIGN_OR_RETURN(const gguf::TensorInfo *t, need_tensor(f, name));
  if (!kernels::is_supported(t->type)) {
    return Err(Error::unsupported("tensor '" + name + "' has type " +
                                  std::string(gguf::type_traits(t->type).name) +
                                  ", which this engine does not support (supported: F32, F16, "
                                  "BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL, Q2_K, Q3_K, Q4_K, "
                                  "Q5_K, Q6_K)"));
  }
  if (t->dims.size() != 2 || t->dims[0] != static_cast<uint64_t>(cols) ||
      t->dims[1] != static_cast<uint64_t>(rows)) {
    return Err(Error::corrupt("tensor '" + name + "' has shape [" + std::to_string(t->dims[0]) +
                              ", " + std::to_string(t->dims.size() > 1 ? t->dims[1] : 1) +
                              "], expected [" + std::to_string(cols) + ", " + std::to_string(rows) +
                              "]"));
  }
  return kernels::make_weight_view(t->type, t->data, rows, cols);
}

Result<std::vector<float>> vector_f32(const gguf::GgufFile &f, const std::string &name, int64_t n) {
  GANTRY_ASSIGN_OR_RETURN(const gguf::TensorInfo *t, need_tensor(f, name));
  if (t->n_elements != static_cast<uint64_t>(n)) {
    return Err(Error::corrupt("tensor '" + name + "' has " + std::to_string(t->n_elements) +
                              " elements, expected " + std::to_string(n)));
  }
  if (!kernels::is_supported(t->type)) {
    return Err(Error::unsupported("tensor '" + name + "' has unsupported type " +
                                  std::string(gguf::type_traits(t->type).name)));
  }
  std::vector<float> out(n);
  kernels::dequantize_row(t->type, t->data, out.data(), n);
  return out;
}

// Rows [first, first + n) of a dense matrix, as a matrix of its own.
WeightView row_range(const WeightView &w, int64_t first, int64_t n) {
  WeightView v = w;
  v.data = static_cast<const char *>(w.data) + first * w.row_stride;
  v.rows = n;
  return v;
}

template <typename T> void grow(std::vector<T> &v, size_t n) {
  if (v.size() < n)
    v.resize(n);
}

} // namespace

Result<std::unique_ptr<Model>> Model::load(const std::string &path, const Progress &progress,
                                           int n_ctx_seq) {
  std::unique_ptr<Model> m(new Model());
  GANTRY_ASSIGN_OR_RETURN(m->file_, gguf::GgufFile::open(path));
  GANTRY_ASSIGN_OR_RETURN(m->config_, read_model_config(*m->file_));
  if (m->config_.name.empty()) {
    auto slash = path.find_last_of('/');
    std::string stem = slash == std::string::npos ? path : path.substr(slash + 1);
    if (stem.size() > 5 && stem.ends_with(".gguf"))
      stem.resize(stem.size() - 5);
    m->config_.name = stem;
  }
  GANTRY_ASSIGN_OR_RETURN(m->tokenizer_, Tokenizer::from_gguf(*m->file_));
  if (m->tokenizer_->n_vocab() != m->config_.n_vocab) {
    return Err(Error::corrupt("tokenizer has " + std::to_string(m->tokenizer_->n_vocab()) +
                              " tokens but token_embd.weight has " +
                              std::to_string(m->config_.n_vocab) + " rows"));
  }
  if (m->config_.encoder) {
    GANTRY_ASSIGN_OR_RETURN(m->encoder_, BertEncoder::bind(*m->file_, m->config_));
  } else {
    GANTRY_TRY(m->bind_weights(n_ctx_seq > 0 ? n_ctx_seq : m->config_.n_ctx_train));
  }
  std::vector<std::pair<const void *, size_t>> released;
  if (!m->config_.encoder)
    released = m->pack_weights();
  // Touch every weight page once so that the first request does not pay for page faults and
  // a long load shows progress; the pages stay shared with the page cache (no copy). Tensors
  // that were repacked are skipped: their pages were released and are not read again.
  if (progress) {
    uint64_t total = 0, done = 0;
    for (const auto &t : m->file_->tensors())
      total += t.n_bytes;
    volatile uint8_t sink = 0;
    for (const auto &t : m->file_->tensors()) {
      const bool repacked = std::any_of(released.begin(), released.end(), [&](const auto &r) {
        const auto *begin = static_cast<const uint8_t *>(r.first);
        return t.data >= begin && t.data < begin + r.second;
      });
      for (uint64_t off = 0; off < t.n_bytes && !repacked; off += 4096)
        sink = sink + t.data[off];
      done += t.n_bytes;
      progress(done, total);
    }
    (void)sink;
  }
  return m;
}

Model::Arena::~Arena() {
  if (base != nullptr)
    munmap(base, size);
}

std::vector<std::pair<const void *, size_t>> Model::decode_weight_ranges() const {
  std::vector<std::pair<const void *, size_t>> out;
  auto add = [&](const WeightView &v) {
    if (v.data != nullptr && v.rows > 0)
      out.emplace_back(v.data, static_cast<size_t>(v.rows) * v.row_stride);
  };
  for (const Layer &l : layers_) {
    for (const WeightView *v : {&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down})
      add(*v);
  }
  add(output_);
  return out;
}

size_t Model::decode_weight_bytes() const {
  size_t n = 0;
  for (const auto &r : decode_weight_ranges())
    n += r.second;
  return n;
}

std::vector<std::pair<const void *, size_t>> Model::pack_weights() {
  std::vector<std::pair<const void *, size_t>> released;
  const char *off = std::getenv("GANTRY_NO_REPACK");
  if (off != nullptr && *off != '\0' && std::string_view(off) != "0")
    return released;
  // Matrices that share one matmul call (Q/K/V, gate/up) are packed all or none, so that the
  // call's row chunks stay on 16-row group boundaries for all of them.
  std::vector<WeightView *> todo;
  auto want = [&](std::initializer_list<WeightView *> views) {
    for (const WeightView *v : views) {
      if (!kernels::can_pack_rows16(*v))
        return;
    }
    todo.insert(todo.end(), views.begin(), views.end());
  };
  for (Layer &l : layers_) {
    want({&l.wq, &l.wk, &l.wv});
    want({&l.wo});
    want({&l.w_gate, &l.w_up});
    want({&l.w_down});
  }
  // A tied head is token_embd itself, which the embedding lookup reads row by row.
  if (!config_.tied_output)
    want({&output_});
  if (todo.empty())
    return released;
  constexpr size_t kAlign = 64, kHuge = size_t{2} << 20;
  size_t total = 0;
  for (const WeightView *v : todo)
    total += (kernels::packed_bytes(*v) + kAlign - 1) / kAlign * kAlign;
  total = (total + kHuge - 1) / kHuge * kHuge;
  void *base = mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (base == MAP_FAILED)
    return released;                         // no memory for a copy: decode runs on the mapped rows
  (void)madvise(base, total, MADV_HUGEPAGE); // advice: 4 KiB pages work too, a little slower
  packed_.base = base;
  packed_.size = total;
  std::vector<char *> dst;
  char *at = static_cast<char *>(base);
  for (WeightView *v : todo) {
    released.emplace_back(v->data, kernels::packed_bytes(*v));
    dst.push_back(at);
    at += (kernels::packed_bytes(*v) + kAlign - 1) / kAlign * kAlign;
  }
  // Packing a 1 GiB model is a second of copying and page clearing on one core: the matrices are
  // shared out among threads (each views a disjoint destination).
  std::atomic<size_t> next{0};
  auto worker = [&] {
    for (size_t i; (i = next.fetch_add(1)) < todo.size();) {
      *todo[i] = kernels::pack_rows16(*todo[i], dst[i]);
      // At once, so that the load never holds a second copy of the model.
      file_->release_pages(released[i].first, released[i].second);
    }
  };
  const unsigned n_threads = std::clamp(std::thread::hardware_concurrency(), 1u, 8u);
  std::vector<std::thread> threads;
  for (unsigned t = 1; t < n_threads; ++t)
    threads.emplace_back(worker);
  worker();
  for (auto &t : threads)
    t.join();
  for (const auto &r : released)
    repacked_bytes_ += r.second;
  return released;
}

Status Model::bind_weights(int n_ctx_seq) {
  const auto &c = config_;
  const auto &f = *file_;
  token_embd_ = f.tensor("token_embd.weight");
  if (!kernels::is_supported(token_embd_->type)) {
    return Err(Error::unsupported("tensor 'token_embd.weight' has unsupported type " +
                                  std::string(gguf::type_traits(token_embd_->type).name)));
  }
  GANTRY_ASSIGN_OR_RETURN(output_norm_, vector_f32(f, "output_norm.weight", c.n_embd));
  if (c.tied_output) {
    output_ = kernels::make_weight_view(token_embd_->type, token_embd_->data, c.n_vocab, c.n_embd);
  } else {
    GANTRY_ASSIGN_OR_RETURN(output_, matrix(f, "output.weight", c.n_vocab, c.n_embd));
  }
  if (f.tensor("rope_freqs.weight")) {
    GANTRY_ASSIGN_OR_RETURN(rope_freq_factors_, vector_f32(f, "rope_freqs.weight", c.rope_dim / 2));
  } else {
    // llama_model::get_rope_factors: long factors only when the context exceeds the original.
    const char *name =
        n_ctx_seq > c.n_ctx_orig ? "rope_factors_long.weight" : "rope_factors_short.weight";
    if (f.tensor(name)) {
      GANTRY_ASSIGN_OR_RETURN(rope_freq_factors_, vector_f32(f, name, c.rope_dim / 2));
    }
  }
  layers_.resize(c.n_layer);
  for (int i = 0; i < c.n_layer; ++i) {
    Layer &l = layers_[i];
    const std::string p = "blk." + std::to_string(i) + ".";
    GANTRY_ASSIGN_OR_RETURN(l.attn_norm, vector_f32(f, p + "attn_norm.weight", c.n_embd));
    GANTRY_ASSIGN_OR_RETURN(l.ffn_norm, vector_f32(f, p + "ffn_norm.weight", c.n_embd));
    if (f.tensor(p + "attn_qkv.weight")) {
      // Fused Q|K|V rows (Phi-3): three views into the one tensor, so the matmuls stay shared.
      GANTRY_ASSIGN_OR_RETURN(
          auto qkv, matrix(f, p + "attn_qkv.weight", c.q_dim() + 2 * c.kv_dim(), c.n_embd));
      l.wq = row_range(qkv, 0, c.q_dim());
      l.wk = row_range(qkv, c.q_dim(), c.kv_dim());
      l.wv = row_range(qkv, c.q_dim() + c.kv_dim(), c.kv_dim());
    } else {
      GANTRY_ASSIGN_OR_RETURN(l.wq, matrix(f, p + "attn_q.weight", c.q_dim(), c.n_embd));
      GANTRY_ASSIGN_OR_RETURN(l.wk, matrix(f, p + "attn_k.weight", c.kv_dim(), c.n_embd));
      GANTRY_ASSIGN_OR_RETURN(l.wv, matrix(f, p + "attn_v.weight", c.kv_dim(), c.n_embd));
    }
    GANTRY_ASSIGN_OR_RETURN(l.wo, matrix(f, p + "attn_output.weight", c.n_embd, c.q_dim()));
    if (c.fused_gate_up) {
      // ffn_up holds the gate rows, then the up rows (llama.cpp's swiglu of the halves).
      GANTRY_ASSIGN_OR_RETURN(auto gate_up, matrix(f, p + "ffn_up.weight", 2 * c.n_ff, c.n_embd));
      l.w_gate = row_range(gate_up, 0, c.n_ff);
      l.w_up = row_range(gate_up, c.n_ff, c.n_ff);
    } else {
      GANTRY_ASSIGN_OR_RETURN(l.w_gate, matrix(f, p + "ffn_gate.weight", c.n_ff, c.n_embd));
      GANTRY_ASSIGN_OR_RETURN(l.w_up, matrix(f, p + "ffn_up.weight", c.n_ff, c.n_embd));
    }
    GANTRY_ASSIGN_OR_RETURN(l.w_down, matrix(f, p + "ffn_down.weight", c.n_embd, c.n_ff));
    if (c.post_norms) {
      GANTRY_ASSIGN_OR_RETURN(l.post_attn_norm,
                              vector_f32(f, p + "post_attention_norm.weight", c.n_embd));
      GANTRY_ASSIGN_OR_RETURN(l.post_ffn_norm, vector_f32(f, p + "post_ffw_norm.weight", c.n_embd));
    }
    if (c.qk_norm) {
      GANTRY_ASSIGN_OR_RETURN(l.q_norm, vector_f32(f, p + "attn_q_norm.weight", c.head_dim));
      GANTRY_ASSIGN_OR_RETURN(l.k_norm, vector_f32(f, p + "attn_k_norm.weight", c.head_dim));
    }
    if (c.qkv_bias) {
      GANTRY_ASSIGN_OR_RETURN(l.bq, vector_f32(f, p + "attn_q.bias", c.q_dim()));
      GANTRY_ASSIGN_OR_RETURN(l.bk, vector_f32(f, p + "attn_k.bias", c.kv_dim()));
      GANTRY_ASSIGN_OR_RETURN(l.bv, vector_f32(f, p + "attn_v.bias", c.kv_dim()));
    }
  }
  return Ok();
}

void Model::attention(std::span<const BatchToken> batch, int layer, KvCache &kv, Workspace &ws,
                      kernels::ThreadPool &pool) const {
  const auto &c = config_;
  const int n = static_cast<int>(batch.size());
  const int hd = c.head_dim;
  const int group = c.n_head / c.n_head_kv;
  // Q already carries attn_scale when the family scales it first; a soft-cap divides the scores
  // by the cap before tanh (llama.cpp folds that into the flash-attention scale too).
  float scale = c.q_prescale ? 1.0f : c.attn_scale;
  if (c.attn_softcap > 0.0f)
    scale /= c.attn_softcap;
  const int window = c.is_swa(layer) ? c.n_swa : 0;
  if (static_cast<int>(ws.scores.size()) < pool.size())
    ws.scores.resize(pool.size());

  // One work item per (token, KV head): independent, plentiful enough to balance, and each
  // K/V row is read once for all the query heads that share it.
  // Waking the pool costs microseconds (far more on a busy machine), so small attention work
  // (decode of a tiny model) runs on the engine thread alone.
  int64_t work = 0;
  for (const auto &bt : batch)
    work += static_cast<int64_t>(bt.pos + 1) * c.n_head * hd * 2;
  const int64_t items = static_cast<int64_t>(n) * c.n_head_kv;
  const int64_t grain = work < (int64_t{1} << 16) ? items : 2;
  pool.parallel_for(items, grain, [&](int64_t b, int64_t e, int thread) {
    std::vector<float> &scores = ws.scores[thread];
    const float *qs[64];
    float *outs[64];
    for (int64_t item = b; item < e; ++item) {
      const int t = static_cast<int>(item / c.n_head_kv);
      const int g = static_cast<int>(item % c.n_head_kv);
      const BatchToken &bt = batch[t];
      const int n_ctx = bt.pos + 1;
      // llama.cpp masks key position p0 for query p1 when p1 - p0 >= n_swa.
      const int first = window > 0 ? std::max(0, n_ctx - window) : 0;
      grow(scores, attention_scratch(group, n_ctx, hd));
      for (int i = 0; i < group; ++i) {
        const int h = g * group + i;
        qs[i] = ws.q.data() + static_cast<size_t>(t) * c.q_dim() + h * hd;
        outs[i] = ws.attn.data() + static_cast<size_t>(t) * c.q_dim() + h * hd;
      }
      const auto &blocks = *bt.blocks;
      attention_group(
          qs, outs, group, n_ctx, hd, scale,
          [&](int j) {
            return kv.k(layer, blocks[j / KvCache::kBlockSize], j % KvCache::kBlockSize) + g * hd;
          },
          [&](int j) {
            return kv.v(layer, blocks[j / KvCache::kBlockSize], j % KvCache::kBlockSize) + g * hd;
          },
          c.kv_dim(), KvCache::kBlockSize, scores.data(), first, c.attn_softcap);
    }
  });
}

int Model::run_layers(std::span<const BatchToken> batch, KvCache &kv, Workspace &ws,
                      kernels::ThreadPool &pool, bool logit_rows_only) const {
  const auto &c = config_;
  int n = static_cast<int>(batch.size());
  const size_t d = c.n_embd;
  grow(ws.x, n * d);
  grow(ws.xn, n * d);
  grow(ws.q, static_cast<size_t>(n) * c.q_dim());
  grow(ws.k, static_cast<size_t>(n) * c.kv_dim());
  grow(ws.v, static_cast<size_t>(n) * c.kv_dim());
  grow(ws.attn, static_cast<size_t>(n) * c.q_dim());
  grow(ws.gate, static_cast<size_t>(n) * c.n_ff);
  grow(ws.up, static_cast<size_t>(n) * c.n_ff);
  grow(ws.out, n * d);
  // A token that is its sequence's only one in this batch is computed as llama.cpp computes a
  // decode step; the others as its prompt batches (a sequence's tokens are contiguous here).
  grow(ws.single, static_cast<size_t>(n));
  for (int t = 0; t < n; ++t) {
    const auto *b = batch[t].blocks;
    ws.single[t] = (t == 0 || batch[t - 1].blocks != b) && (t + 1 == n || batch[t + 1].blocks != b);
  }
  const uint8_t *single = ws.single.data();

  RopeParams rp;
  rp.n_rot = c.rope_dim;
  rp.freq_base = c.rope_freq_base;
  rp.freq_scale = c.rope_freq_scale;
  rp.neox = c.rope_neox;
  rp.freq_factors = &rope_freq_factors_;
  rp.mscale = c.rope_attn_factor;
  // Sliding-window layers may rotate with their own base and scale (gemma3's local layers).
  RopeParams rp_swa = rp;
  rp_swa.freq_base = c.rope_freq_base_swa;
  rp_swa.freq_scale = c.rope_freq_scale_swa;
  const bool own_swa_rope =
      c.n_swa > 0 && (rp_swa.freq_base != rp.freq_base || rp_swa.freq_scale != rp.freq_scale);
  const int half = c.rope_dim / 2;
  grow(ws.rope_cos, static_cast<size_t>(n) * half);
  grow(ws.rope_sin, static_cast<size_t>(n) * half);
  if (own_swa_rope) {
    grow(ws.rope_cos_swa, static_cast<size_t>(n) * half);
    grow(ws.rope_sin_swa, static_cast<size_t>(n) * half);
  }
  for (int t = 0; t < n; ++t) {
    rope_angles(batch[t].pos, rp, ws.rope_cos.data() + t * half, ws.rope_sin.data() + t * half);
    if (own_swa_rope) {
      rope_angles(batch[t].pos, rp_swa, ws.rope_cos_swa.data() + t * half,
                  ws.rope_sin_swa.data() + t * half);
    }
  }
  const size_t embd_row = token_embd_->row_bytes();
  for (int t = 0; t < n; ++t) {
    kernels::dequantize_row(token_embd_->type, token_embd_->data + embd_row * batch[t].token,
                            ws.x.data() + t * d, c.n_embd);
    if (c.embd_scale != 1.0f)
      kernels::scale(ws.x.data() + t * d, c.embd_scale, c.n_embd);
  }

  for (int li = 0; li < c.n_layer; ++li) {
    const Layer &l = layers_[li];
    kernels::rmsnorm_rows(ws.x.data(), l.attn_norm.data(), ws.xn.data(), n, c.n_embd, c.rms_eps);
    if (kernels::can_share_activations(l.wq, l.wk) && kernels::can_share_activations(l.wq, l.wv)) {
      // One quantization of xn and one pool synchronization for the three (decode pays per call).
      const kernels::MatmulOut qkv[3] = {{&l.wq, ws.q.data(), l.wq.rows},
                                         {&l.wk, ws.k.data(), l.wk.rows},
                                         {&l.wv, ws.v.data(), l.wv.rows}};
      kernels::matmul_multi(qkv, 3, ws.xn.data(), n, pool, single);
    } else {
      kernels::matmul(l.wq, ws.xn.data(), n, ws.q.data(), pool, single);
      kernels::matmul(l.wk, ws.xn.data(), n, ws.k.data(), pool, single);
      kernels::matmul(l.wv, ws.xn.data(), n, ws.v.data(), pool, single);
    }
    for (int t = 0; t < n; ++t) {
      float *q = ws.q.data() + static_cast<size_t>(t) * c.q_dim();
      float *k = ws.k.data() + static_cast<size_t>(t) * c.kv_dim();
      float *v = ws.v.data() + static_cast<size_t>(t) * c.kv_dim();
      if (c.qkv_bias) {
        kernels::add(q, l.bq.data(), q, c.q_dim());
        kernels::add(k, l.bk.data(), k, c.kv_dim());
        kernels::add(v, l.bv.data(), v, c.kv_dim());
      }
      if (c.qk_norm) {
        kernels::rmsnorm_rows(q, l.q_norm.data(), q, c.n_head, c.head_dim, c.rms_eps);
        kernels::rmsnorm_rows(k, l.k_norm.data(), k, c.n_head_kv, c.head_dim, c.rms_eps);
      }
      const bool swa_rope = own_swa_rope && c.is_swa(li);
      const float *cs = (swa_rope ? ws.rope_cos_swa : ws.rope_cos).data() + t * half;
      const float *sn = (swa_rope ? ws.rope_sin_swa : ws.rope_sin).data() + t * half;
      rope_apply(q, c.n_head, c.head_dim, rp, cs, sn);
      rope_apply(k, c.n_head_kv, c.head_dim, rp, cs, sn);
      if (c.q_prescale)
        kernels::scale(q, c.attn_scale, c.q_dim());
      const int32_t block = (*batch[t].blocks)[batch[t].pos / KvCache::kBlockSize];
      const int slot = batch[t].pos % KvCache::kBlockSize;
      // fp16 like llama.cpp's cache: besides halving the memory, the same rounding brings our
      // per-step log-probabilities measurably closer to its recorded ones
      // (tests/data/stories-greedy.json top-5: mean |delta| 1.53e-3 with f32 -> 1.42e-3, max
      // 1.42e-2 -> 1.27e-2), which matters at near-ties of greedy decoding.
      kernels::fp32_to_fp16_row(k, kv.k(li, block, slot), c.kv_dim());
      kernels::fp32_to_fp16_row(v, kv.v(li, block, slot), c.kv_dim());
    }
    attention(batch, li, kv, ws, pool);
    kernels::matmul(l.wo, ws.attn.data(), n, ws.out.data(), pool, single);
    if (logit_rows_only && li == c.n_layer - 1) {
      int kept = 0;
      for (int t = 0; t < n; ++t) {
        if (!batch[t].want_logits)
          continue;
        if (kept != t) {
          std::memcpy(ws.x.data() + kept * d, ws.x.data() + t * d, d * sizeof(float));
          std::memcpy(ws.out.data() + kept * d, ws.out.data() + t * d, d * sizeof(float));
        }
        ++kept;
      }
      n = kept;
      if (n == 0)
        return 0;
      // llama.cpp's last feed-forward sees only these rows: one alone for a single request.
      std::fill(ws.single.begin(), ws.single.begin() + n, uint8_t{1});
    }
    if (c.post_norms) {
      kernels::rmsnorm_rows(ws.out.data(), l.post_attn_norm.data(), ws.out.data(), n, c.n_embd,
                            c.rms_eps);
    }
    kernels::add(ws.x.data(), ws.out.data(), ws.x.data(), n * d);

    kernels::rmsnorm_rows(ws.x.data(), l.ffn_norm.data(), ws.xn.data(), n, c.n_embd, c.rms_eps);
    if (kernels::can_share_activations(l.w_gate, l.w_up)) {
      const kernels::MatmulOut gate_up[2] = {{&l.w_gate, ws.gate.data(), l.w_gate.rows},
                                             {&l.w_up, ws.up.data(), l.w_up.rows}};
      kernels::matmul_multi(gate_up, 2, ws.xn.data(), n, pool, single);
    } else {
      kernels::matmul(l.w_gate, ws.xn.data(), n, ws.gate.data(), pool, single);
      kernels::matmul(l.w_up, ws.xn.data(), n, ws.up.data(), pool, single);
    }
    if (c.gelu_ffn) {
      kernels::gelu_mul(ws.gate.data(), ws.up.data(), ws.gate.data(),
                        static_cast<int64_t>(n) * c.n_ff);
    } else {
      for (int t = 0; t < n; ++t) {
        const size_t o = static_cast<size_t>(t) * c.n_ff;
        kernels::silu_mul(ws.gate.data() + o, ws.up.data() + o, ws.gate.data() + o, c.n_ff);
      }
    }
    kernels::matmul(l.w_down, ws.gate.data(), n, ws.out.data(), pool, single);
    if (c.post_norms) {
      kernels::rmsnorm_rows(ws.out.data(), l.post_ffn_norm.data(), ws.out.data(), n, c.n_embd,
                            c.rms_eps);
    }
    kernels::add(ws.x.data(), ws.out.data(), ws.x.data(), n * d);
  }
  return n;
}

void Model::forward(std::span<const BatchToken> batch, KvCache &kv, Workspace &ws,
                    kernels::ThreadPool &pool, std::vector<float> &logits) const {
  assert(!encoder_ && "an encoder has no LM head");
  const auto &c = config_;
  // Only the rows that will be sampled go through the last feed-forward and the output head: for
  // a prompt chunk that is one row out of hundreds, and the head is the largest matrix of small
  // models.
  const int n_out = run_layers(batch, kv, ws, pool, /*logit_rows_only=*/true);
  kernels::rmsnorm_rows(ws.x.data(), output_norm_.data(), ws.xn.data(), n_out, c.n_embd, c.rms_eps);
  logits.resize(static_cast<size_t>(n_out) * c.n_vocab);
  if (n_out > 0)
    kernels::matmul(output_, ws.xn.data(), n_out, logits.data(), pool, ws.single.data());
  if (c.final_softcap > 0.0f)
    kernels::tanh_softcap(logits.data(), c.final_softcap, static_cast<int64_t>(n_out) * c.n_vocab);
}

void Model::forward_hidden(std::span<const BatchToken> batch, KvCache &kv, Workspace &ws,
                           kernels::ThreadPool &pool, std::vector<float> &hidden) const {
  assert(!encoder_ && "encoders run encode()");
  const auto &c = config_;
  const size_t d = c.n_embd;
  run_layers(batch, kv, ws, pool, /*logit_rows_only=*/false);
  hidden.resize(batch.size() * d);
  kernels::rmsnorm_rows(ws.x.data(), output_norm_.data(), hidden.data(),
                        static_cast<int64_t>(batch.size()), c.n_embd, c.rms_eps);
}

void Model::encode(std::span<const int32_t> tokens, Workspace &ws, kernels::ThreadPool &pool,
                   std::vector<float> &hidden) const {
  assert(encoder_ && "encode() on a decoder model");
  encoder_->encode(tokens, ws, pool, hidden);
}

} // namespace gantry::engine
