// Token sampling for one sequence: penalties and logit_bias (adjust), then greedy or top-k /
// top-p / min-p / temperature and a draw from a seeded generator (pick; same seed, same tokens).
// The two halves are apart so that a constraint can mask the adjusted logits and pick again.
//
// Thread ownership: the engine thread that steps the sequence.
#pragma once

#include <cstdint>
#include <optional>
#include <random>
#include <span>
#include <unordered_map>
#include <utility>
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
  // `logit_bias`: token id -> value added to its logit after the penalties (ids outside the
  // vocabulary are ignored; callers validate them).
  Sampler(const SamplingParams &params, uint64_t seed,
          std::vector<std::pair<int32_t, float>> logit_bias = {});

  // Picks the next token: adjust() then pick(). `logits` is modified in place.
  // `context` is the prompt followed by the tokens generated so far; `n_prompt` marks where the
  // generated part starts.
  int32_t sample(std::span<float> logits, std::span<const int32_t> context, size_t n_prompt);
  // Penalties, then logit_bias, in place.
  void adjust(std::span<float> logits, std::span<const int32_t> context, size_t n_prompt);
  // Greedy or the seeded draw over adjusted logits; never a token whose logit is -inf unless
  // every logit is. Each call of a non-greedy sampler consumes one draw of the generator.
  int32_t pick(std::span<const float> logits);

  // Natural log of the probability the model assigned to `token` before sampling filters,
  // computed from the last logits passed to sample() (for `logprobs`).
  float last_logprob(int32_t token) const;

  const SamplingParams &params() const { return params_; }

private:
  void apply_penalties(std::span<float> logits, std::span<const int32_t> context, size_t n_prompt);

  SamplingParams params_;
  std::vector<std::pair<int32_t, float>> bias_;
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
