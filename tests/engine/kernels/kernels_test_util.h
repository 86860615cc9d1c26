// Shared helpers for the kernels tests: deterministic random data and an ISA scope guard.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

#include "engine/kernels/kernels.h"

namespace gantry::engine::kernels::testing {

inline std::vector<float> random_floats(int64_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto &f : v)
    f = dist(rng);
  return v;
}

// Runs the enclosed code with the given instruction set, restoring the previous one after.
class ScopedIsa {
public:
  explicit ScopedIsa(Isa isa) : saved_(active_isa()) { set_active_isa(isa); }
  ~ScopedIsa() { set_active_isa(saved_); }
  ScopedIsa(const ScopedIsa &) = delete;
  ScopedIsa &operator=(const ScopedIsa &) = delete;

private:
  Isa saved_;
};

inline const char *isa_name(Isa isa) {
  switch (isa) {
  case Isa::kAvx512Vnni: return "avx512vnni";
  case Isa::kAvx2: return "avx2";
  default: return "scalar";
  }
}

// The instruction sets this machine can run; the scalar one always.
inline std::vector<Isa> available_isas() {
  std::vector<Isa> v{Isa::kScalar};
  if (detected_isa() >= Isa::kAvx2)
    v.push_back(Isa::kAvx2);
  if (detected_isa() >= Isa::kAvx512Vnni)
    v.push_back(Isa::kAvx512Vnni);
  return v;
}

} // namespace gantry::engine::kernels::testing
