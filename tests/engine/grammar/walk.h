// Shared by the grammar tests: real vocabularies, and random walks through a matcher the way the
// engine drives it (apply, pick among what is left, accept), checking allows() against apply().
#pragma once

#include <cmath>
#include <map>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "engine/gguf/gguf.h"
#include "engine/grammar/matcher.h"
#include "engine/grammar/token_trie.h"
#include "engine/tokenizer/tokenizer.h"

namespace gantry::engine::grammar_test {

struct Vocab {
  std::unique_ptr<Tokenizer> tok;
  std::shared_ptr<const TokenTrie> trie;
};

// The bundled story model (512 tokens) and the Llama 2 vocabulary (32000), loaded once.
inline const Vocab &vocab(const std::string &name) {
  static std::map<std::string, Vocab> cache;
  auto it = cache.find(name);
  if (it != cache.end())
    return it->second;
  const std::string path = name == "stories260K"
                               ? std::string(GANTRY_MODELS_DIR) + "/stories260K.gguf"
                               : std::string(GANTRY_TEST_DATA_DIR) + "/" + name + ".gguf";
  auto file = gguf::GgufFile::open(path);
  if (!file.ok())
    throw std::runtime_error(path + ": " + file.error().message);
  auto tok = Tokenizer::from_gguf(**file);
  if (!tok.ok())
    throw std::runtime_error(path + ": " + tok.error().message);
  Vocab v;
  v.tok = std::move(tok).value();
  v.trie = TokenTrie::build(*v.tok);
  return cache.emplace(name, std::move(v)).first->second;
}

inline const std::vector<std::string> &vocab_names() {
  static const std::vector<std::string> names{"stories260K", "llama-2-tiny-random"};
  return names;
}

struct WalkResult {
  std::string text;
  bool ended = false; // an end-of-generation token was chosen
  int steps = 0;
};

// One random walk: at each step apply() the mask, pick uniformly among the tokens it leaves
// (half the time among those that close something — a quote, bracket, brace or the end — so
// documents finish), accept it. For the first `check_steps` steps every token's allows() must
// agree with the mask, and at every step the end must be allowed exactly when the matcher
// accepts.
inline WalkResult random_walk(const GrammarMatcher &proto, const Vocab &v, uint64_t seed,
                              int max_steps, int check_steps) {
  std::mt19937_64 rng(seed);
  auto m = proto.clone();
  auto &matcher = static_cast<GrammarMatcher &>(*m);
  const int32_t n = v.tok->n_vocab();
  std::vector<float> logits(static_cast<size_t>(n));
  WalkResult r;
  for (; r.steps < max_steps; ++r.steps) {
    std::fill(logits.begin(), logits.end(), 0.0f);
    matcher.apply(logits);
    std::vector<int32_t> allowed, closing;
    for (int32_t t = 0; t < n; ++t) {
      const bool ok = std::isfinite(logits[t]);
      if (r.steps < check_steps) {
        EXPECT_EQ(matcher.allows(t), ok)
            << "token " << t << " '" << v.tok->token_to_piece(t) << "' after '" << r.text << "'";
      }
      if (!ok)
        continue;
      allowed.push_back(t);
      const std::string p = v.tok->token_to_piece(t);
      if (v.tok->is_eog(t) || p.find_first_of("\"}]") != std::string::npos)
        closing.push_back(t);
    }
    EXPECT_EQ(matcher.allows(v.tok->eos_id()), matcher.accepting()) << r.text;
    if (allowed.empty()) {
      ADD_FAILURE() << "no token allowed after '" << r.text << "'";
      return r;
    }
    const auto &pool = (!closing.empty() && rng() % 2 == 0) ? closing : allowed;
    const int32_t t = pool[rng() % pool.size()];
    EXPECT_TRUE(matcher.allows(t));
    if (v.tok->is_eog(t)) {
      r.ended = true;
      return r;
    }
    matcher.accept(t);
    r.text += v.tok->token_to_piece(t);
    if (matcher.finished()) {
      r.ended = true;
      return r;
    }
  }
  return r;
}

} // namespace gantry::engine::grammar_test
