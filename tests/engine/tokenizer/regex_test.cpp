#include "engine/tokenizer/regex.h"

#include <gtest/gtest.h>

#include "engine/tokenizer/unicode.h"

namespace gantry::engine {
namespace {

// Returns the pieces a regex split gives (matches and gaps), like llama.cpp's splitter.
std::vector<std::string> pieces(std::string_view pattern, std::string_view text) {
  auto re = Regex::compile(pattern);
  EXPECT_TRUE(re.ok()) << (re.ok() ? "" : re.error().message);
  if (!re.ok())
    return {};
  const auto cps = unicode::decode_utf8(text);
  std::vector<std::string> out;
  size_t pos = 0, b = 0, e = 0;
  auto emit = [&](size_t from, size_t to) {
    std::string s;
    for (size_t i = from; i < to; ++i)
      unicode::append_utf8(cps[i], s);
    out.push_back(s);
  };
  while (pos < cps.size() && re->find(cps, pos, &b, &e)) {
    if (b > pos)
      emit(pos, b);
    emit(b, e);
    pos = e;
  }
  if (pos < cps.size())
    emit(pos, cps.size());
  return out;
}

using V = std::vector<std::string>;

TEST(Regex, AlternationIsOrderedNotLongest) { EXPECT_EQ(pieces("a|ab", "ab"), (V{"a", "b"})); }

TEST(Regex, NegativeLookaheadLeavesLastSpace) {
  EXPECT_EQ(pieces("\\s+(?!\\S)|\\s+", "a   b"), (V{"a", "  ", " ", "b"}));
  EXPECT_EQ(pieces(" ?\\p{L}+|\\s+(?!\\S)", "a   b"), (V{"a", "  ", " b"}));
}

TEST(Regex, UnicodeCategories) {
  EXPECT_EQ(pieces("\\p{L}+", "ab\xc3\xa9"
                              "1"),
            (V{"ab\xc3\xa9", "1"}));
  EXPECT_EQ(pieces("\\p{N}{1,3}", "12345"), (V{"123", "45"}));
  EXPECT_EQ(pieces("[^\\s\\p{L}\\p{N}]+", "a,.b"), (V{"a", ",.", "b"}));
}

TEST(Regex, EndAnchorAndLiteralRanges) {
  EXPECT_EQ(pieces("\\s+$", "a  b  "), (V{"a  b", "  "}));
  EXPECT_EQ(pieces("[\xe4\xb8\x80-\xe9\xbe\xa5]+", "ab\xe4\xb8\xad\xe6\x96\x87"),
            (V{"ab", "\xe4\xb8\xad\xe6\x96\x87"}));
}

TEST(Regex, RejectsWhatItCannotRun) {
  EXPECT_FALSE(Regex::compile("\\p{Han}+").ok());
  EXPECT_FALSE(Regex::compile("a*?").ok());
  EXPECT_FALSE(Regex::compile("(a").ok());
  EXPECT_FALSE(Regex::compile("(a*)*").ok());
}

} // namespace
} // namespace gantry::engine
