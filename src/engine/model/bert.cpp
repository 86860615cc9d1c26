#include "engine/model/bert.h"

#include "engine/model/model.h"
#include "engine/model/ops.h"

#include <algorithm>
#include <cmath>
#include <string>

namespace gantry::engine {
namespace {

using kernels::WeightView;

Result<const gguf::TensorInfo *> need_tensor(const gguf::GgufFile &f, const std::string &name) {
  const gguf::TensorInfo *t = f.tensor(name);
  if (!t)
    return Err(Error::corrupt("missing tensor '" + name + "'"));
  if (!kernels::is_supported(t->type)) {
    return Err(Error::unsupported("tensor '" + name + "' has type " +
                                  std::string(gguf::type_traits(t->type).name) +
                                  ", which this engine does not support"));
  }
  return t;
}

Result<WeightView> matrix(const gguf::GgufFile &f, const std::string &name, int64_t rows,
                          int64_t cols) {
  GANTRY_ASSIGN_OR_RETURN(const gguf::TensorInfo *t, need_tensor(f, name));
  if (t->dims.size() != 2 || t->dims[0] != static_cast<uint64_t>(cols) ||
      t->dims[1] != static_cast<uint64_t>(rows)) {
    return Err(Error::corrupt("tensor '" + name + "' does not have shape [" + std::to_string(cols) +
                              ", " + std::to_string(rows) + "]"));
  }
  return kernels::make_weight_view(t->type, t->data, rows, cols);
}

Result<std::vector<float>> vector_f32(const gguf::GgufFile &f, const std::string &name, int64_t n) {
  GANTRY_ASSIGN_OR_RETURN(const gguf::TensorInfo *t, need_tensor(f, name));
  if (t->n_elements != static_cast<uint64_t>(n)) {
    return Err(Error::corrupt("tensor '" + name + "' has " + std::to_string(t->n_elements) +
                              " elements, expected " + std::to_string(n)));
  }
  std::vector<float> out(n);
  kernels::dequantize_row(t->type, t->data, out.data(), n);
  return out;
}

// An optional bias: empty when the file has none (llama.cpp's TENSOR_NOT_REQUIRED).
Result<std::vector<float>> maybe_vector(const gguf::GgufFile &f, const std::string &name,
                                        int64_t n) {
  if (!f.tensor(name))
    return std::vector<float>{};
  return vector_f32(f, name, n);
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

// ggml_norm then the weight and bias (llama.cpp's build_norm with LLM_NORM): the mean as a float,
// the variance of the centred values, one scale 1/sqrtf(var + eps).
void layer_norm(const float *x, const std::vector<float> &w, const std::vector<float> &b,
                float *out, int n, float eps) {
  double sum = 0;
  for (int i = 0; i < n; ++i)
    sum += x[i];
  const float mean = static_cast<float>(sum / n);
  double var = 0;
  for (int i = 0; i < n; ++i) {
    const float d = x[i] - mean;
    out[i] = d;
    var += static_cast<double>(d) * d;
  }
  const float scale = 1.0f / std::sqrt(static_cast<float>(var / n) + eps);
  for (int i = 0; i < n; ++i)
    out[i] = out[i] * scale * w[i] + b[i];
}

void add_bias(float *y, const std::vector<float> &b, int n_tokens) {
  if (b.empty())
    return;
  const size_t n = b.size();
  for (int t = 0; t < n_tokens; ++t)
    kernels::add(y + t * n, b.data(), y + t * n, static_cast<int64_t>(n));
}

// ggml multiplies an F16 (BF16) weight with the activations converted to F16 (BF16), its
// vec_dot_type, so that rounding is part of llama.cpp's result (a few 1e-4 of a normalised
// embedding); Gantry's kernels keep float activations for these types. Returns x, or `scratch`
// holding x rounded as ggml rounds it.
const float *as_ggml_activations(const WeightView &w, const float *x, int64_t n,
                                 std::vector<float> &scratch, std::vector<uint16_t> &half) {
  if (w.type != gguf::TensorType::kF16 && w.type != gguf::TensorType::kBF16)
    return x;
  grow(scratch, static_cast<size_t>(n));
  grow(half, static_cast<size_t>(n));
  if (w.type == gguf::TensorType::kF16) {
    kernels::fp32_to_fp16_row(x, half.data(), n);
    kernels::fp16_to_fp32_row(half.data(), scratch.data(), n);
  } else {
    kernels::fp32_to_bf16_row(x, half.data(), n);
    for (int64_t i = 0; i < n; ++i)
      scratch[i] = kernels::bf16_to_fp32(half[i]);
  }
  return scratch.data();
}

} // namespace

bool is_encoder_arch(std::string_view arch) { return arch == "bert" || arch == "nomic-bert"; }

Status read_encoder_config(const gguf::GgufFile &f, ModelConfig &c) {
  c.encoder = true;
  // Both use NeoX-style rotation (llama_model_rope_type); only nomic-bert rotates at all.
  c.rope_neox = true;
  c.attn_scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  auto eps = f.get_float(c.arch + ".attention.layer_norm_epsilon");
  if (!eps) {
    return Err(
        Error::corrupt("missing metadata key '" + c.arch + ".attention.layer_norm_epsilon'"));
  }
  c.rms_eps = static_cast<float>(*eps);
  if (c.n_head_kv != c.n_head)
    return Err(Error::unsupported(c.arch + " with grouped-query attention is not supported"));
  if (c.q_dim() != c.n_embd)
    return Err(Error::corrupt(c.arch + ": head_count * key_length must equal embedding_length"));
  return Ok();
}

Result<std::unique_ptr<BertEncoder>> BertEncoder::bind(const gguf::GgufFile &f,
                                                       const ModelConfig &c) {
  std::unique_ptr<BertEncoder> e(new BertEncoder(c));
  const bool nomic = c.arch == "nomic-bert";
  const int d = c.n_embd;
  GANTRY_ASSIGN_OR_RETURN(e->token_embd_, need_tensor(f, "token_embd.weight"));
  if (!nomic) {
    GANTRY_ASSIGN_OR_RETURN(e->pos_embd_, need_tensor(f, "position_embd.weight"));
    if (e->pos_embd_->dims.size() != 2 || e->pos_embd_->dims[0] != static_cast<uint64_t>(d) ||
        e->pos_embd_->dims[1] < static_cast<uint64_t>(c.n_ctx_train)) {
      return Err(Error::corrupt("tensor 'position_embd.weight' does not have shape [" +
                                std::to_string(d) + ", " + std::to_string(c.n_ctx_train) + "]"));
    }
  }
  if (const gguf::TensorInfo *tt = f.tensor("token_types.weight")) {
    if (tt->dims.empty() || tt->dims[0] != static_cast<uint64_t>(d) || tt->n_elements < 1 ||
        !kernels::is_supported(tt->type)) {
      return Err(Error::corrupt("malformed tensor 'token_types.weight'"));
    }
    e->type_row0_.resize(d);
    kernels::dequantize_row(tt->type, tt->data, e->type_row0_.data(), d);
  }
  GANTRY_ASSIGN_OR_RETURN(e->embd_norm_.w, vector_f32(f, "token_embd_norm.weight", d));
  GANTRY_ASSIGN_OR_RETURN(e->embd_norm_.b, vector_f32(f, "token_embd_norm.bias", d));
  e->layers_.resize(c.n_layer);
  for (int i = 0; i < c.n_layer; ++i) {
    Layer &l = e->layers_[i];
    const std::string p = "blk." + std::to_string(i) + ".";
    if (f.tensor(p + "attn_qkv.weight")) {
      GANTRY_ASSIGN_OR_RETURN(auto qkv, matrix(f, p + "attn_qkv.weight", 3 * d, d));
      l.wq = row_range(qkv, 0, d);
      l.wk = row_range(qkv, d, d);
      l.wv = row_range(qkv, 2 * d, d);
      if (f.tensor(p + "attn_qkv.bias"))
        return Err(Error::unsupported("tensor '" + p + "attn_qkv.bias' is not supported"));
    } else {
      GANTRY_ASSIGN_OR_RETURN(l.wq, matrix(f, p + "attn_q.weight", d, d));
      GANTRY_ASSIGN_OR_RETURN(l.wk, matrix(f, p + "attn_k.weight", d, d));
      GANTRY_ASSIGN_OR_RETURN(l.wv, matrix(f, p + "attn_v.weight", d, d));
      GANTRY_ASSIGN_OR_RETURN(l.bq, maybe_vector(f, p + "attn_q.bias", d));
      GANTRY_ASSIGN_OR_RETURN(l.bk, maybe_vector(f, p + "attn_k.bias", d));
      GANTRY_ASSIGN_OR_RETURN(l.bv, maybe_vector(f, p + "attn_v.bias", d));
    }
    GANTRY_ASSIGN_OR_RETURN(l.wo, matrix(f, p + "attn_output.weight", d, d));
    GANTRY_ASSIGN_OR_RETURN(l.bo, maybe_vector(f, p + "attn_output.bias", d));
    GANTRY_ASSIGN_OR_RETURN(l.attn_out_norm.w, vector_f32(f, p + "attn_output_norm.weight", d));
    GANTRY_ASSIGN_OR_RETURN(l.attn_out_norm.b, vector_f32(f, p + "attn_output_norm.bias", d));
    GANTRY_ASSIGN_OR_RETURN(l.w_up, matrix(f, p + "ffn_up.weight", c.n_ff, d));
    GANTRY_ASSIGN_OR_RETURN(l.w_down, matrix(f, p + "ffn_down.weight", d, c.n_ff));
    if (nomic) {
      GANTRY_ASSIGN_OR_RETURN(l.w_gate, matrix(f, p + "ffn_gate.weight", c.n_ff, d));
    } else {
      GANTRY_ASSIGN_OR_RETURN(l.b_up, maybe_vector(f, p + "ffn_up.bias", c.n_ff));
      GANTRY_ASSIGN_OR_RETURN(l.b_down, maybe_vector(f, p + "ffn_down.bias", d));
    }
    GANTRY_ASSIGN_OR_RETURN(l.layer_out_norm.w, vector_f32(f, p + "layer_output_norm.weight", d));
    GANTRY_ASSIGN_OR_RETURN(l.layer_out_norm.b, vector_f32(f, p + "layer_output_norm.bias", d));
  }
  return e;
}

void BertEncoder::attention(int n, Workspace &ws, kernels::ThreadPool &pool) const {
  const int hd = c_.head_dim;
  const int d = c_.n_embd;
  if (static_cast<int>(ws.scores.size()) < pool.size())
    ws.scores.resize(pool.size());
  // One item per (token, head); every token sees all n positions (no causal mask).
  const int64_t items = static_cast<int64_t>(n) * c_.n_head;
  const int64_t work = items * n * hd * 2;
  const int64_t grain = work < (int64_t{1} << 16) ? items : 2;
  pool.parallel_for(items, grain, [&](int64_t b, int64_t e, int thread) {
    std::vector<float> &scores = ws.scores[thread];
    grow(scores, attention_scratch(1, n, hd));
    for (int64_t item = b; item < e; ++item) {
      const int t = static_cast<int>(item / c_.n_head);
      const int h = static_cast<int>(item % c_.n_head);
      const float *q = ws.q.data() + static_cast<size_t>(t) * d + h * hd;
      float *out = ws.attn.data() + static_cast<size_t>(t) * d + h * hd;
      const uint16_t *k = ws.k16.data() + h * hd;
      const uint16_t *v = ws.v16.data() + h * hd;
      attention_group(
          &q, &out, 1, n, hd, c_.attn_scale, [&](int j) { return k + static_cast<size_t>(j) * d; },
          [&](int j) { return v + static_cast<size_t>(j) * d; }, d, n, scores.data());
    }
  });
}

void BertEncoder::encode(std::span<const int32_t> tokens, Workspace &ws, kernels::ThreadPool &pool,
                         std::vector<float> &hidden) const {
  const int n = static_cast<int>(tokens.size());
  const int d = c_.n_embd;
  const size_t nd = static_cast<size_t>(n) * d;
  grow(ws.x, nd);
  grow(ws.xn, nd);
  grow(ws.q, nd);
  grow(ws.k, nd);
  grow(ws.v, nd);
  grow(ws.attn, nd);
  grow(ws.out, nd);
  grow(ws.k16, nd);
  grow(ws.v16, nd);
  grow(ws.gate, static_cast<size_t>(n) * c_.n_ff);
  grow(ws.up, static_cast<size_t>(n) * c_.n_ff);

  // Embeddings: token, plus token type 0, plus the position's (bert), in llama.cpp's order.
  const size_t tok_row = token_embd_->row_bytes();
  std::vector<float> pos_row(pos_embd_ ? d : 0);
  for (int t = 0; t < n; ++t) {
    float *x = ws.x.data() + static_cast<size_t>(t) * d;
    kernels::dequantize_row(token_embd_->type, token_embd_->data + tok_row * tokens[t], x, d);
    if (!type_row0_.empty())
      kernels::add(x, type_row0_.data(), x, d);
    if (pos_embd_) {
      kernels::dequantize_row(pos_embd_->type, pos_embd_->data + pos_embd_->row_bytes() * t,
                              pos_row.data(), d);
      kernels::add(pos_row.data(), x, x, d);
    }
    layer_norm(x, embd_norm_.w, embd_norm_.b, x, d, c_.rms_eps);
  }

  const bool rope = c_.arch == "nomic-bert";
  RopeParams rp;
  rp.n_rot = c_.rope_dim;
  rp.freq_base = c_.rope_freq_base;
  rp.freq_scale = c_.rope_freq_scale;
  rp.neox = c_.rope_neox;
  const int half = c_.rope_dim / 2;
  if (rope) {
    grow(ws.rope_cos, static_cast<size_t>(n) * half);
    grow(ws.rope_sin, static_cast<size_t>(n) * half);
    for (int t = 0; t < n; ++t)
      rope_angles(t, rp, ws.rope_cos.data() + t * half, ws.rope_sin.data() + t * half);
  }

  std::vector<float> act;      // activations rounded for F16/BF16 weights, when there are any
  std::vector<uint16_t> act16; // their 16-bit form
  for (const Layer &l : layers_) {
    const kernels::MatmulOut qkv[3] = {
        {&l.wq, ws.q.data(), d}, {&l.wk, ws.k.data(), d}, {&l.wv, ws.v.data(), d}};
    const float *x_in = as_ggml_activations(l.wq, ws.x.data(), nd, act, act16);
    if (kernels::can_share_activations(l.wq, l.wk) && kernels::can_share_activations(l.wq, l.wv)) {
      kernels::matmul_multi(qkv, 3, x_in, n, pool);
    } else {
      for (const auto &o : qkv) {
        kernels::matmul(*o.w, as_ggml_activations(*o.w, ws.x.data(), nd, act, act16), n, o.y, pool);
      }
    }
    add_bias(ws.q.data(), l.bq, n);
    add_bias(ws.k.data(), l.bk, n);
    add_bias(ws.v.data(), l.bv, n);
    for (int t = 0; t < n; ++t) {
      float *q = ws.q.data() + static_cast<size_t>(t) * d;
      float *k = ws.k.data() + static_cast<size_t>(t) * d;
      if (rope) {
        rope_apply(q, c_.n_head, c_.head_dim, rp, ws.rope_cos.data() + t * half,
                   ws.rope_sin.data() + t * half);
        rope_apply(k, c_.n_head, c_.head_dim, rp, ws.rope_cos.data() + t * half,
                   ws.rope_sin.data() + t * half);
      }
    }
    // Flash attention casts K and V to fp16 (llama-graph.cpp build_attn_mha).
    kernels::fp32_to_fp16_row(ws.k.data(), ws.k16.data(), static_cast<int64_t>(nd));
    kernels::fp32_to_fp16_row(ws.v.data(), ws.v16.data(), static_cast<int64_t>(nd));
    attention(n, ws, pool);
    kernels::matmul(l.wo, as_ggml_activations(l.wo, ws.attn.data(), nd, act, act16), n,
                    ws.out.data(), pool);
    add_bias(ws.out.data(), l.bo, n);
    // Post-norm: x = LN(attn + x); the FFN input is kept for its residual.
    kernels::add(ws.out.data(), ws.x.data(), ws.out.data(), static_cast<int64_t>(nd));
    for (int t = 0; t < n; ++t) {
      const size_t o = static_cast<size_t>(t) * d;
      layer_norm(ws.out.data() + o, l.attn_out_norm.w, l.attn_out_norm.b, ws.xn.data() + o, d,
                 c_.rms_eps);
    }
    const int64_t nf = static_cast<int64_t>(n) * c_.n_ff;
    if (rope) { // nomic-bert: SwiGLU
      const kernels::MatmulOut gate_up[2] = {{&l.w_gate, ws.gate.data(), c_.n_ff},
                                             {&l.w_up, ws.up.data(), c_.n_ff}};
      if (kernels::can_share_activations(l.w_gate, l.w_up)) {
        kernels::matmul_multi(gate_up, 2, as_ggml_activations(l.w_up, ws.xn.data(), nd, act, act16),
                              n, pool);
      } else {
        kernels::matmul(l.w_gate, as_ggml_activations(l.w_gate, ws.xn.data(), nd, act, act16), n,
                        ws.gate.data(), pool);
        kernels::matmul(l.w_up, as_ggml_activations(l.w_up, ws.xn.data(), nd, act, act16), n,
                        ws.up.data(), pool);
      }
      for (int t = 0; t < n; ++t) {
        const size_t o = static_cast<size_t>(t) * c_.n_ff;
        kernels::silu_mul(ws.gate.data() + o, ws.up.data() + o, ws.gate.data() + o, c_.n_ff);
      }
    } else { // bert: GELU
      kernels::matmul(l.w_up, as_ggml_activations(l.w_up, ws.xn.data(), nd, act, act16), n,
                      ws.gate.data(), pool);
      add_bias(ws.gate.data(), l.b_up, n);
      kernels::gelu(ws.gate.data(), ws.gate.data(), nf);
    }
    kernels::matmul(l.w_down, as_ggml_activations(l.w_down, ws.gate.data(), nf, act, act16), n,
                    ws.out.data(), pool);
    add_bias(ws.out.data(), l.b_down, n);
    kernels::add(ws.out.data(), ws.xn.data(), ws.out.data(), static_cast<int64_t>(nd));
    for (int t = 0; t < n; ++t) {
      const size_t o = static_cast<size_t>(t) * d;
      layer_norm(ws.out.data() + o, l.layer_out_norm.w, l.layer_out_norm.b, ws.x.data() + o, d,
                 c_.rms_eps);
    }
  }
  hidden.assign(ws.x.begin(), ws.x.begin() + static_cast<std::ptrdiff_t>(nd));
}

} // namespace gantry::engine
