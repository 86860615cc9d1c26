// TokenConstraint: which tokens may come next in one sequence (a grammar, a JSON schema). The
// engine asks it at every step of a constrained sequence, on the engine thread:
//   allows(t)    — the cheap check of the token the sampler picked (most steps end here);
//   apply(logits) — when that token is not allowed: -inf on every token that cannot come next,
//                   then the sampler picks again from what is left;
//   accept(t)    — the token was chosen: advance.
// End-of-generation tokens are allowed exactly when the document is complete; finished() is
// true when nothing but the end can follow (the engine then ends the sequence with "stop").
//
// Thread ownership: the engine thread that steps the sequence. clone() gives each choice of a
// request its own state.
#pragma once

#include <cstdint>
#include <memory>
#include <span>

namespace gantry::engine {

class TokenConstraint {
public:
  virtual ~TokenConstraint() = default;
  virtual bool allows(int32_t token) = 0;
  virtual void apply(std::span<float> logits) = 0;
  virtual void accept(int32_t token) = 0;
  virtual bool finished() const = 0;
  virtual std::unique_ptr<TokenConstraint> clone() const = 0;
};

} // namespace gantry::engine
