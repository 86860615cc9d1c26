#include "engine/model/ops.h"

#include <cmath>
#include <vector>

namespace gantry::engine {

void rope_angles(int pos, const RopeParams &p, float *cs, float *sn) {
  const float theta_scale = std::pow(p.freq_base, -2.0f / static_cast<float>(p.n_rot));
  float theta = static_cast<float>(pos);
  for (int i = 0; i < p.n_rot / 2; ++i) {
    const float ff = p.freq_factors && !p.freq_factors->empty() ? (*p.freq_factors)[i] : 1.0f;
    const float t = p.freq_scale * (theta / ff);
    cs[i] = std::cos(t) * p.mscale;
    sn[i] = std::sin(t) * p.mscale;
    theta *= theta_scale;
  }
}

namespace {

// x0 * cos - x1 * sin and x0 * sin + x1 * cos with one product fused into each, as GCC compiles
// ggml's rotate_pairs: llama.cpp's rotated Q and K, bit for bit.
struct Rotate {
  __attribute__((always_inline)) static inline void
  run(float *x, int n_heads, int head_dim, const RopeParams &p, const float *cs, const float *sn) {
    const int half = p.n_rot / 2;
    for (int h = 0; h < n_heads; ++h) {
      float *v = x + static_cast<size_t>(h) * head_dim;
      for (int i = 0; i < half; ++i) {
        const int a = p.neox ? i : 2 * i;
        const int b = p.neox ? i + half : 2 * i + 1;
        const float x0 = v[a], x1 = v[b];
        const float x1s = x1 * sn[i], x1c = x1 * cs[i];
        v[a] = std::fma(x0, cs[i], -x1s);
        v[b] = std::fma(x0, sn[i], x1c);
      }
    }
  }
};

// The same with the hardware instruction (std::fma is a library call without -mfma); same bits.
__attribute__((target("fma"))) void rotate_fma(float *x, int n_heads, int head_dim,
                                               const RopeParams &p, const float *cs,
                                               const float *sn) {
  Rotate::run(x, n_heads, head_dim, p, cs, sn);
}

} // namespace

void rope_apply(float *x, int n_heads, int head_dim, const RopeParams &p, const float *cs,
                const float *sn) {
#if defined(__x86_64__)
  static const bool has_fma = __builtin_cpu_supports("fma");
  if (has_fma) {
    rotate_fma(x, n_heads, head_dim, p, cs, sn);
    return;
  }
#endif
  Rotate::run(x, n_heads, head_dim, p, cs, sn);
}

void rope(float *x, int n_heads, int head_dim, int pos, const RopeParams &p) {
  std::vector<float> cs(p.n_rot / 2), sn(p.n_rot / 2);
  rope_angles(pos, p, cs.data(), sn.data());
  rope_apply(x, n_heads, head_dim, p, cs.data(), sn.data());
}

} // namespace gantry::engine
