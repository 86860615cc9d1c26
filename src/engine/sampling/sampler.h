// Token sampling for one sequence: penalties, then greedy or top-k / top-p / min-p /
// temperature, then a draw from a seeded generator (same seed, same tokens).
//
// Thread ownership: the engine thread that steps the sequence.
#pragma once

#include <cstdint>
#include <optional>
#include <random>
#include <span>
#include <unordered_map>
#include <vector>

#include "core/result.h"

namespace gantry::engine {

struct SamplingParams {
  float temperature = 1.0f; // <= 0 means greedy
  int top_k = 0;            // 0 = disabled
  float top_p = 1.0f;       // 1 = disabled
  float min_p = 0.0f;       // 0 = disabled
  // Multiplicative penalty (llama.cpp/vLLM style) over the last repeat_last_n tokens of the
  // prompt and output; 1 = disabled.
  float repetition_penalty = 1.0f;
  int repeat_last_n = 64;
  // OpenAI-style additive penalties over the generated tokens; 0 = disabled.
  float frequency_penalty = 0.0f;
  float presence_penalty = 0.0f;
  std::optional<uint64_t> seed; // absent: a random seed is drawn

  bool greedy() const { return temperature <= 0.0f || top_k == 1; }
  // Whether the same request always produces the same output (cacheable).
  bool deterministic() const { return greedy() || seed.has_value(); }
  Status validate() const;
};

class Sampler {
public:
  Sampler(const SamplingParams &params, uint64_t seed);

  // Picks the next token. `logits` is modified in place (penalties, temperature).
  // `context` is the prompt followed by the tokens generated so far; `n_prompt` marks where the
  // generated part starts.
  int32_t sample(std::span<float> logits, std::span<const int32_t> context, size_t n_prompt);

  // Natural log of the probability the model assigned to `token` before sampling filters,
  // computed from the last logits passed to sample() (for `logprobs`).
  float last_logprob(int32_t token) const;

  const SamplingParams &params() const { return params_; }

private:
  void apply_penalties(std::span<float> logits, std::span<const int32_t> context, size_t n_prompt);

  SamplingParams params_;
  std::mt19937_64 rng_;
  struct Cand {
    float logit;
    int32_t id;
  };
  std::vector<Cand> cands_;
  std::unordered_map<int32_t, int> counts_;
  std::span<const float> last_logits_;
};

int32_t argmax(std::span<const float> logits);

} // namespace gantry::engine
