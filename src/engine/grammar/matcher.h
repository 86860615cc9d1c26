// Constrained decoding, part 3: the TokenConstraint that keeps one sequence inside a grammar.
//
// A pushdown automaton over code points, as in llama.cpp's llama-grammar: the state is a set of
// stacks of grammar positions, each stack's top a character class. Tokens are checked byte by
// byte, so a token that ends inside a UTF-8 sequence (byte-fallback tokens) is allowed when some
// completion of that sequence could match, and the next token must finish it.
//
// Speed: stacks are hash-consed (a stack is one id: top position + the id of the rest) and so
// are sets of stacks, so the automaton is built lazily as a DFA over those sets and every
// (state, code point) step is computed once per matcher, then looked up. allows() walks the
// token's bytes through that table; apply() walks the shared vocabulary trie once from the
// current state, pruning at the first refused byte, and keeps the resulting mask in a small LRU
// so a state seen again (the start of every string value, say) costs one copy.
//
// Bounds: at most kMaxStacks live stacks per state (an ambiguous grammar's extra stacks are
// dropped and counted: the output still matches the grammar, some continuations are lost) and
// at most kMaxExpand positions visited per step; the interned tables are cleared when they pass
// their caps (at the start of the next call, keeping only the current state). Within one call,
// a walk that fills the tables treats the rest of its new steps as refused and counts it.
//
// finished() is true when no text can follow: the grammar accepts and nothing else continues
// it, or (only after a refused accept() or a dropped-stack dead end) nothing continues at all.
//
// Thread ownership: the engine thread that steps the sequence; the Grammar and TokenTrie it
// points to are immutable and shared.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string_view>
#include <vector>

#include "engine/grammar/grammar.h"
#include "engine/grammar/token_trie.h"
#include "engine/sampling/constraint.h"

namespace gantry::engine {

inline constexpr size_t kMaxStacks = 256;
inline constexpr size_t kMaxExpand = 1 << 14;

struct GrammarMatcherStats {
  uint64_t truncated_stacks = 0;  // steps that dropped stacks over kMaxStacks / kMaxExpand
  uint64_t table_resets = 0;      // interned tables cleared at their caps
  uint64_t budget_exhausted = 0;  // walks cut short because the tables were full
  uint64_t mask_cache_hits = 0;   // apply() answered from the mask LRU
  uint64_t mask_cache_misses = 0; // apply() walked the trie
  uint64_t refused_accepts = 0;   // accept() of a token allows() refuses (an engine bug)
};

class GrammarMatcher final : public TokenConstraint {
public:
  GrammarMatcher(std::shared_ptr<const Grammar> grammar, std::shared_ptr<const TokenTrie> trie);
  GrammarMatcher(const GrammarMatcher &other);
  GrammarMatcher &operator=(const GrammarMatcher &) = delete;
  ~GrammarMatcher() override;

  bool allows(int32_t token) override;
  void apply(std::span<float> logits) override;
  void accept(int32_t token) override;
  bool finished() const override;
  std::unique_ptr<TokenConstraint> clone() const override;

  // Whether the text so far is a complete document (end-of-generation is allowed).
  bool accepting() const;
  // Advances over raw text (not tokens): false, and no change, when the grammar refuses it.
  bool accept_text(std::string_view text);
  const GrammarMatcherStats &stats() const { return stats_; }

private:
  // A position inside a UTF-8 sequence: the bits so far and how many continuation bytes remain.
  struct Utf8 {
    uint32_t cp = 0;
    uint8_t need = 0;
    uint8_t len = 0;
    bool operator==(const Utf8 &) const = default;
  };
  struct Cursor {
    uint32_t state;
    Utf8 utf8;
  };
  struct FlatMap;
  struct Tables;

  static constexpr uint32_t kDead = 0;

  bool step_byte(Cursor &c, uint8_t b);
  bool walk(Cursor &c, std::string_view bytes);
  uint32_t transition(uint32_t state, uint32_t cp);
  bool partial_feasible(uint32_t state, const Utf8 &u) const;
  void compute_mask(std::vector<uint64_t> &mask);
  void maybe_reset();

  std::shared_ptr<const Grammar> grammar_;
  std::shared_ptr<const TokenTrie> trie_;
  std::unique_ptr<Tables> tables_;
  Cursor cur_{};
  GrammarMatcherStats stats_;
};

// The prototype the engine clones per sequence (GenerationRequest::constraint).
std::unique_ptr<TokenConstraint> make_grammar_constraint(std::shared_ptr<const Grammar> grammar,
                                                         std::shared_ptr<const TokenTrie> trie);

} // namespace gantry::engine
