// How the final hidden states of one input become its embedding: pooled as the model declares
// (ModelConfig::pooling), then L2-normalised, as llama-embedding with --embd-normalize 2 (the
// OpenAI endpoint's vectors have unit length).
#pragma once

#include <span>
#include <vector>

#include "engine/model/model_config.h"

namespace gantry::engine {

// hidden: n_tokens rows of n_embd floats, in position order (n_tokens >= 1). Mean averages every
// row, kCls takes the first (BERT's [CLS]), kLast the last.
std::vector<float> pool_embedding(std::span<const float> hidden, int n_tokens, int n_embd,
                                  Pooling pooling);

// Scales v to unit Euclidean length (left as is when all zeros).
void l2_normalize(std::span<float> v);

} // namespace gantry::engine
