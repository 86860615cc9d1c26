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

void rope_apply(float *x, int n_heads, int head_dim, const RopeParams &p, const float *cs,
                const float *sn) {
  const int half = p.n_rot / 2;
  for (int h = 0; h < n_heads; ++h) {
    float *v = x + static_cast<size_t>(h) * head_dim;
    for (int i = 0; i < half; ++i) {
      const int a = p.neox ? i : 2 * i;
      const int b = p.neox ? i + half : 2 * i + 1;
      const float x0 = v[a], x1 = v[b];
      v[a] = x0 * cs[i] - x1 * sn[i];
      v[b] = x0 * sn[i] + x1 * cs[i];
    }
  }
}

void rope(float *x, int n_heads, int head_dim, int pos, const RopeParams &p) {
  std::vector<float> cs(p.n_rot / 2), sn(p.n_rot / 2);
  rope_angles(pos, p, cs.data(), sn.data());
  rope_apply(x, n_heads, head_dim, p, cs.data(), sn.data());
}

} // namespace gantry::engine
