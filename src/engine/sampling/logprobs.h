// Log-probabilities for `logprobs`/`top_logprobs`: the log-softmax of the model's raw logits
// (before penalties, logit_bias, temperature and any constraint), which is what vLLM reports by
// default and what llama.cpp's server computes for n_probs. Computed only for sequences that ask.
//
// Thread ownership: the engine thread (a LogprobScratch belongs to one Engine).
#pragma once

#include <cstdint>
#include <span>
#include <utility>
#include <vector>

namespace gantry::engine {

// The most alternatives a request may ask for (OpenAI's top_logprobs bound).
constexpr int kMaxTopLogprobs = 20;

// Reusable buffers, so a step allocates nothing once warm.
struct LogprobScratch {
  std::vector<int32_t> order;
};

// log p(chosen) under softmax(logits), and the `top_n` most likely tokens (most likely first,
// equal logits by lower id) with their log-probabilities in `top` (replaced).
float token_logprobs(std::span<const float> logits, int32_t chosen, int top_n,
                     LogprobScratch &scratch, std::vector<std::pair<int32_t, float>> &top);

} // namespace gantry::engine
