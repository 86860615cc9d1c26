#include <gtest/gtest.h>

#include "core/utf8.h"

namespace gantry {
namespace {

TEST(Utf8, ValidTextIsUnchanged) {
  const std::string s = "plain, \xC3\xA9t\xC3\xA9, \xE4\xB8\xAD, \xF0\x9F\x98\x80";
  EXPECT_TRUE(utf8_valid(s));
  EXPECT_EQ(utf8_sanitize(s), s);
}

TEST(Utf8, LoneAndTruncatedSequencesBecomeReplacementCharacters) {
  // The audit's case: byte-fallback token <0xE4> alone.
  EXPECT_FALSE(utf8_valid("\xE4"));
  EXPECT_EQ(utf8_sanitize("\xE4"), "\xEF\xBF\xBD");
  // A truncated three-byte sequence is one maximal subpart: one U+FFFD.
  EXPECT_EQ(utf8_sanitize("a\xE4\xB8"), "a\xEF\xBF\xBD");
  // Lead byte followed by ASCII: the ASCII survives.
  EXPECT_EQ(utf8_sanitize("\xE4z"), "\xEF\xBF\xBDz");
  // Stray continuation bytes, overlong encodings, surrogates, beyond U+10FFFF.
  EXPECT_EQ(utf8_sanitize("\x80\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_FALSE(utf8_valid("\xC0\xAF"));
  EXPECT_FALSE(utf8_valid("\xED\xA0\x80"));
  EXPECT_FALSE(utf8_valid("\xF4\x90\x80\x80"));
  EXPECT_TRUE(utf8_valid(utf8_sanitize("\xC0\xAF\xED\xA0\x80\xF4\x90\x80\x80\xFF")));
}

TEST(Utf8, TruncateCutsOnACharacterBoundary) {
  EXPECT_EQ(utf8_truncate("short", 64), "short");
  EXPECT_EQ(utf8_truncate("abcdef", 3), "abc...");
  // "é" is two bytes; cutting at 2 would split it, so the cut moves back to 1.
  EXPECT_EQ(utf8_truncate("a\xC3\xA9zz", 2), "a...");
  EXPECT_TRUE(utf8_valid(utf8_truncate(std::string(5000, 'x') + "\xFF", 256)));
  EXPECT_EQ(utf8_truncate(std::string(5000, 'x'), 256).size(), 259u);
}

} // namespace
} // namespace gantry
