// A small backtracking regex engine over code points, for the pre-tokenizer patterns that
// llama.cpp runs through std::regex / std::wregex. It implements ECMAScript matching order
// (first alternative wins, greedy quantifiers backtrack) for the subset those patterns use:
// literals, classes with ranges and negation, \s \S \d \D \w \W, \p{L} \p{N} \p{P} \p{S} \p{M}
// (and the \p{Lu}-style letter subclasses, which llama.cpp also folds into "letter"), groups,
// (?:...), lookahead (?=...) (?!...), alternation, ? * + {n} {n,} {n,m}, ^, $ and '.'.
//
// Character semantics follow llama.cpp's "collapsed" text: \s is ASCII whitespace (callers map
// other Unicode whitespace to U+000B first), and \p{X} tests the Unicode class for non-ASCII
// code points but a fixed ASCII set for ASCII ones (so '~' is in no \p class, as there).
//
// Thread safety: a compiled Regex is immutable; find() may run concurrently.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.h"

namespace gantry::engine {

class Regex {
public:
  static Result<Regex> compile(std::string_view pattern);

  // Finds the leftmost non-empty match in text[from, end) (the text is a fragment: ^, $ and
  // lookahead see only it). Returns false when there is none; otherwise sets [*begin, *end_out).
  bool find(std::span<const uint32_t> text, size_t from, size_t *begin, size_t *end_out) const;

  struct CharClass {
    std::vector<std::pair<uint32_t, uint32_t>> ranges;
    uint32_t categories = 0; // bit per unicode::Class
    bool space = false, not_space = false, digit = false, not_digit = false;
    bool word = false, not_word = false;
    bool negated = false;
    bool matches(uint32_t cp) const;
  };

  enum class Op : uint8_t {
    kClass,     // arg: class index
    kAny,       // any code point except line terminators
    kSplit,     // try x first, then y
    kJmp,       // x
    kLookahead, // x: sub-program start; negate
    kBegin,     // ^
    kEnd,       // $
    kMatch,
  };
  struct Inst {
    Op op;
    bool negate = false;
    uint32_t x = 0, y = 0;
  };

private:
  Regex() = default;
  // Runs the program from pc anchored at pos; returns the end of the first match or -1.
  long run(std::span<const uint32_t> text, uint32_t pc, size_t pos, bool nonempty) const;

  std::vector<Inst> prog_;
  std::vector<CharClass> classes_;
  friend class RegexCompiler;
};

} // namespace gantry::engine
