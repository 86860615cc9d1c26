#include "engine/sampling/sampler.h"

#include <algorithm>
#include <cmath>

namespace gantry::engine {

Status SamplingParams::validate() const {
  if (!(temperature >= 0.0f) || temperature > 2.0f) {
    return Err(Error::invalid("temperature must be between 0 and 2", "temperature"));
  }
  if (!(top_p > 0.0f) || top_p > 1.0f) {
    return Err(Error::invalid("top_p must be greater than 0 and at most 1", "top_p"));
  }
  if (top_k < 0)
    return Err(Error::invalid("top_k must be 0 (disabled) or positive", "top_k"));
  if (!(min_p >= 0.0f) || min_p > 1.0f) {
    return Err(Error::invalid("min_p must be between 0 and 1", "min_p"));
  }
  if (!(frequency_penalty >= -2.0f) || frequency_penalty > 2.0f) {
    return Err(Error::invalid("frequency_penalty must be between -2 and 2", "frequency_penalty"));
  }
  if (!(presence_penalty >= -2.0f) || presence_penalty > 2.0f) {
    return Err(Error::invalid("presence_penalty must be between -2 and 2", "presence_penalty"));
  }
  if (!(repetition_penalty > 0.0f) || repetition_penalty > 10.0f) {
    return Err(Error::invalid("repetition_penalty must be in (0, 10]", "repetition_penalty"));
  }
  return Ok();
}

int32_t argmax(std::span<const float> logits) {
  int32_t best = 0;
  float bv = logits.empty() ? 0.0f : logits[0];
  for (size_t i = 1; i < logits.size(); ++i) {
    if (logits[i] > bv) {
      bv = logits[i];
      best = static_cast<int32_t>(i);
    }
  }
  return best;
}

Sampler::Sampler(const SamplingParams &params, uint64_t seed,
                 std::vector<std::pair<int32_t, float>> logit_bias)
    : params_(params), bias_(std::move(logit_bias)), rng_(seed) {}

void Sampler::apply_penalties(std::span<float> logits, std::span<const int32_t> context,
                              size_t n_prompt) {
  const auto n_vocab = static_cast<int32_t>(logits.size());
  if (params_.repetition_penalty != 1.0f && params_.repeat_last_n != 0) {
    size_t n = params_.repeat_last_n < 0 ? context.size()
                                         : std::min<size_t>(params_.repeat_last_n, context.size());
    counts_.clear();
    for (size_t i = context.size() - n; i < context.size(); ++i)
      counts_[context[i]] = 1;
    for (auto [tok, _] : counts_) {
      if (tok < 0 || tok >= n_vocab)
        continue;
      float &l = logits[tok];
      l = l > 0 ? l / params_.repetition_penalty : l * params_.repetition_penalty;
    }
  }
  if (params_.frequency_penalty != 0.0f || params_.presence_penalty != 0.0f) {
    counts_.clear();
    for (size_t i = n_prompt; i < context.size(); ++i)
      ++counts_[context[i]];
    for (auto [tok, cnt] : counts_) {
      if (tok < 0 || tok >= n_vocab)
        continue;
      logits[tok] -= static_cast<float>(cnt) * params_.frequency_penalty +
                     (cnt > 0 ? params_.presence_penalty : 0.0f);
    }
  }
}

int32_t Sampler::sample(std::span<float> logits, std::span<const int32_t> context,
                        size_t n_prompt) {
  adjust(logits, context, n_prompt);
  return pick(logits);
}

void Sampler::adjust(std::span<float> logits, std::span<const int32_t> context, size_t n_prompt) {
  apply_penalties(logits, context, n_prompt);
  for (const auto &[tok, b] : bias_) {
    if (tok >= 0 && static_cast<size_t>(tok) < logits.size())
      logits[tok] += b;
  }
  last_logits_ = logits;
}

int32_t Sampler::pick(std::span<const float> logits) {
  if (params_.greedy())
    return argmax(logits);

  const auto n_vocab = static_cast<int32_t>(logits.size());
  cands_.resize(n_vocab);
  for (int32_t i = 0; i < n_vocab; ++i)
    cands_[i] = {logits[i], i};
  auto by_logit = [](const Cand &a, const Cand &b) {
    return a.logit > b.logit || (a.logit == b.logit && a.id < b.id);
  };
  size_t n = cands_.size();
  if (params_.top_k > 0 && static_cast<size_t>(params_.top_k) < n) {
    std::partial_sort(cands_.begin(), cands_.begin() + params_.top_k, cands_.end(), by_logit);
    n = params_.top_k;
  } else {
    std::sort(cands_.begin(), cands_.end(), by_logit);
  }
  // Probabilities at temperature 1 drive top-p and min-p (as in llama.cpp's default chain the
  // filters see the distribution before temperature scaling).
  const float mx = cands_[0].logit;
  if (mx == -INFINITY)
    return cands_[0].id; // every token masked: the caller sees that allows() refuses it
  std::vector<double> p(n);
  double sum = 0;
  for (size_t i = 0; i < n; ++i) {
    p[i] = std::exp(static_cast<double>(cands_[i].logit - mx));
    sum += p[i];
  }
  if (params_.top_p < 1.0f) {
    double cum = 0;
    size_t keep = n;
    for (size_t i = 0; i < n; ++i) {
      cum += p[i] / sum;
      if (cum >= params_.top_p) {
        keep = i + 1;
        break;
      }
    }
    n = keep;
  }
  if (params_.min_p > 0.0f) {
    // p[0] is the maximum (sorted), exp(0) = 1.
    size_t keep = 1;
    while (keep < n && p[keep] >= params_.min_p)
      ++keep;
    n = keep;
  }
  // Temperature, then draw.
  const double inv_t = 1.0 / params_.temperature;
  double total = 0;
  for (size_t i = 0; i < n; ++i) {
    p[i] = std::exp(static_cast<double>(cands_[i].logit - mx) * inv_t);
    total += p[i];
  }
  std::uniform_real_distribution<double> u(0.0, total);
  double r = u(rng_);
  size_t last = 0; // the last candidate with a weight: rounding must not land on a masked one
  for (size_t i = 0; i < n; ++i) {
    if (p[i] > 0)
      last = i;
    r -= p[i];
    if (r <= 0 && p[i] > 0)
      return cands_[i].id;
  }
  return cands_[last].id;
}

float Sampler::last_logprob(int32_t token) const {
  if (last_logits_.empty() || token < 0 || static_cast<size_t>(token) >= last_logits_.size()) {
    return -INFINITY;
  }
  float mx = -INFINITY;
  for (float l : last_logits_)
    mx = std::max(mx, l);
  double sum = 0;
  for (float l : last_logits_)
    sum += std::exp(static_cast<double>(l - mx));
  return static_cast<float>(last_logits_[token] - mx - std::log(sum));
}

} // namespace gantry::engine
