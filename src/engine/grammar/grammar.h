// Constrained decoding, part 1: a compiled grammar. compile_gbnf() reads llama.cpp's GBNF format
// (https://github.com/ggml-org/llama.cpp/blob/master/grammars/README.md):
//
//   root   ::= object               # `root` is the start rule; `#` starts a comment
//   object ::= "{" ws ( pair ( "," ws pair )* )? "}"
//   pair   ::= [a-z_]+ ":" ws [^"\\\n]{1,16} | "x" .
//
// literals with \n \r \t \" \\ \[ \] \xHH \uHHHH \UHHHHHHHH escapes, character classes (negated
// with ^, ranges with -), `.` (any code point), groups, `|`, `* + ?`, `{m}` `{m,}` `{m,n}`. A rule
// ends at a newline unless inside parentheses or after `|` / `::=`. Rule names are letters,
// digits, `-` and `_`. Repetitions are rewritten into helper rules the way llama.cpp does, so
// the matcher only ever sees sequences, alternatives and references.
//
// A hostile grammar costs bounded time and memory: the text is at most kMaxGrammarBytes, the
// expanded grammar at most kMaxRules rules and kMaxElements elements, groups nest at most
// kMaxNesting deep. Undefined rules, rules defined twice, a missing `root` and left recursion
// (which would make the matcher's expansion loop) are errors naming the line and column.
//
// Thread safety: a Grammar is immutable once compiled and is shared between threads.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.h"

namespace gantry::engine {

inline constexpr size_t kMaxGrammarBytes = 64 * 1024;
inline constexpr size_t kMaxRules = 16384;
inline constexpr size_t kMaxElements = 1 << 18;
inline constexpr int kMaxNesting = 64;
inline constexpr uint32_t kMaxCodePoint = 0x10FFFF;

// A set of code points: sorted, disjoint, non-adjacent ranges (negation resolved at compile
// time), with the ASCII part as a bitmap because nearly every step of a JSON grammar is ASCII.
struct CharClass {
  struct Range {
    uint32_t lo;
    uint32_t hi;
  };
  std::vector<Range> ranges;
  std::array<uint64_t, 2> ascii{};

  bool contains(uint32_t cp) const {
    if (cp < 128)
      return (ascii[cp >> 6] >> (cp & 63)) & 1;
    return contains_slow(cp);
  }
  // Whether some code point in [lo, hi] is in the class.
  bool intersects(uint32_t lo, uint32_t hi) const;
  bool contains_slow(uint32_t cp) const;
};

// One grammar symbol. A rule's alternatives are runs of elements in Grammar::elems, each run
// closed by a kEnd element.
struct GrammarElem {
  enum Kind : uint8_t { kEnd, kChar, kRef };
  Kind kind = kEnd;
  uint32_t value = 0; // kChar: index into classes; kRef: rule index
};

class Grammar {
public:
  std::vector<GrammarElem> elems;
  std::vector<std::vector<uint32_t>> rule_alts; // per rule: start offsets into elems
  std::vector<std::string> rule_names;          // helper rules are named "<rule>_<n>"
  std::vector<CharClass> classes;
  uint32_t root = 0;

  // The approximate memory this grammar holds (the grammar cache bounds itself by it).
  size_t bytes() const;
};

// Compiles GBNF text. Errors are kInvalidArgument naming the line, the column and the problem
// ("grammar line 3 column 7: undefined rule 'valu'"); `param` is left for the caller.
Result<std::shared_ptr<const Grammar>> compile_gbnf(std::string_view text);

} // namespace gantry::engine
