#include "engine/batch/text_stream.h"

#include <gtest/gtest.h>

namespace gantry::engine {
namespace {

TEST(TextStreamTest, HoldsBackPossibleStopPrefixes) {
  TextStream ts({"\nUser:"});
  bool stopped = false;
  EXPECT_EQ(ts.push("Hello", stopped), "Hello");
  EXPECT_EQ(ts.push(" there\nUs", stopped), " there") << "'\\nUs' may start the stop string";
  EXPECT_FALSE(stopped);
  EXPECT_EQ(ts.push("ed", stopped), "\nUsed") << "not a stop after all";
  EXPECT_EQ(ts.push("\nUser: hi", stopped), "");
  EXPECT_TRUE(stopped);
}

TEST(TextStreamTest, StopInsideOnePiece) {
  TextStream ts({"END"});
  bool stopped = false;
  EXPECT_EQ(ts.push("abcENDdef", stopped), "abc");
  EXPECT_TRUE(stopped);
}

TEST(TextStreamTest, EarliestOfSeveralStops) {
  TextStream ts({"zz", "b"});
  bool stopped = false;
  EXPECT_EQ(ts.push("aabzz", stopped), "aa");
  EXPECT_TRUE(stopped);
}

TEST(TextStreamTest, WaitsForCompleteUtf8) {
  TextStream ts({});
  bool stopped = false;
  const std::string euro = "\xE2\x82\xAC";
  EXPECT_EQ(ts.push(euro.substr(0, 1), stopped), "");
  EXPECT_EQ(ts.push(euro.substr(1, 1), stopped), "");
  EXPECT_EQ(ts.push(euro.substr(2, 1) + "x", stopped), euro + "x");
  EXPECT_EQ(ts.push("\xF0\x9F", stopped), "");
  // Audit L2: a generation cut inside a character must not leak raw bytes into JSON.
  EXPECT_EQ(ts.flush(), "\xEF\xBF\xBD") << "flush reports an incomplete sequence as U+FFFD";
}

TEST(TextStreamTest, IllFormedBytesBecomeReplacementCharacters) {
  TextStream ts({});
  bool stopped = false;
  // A byte-fallback lead byte followed by ASCII, and a stray continuation byte.
  EXPECT_EQ(ts.push("\xE4", stopped), "");
  EXPECT_EQ(ts.push("a", stopped), "\xEF\xBF\xBD"
                                   "a");
  EXPECT_EQ(ts.push("\x80"
                    "b",
                    stopped),
            "\xEF\xBF\xBD"
            "b");
}

TEST(TextStreamTest, Utf8CompletePrefix) {
  EXPECT_EQ(utf8_complete_prefix("abc"), 3u);
  EXPECT_EQ(utf8_complete_prefix("ab\xC3"), 2u);
  EXPECT_EQ(utf8_complete_prefix("ab\xC3\xA9"), 4u);
  EXPECT_EQ(utf8_complete_prefix("\xE2\x82"), 0u);
}

} // namespace
} // namespace gantry::engine
