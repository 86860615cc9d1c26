// A plain double-precision forward pass written from the llama/qwen2 architecture's definition,
// over the file's weights dequantized one row at a time: what the optimised engine is checked
// against (model_test.cpp, quantized_files_test.cpp).
#pragma once

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "engine/gguf/gguf.h"
#include "engine/kernels/kernels.h"
#include "engine/model/model_config.h"

namespace gantry::engine::testing_ref {

struct Ref {
  const gguf::GgufFile &f;
  const ModelConfig &c;

  std::vector<double> row(const std::string &name, int64_t r) const {
    const auto *t = f.tensor(name);
    const int64_t cols = static_cast<int64_t>(t->dims[0]);
    std::vector<float> tmp(cols);
    kernels::dequantize_row(t->type, t->data + t->row_bytes() * r, tmp.data(), cols);
    return {tmp.begin(), tmp.end()};
  }
  std::vector<double> vec(const std::string &name) const { return row(name, 0); }
  std::vector<double> matvec(const std::string &name, const std::vector<double> &x) const {
    const auto *t = f.tensor(name);
    std::vector<double> y(t->dims[1]);
    for (size_t r = 0; r < y.size(); ++r) {
      auto w = row(name, static_cast<int64_t>(r));
      double s = 0;
      for (size_t i = 0; i < x.size(); ++i)
        s += w[i] * x[i];
      y[r] = s;
    }
    return y;
  }
  std::vector<double> rmsnorm(const std::vector<double> &x, const std::string &w) const {
    double ss = 0;
    for (double v : x)
      ss += v * v;
    const double k = 1.0 / std::sqrt(ss / x.size() + c.rms_eps);
    auto g = vec(w);
    std::vector<double> y(x.size());
    for (size_t i = 0; i < x.size(); ++i)
      y[i] = x[i] * k * g[i];
    return y;
  }
  void rope(std::vector<double> &x, int n_heads, int pos) const {
    const int hd = c.head_dim, half = c.rope_dim / 2;
    for (int h = 0; h < n_heads; ++h) {
      for (int i = 0; i < half; ++i) {
        const double theta = pos * std::pow(c.rope_freq_base, -2.0 * i / c.rope_dim);
        const int a = c.rope_neox ? i : 2 * i, b = c.rope_neox ? i + half : 2 * i + 1;
        const double x0 = x[h * hd + a], x1 = x[h * hd + b];
        x[h * hd + a] = x0 * std::cos(theta) - x1 * std::sin(theta);
        x[h * hd + b] = x0 * std::sin(theta) + x1 * std::cos(theta);
      }
    }
  }

  // Logits of the last token of `tokens`.
  std::vector<double> run(const std::vector<int32_t> &tokens) const {
    const int n = static_cast<int>(tokens.size()), d = c.n_embd, hd = c.head_dim;
    std::vector<std::vector<double>> x(n);
    for (int t = 0; t < n; ++t)
      x[t] = row("token_embd.weight", tokens[t]);
    for (int l = 0; l < c.n_layer; ++l) {
      const std::string p = "blk." + std::to_string(l) + ".";
      std::vector<std::vector<double>> q(n), k(n), v(n);
      for (int t = 0; t < n; ++t) {
        auto xn = rmsnorm(x[t], p + "attn_norm.weight");
        q[t] = matvec(p + "attn_q.weight", xn);
        k[t] = matvec(p + "attn_k.weight", xn);
        v[t] = matvec(p + "attn_v.weight", xn);
        if (c.qkv_bias) {
          auto bq = vec(p + "attn_q.bias"), bk = vec(p + "attn_k.bias"),
               bv = vec(p + "attn_v.bias");
          for (size_t i = 0; i < q[t].size(); ++i)
            q[t][i] += bq[i];
          for (size_t i = 0; i < k[t].size(); ++i)
            k[t][i] += bk[i], v[t][i] += bv[i];
        }
        rope(q[t], c.n_head, t);
        rope(k[t], c.n_head_kv, t);
        // The KV cache holds f16-precision values, like llama.cpp's default cache type.
        for (auto *kv : {&k[t], &v[t]}) {
          for (double &e : *kv) {
            e = kernels::fp16_to_fp32(kernels::fp32_to_fp16(static_cast<float>(e)));
          }
        }
      }
      for (int t = 0; t < n; ++t) {
        std::vector<double> att(c.q_dim(), 0.0);
        for (int h = 0; h < c.n_head; ++h) {
          const int g = h / (c.n_head / c.n_head_kv);
          std::vector<double> s(t + 1);
          double mx = -1e300;
          for (int j = 0; j <= t; ++j) {
            double dot = 0;
            for (int i = 0; i < hd; ++i)
              dot += q[t][h * hd + i] * k[j][g * hd + i];
            s[j] = dot / std::sqrt(static_cast<double>(hd));
            mx = std::max(mx, s[j]);
          }
          double sum = 0;
          for (auto &e : s)
            sum += (e = std::exp(e - mx));
          for (int j = 0; j <= t; ++j)
            for (int i = 0; i < hd; ++i)
              att[h * hd + i] += s[j] / sum * v[j][g * hd + i];
        }
        auto o = matvec(p + "attn_output.weight", att);
        for (int i = 0; i < d; ++i)
          x[t][i] += o[i];
        auto xn = rmsnorm(x[t], p + "ffn_norm.weight");
        auto gate = matvec(p + "ffn_gate.weight", xn), up = matvec(p + "ffn_up.weight", xn);
        for (size_t i = 0; i < gate.size(); ++i)
          gate[i] = gate[i] / (1 + std::exp(-gate[i])) * up[i];
        auto down = matvec(p + "ffn_down.weight", gate);
        for (int i = 0; i < d; ++i)
          x[t][i] += down[i];
      }
    }
    auto xn = rmsnorm(x[n - 1], "output_norm.weight");
    return matvec(f.tensor("output.weight") ? "output.weight" : "token_embd.weight", xn);
  }
};

} // namespace gantry::engine::testing_ref
