// The GBNF parser: what it accepts (checked by matching text), its errors with line and column,
// and its bounds.
#include "engine/grammar/grammar.h"

#include <gtest/gtest.h>

#include "engine/grammar/matcher.h"
#include "engine/grammar/token_trie.h"
#include "engine/grammar/walk.h"

namespace gantry::engine {
namespace {

// Whether the grammar accepts exactly `text` (walked as raw bytes, no tokenizer involved).
bool matches(const std::string &gbnf, const std::string &text) {
  auto g = compile_gbnf(gbnf);
  EXPECT_TRUE(g.ok()) << (g.ok() ? "" : g.error().message);
  if (!g.ok())
    return false;
  GrammarMatcher m(*g, grammar_test::vocab("stories260K").trie);
  return m.accept_text(text) && m.accepting();
}

std::string error_of(const std::string &gbnf) {
  auto g = compile_gbnf(gbnf);
  if (g.ok())
    return "(compiled)";
  EXPECT_EQ(g.error().code, ErrorCode::kInvalidArgument);
  return g.error().message;
}

TEST(Gbnf, LiteralsAndEscapes) {
  EXPECT_TRUE(matches(R"(root ::= "ab\n\t\"\\\x41\u00e9\U0001F600")",
                      "ab\n\t\"\\A\xc3\xa9\xf0\x9f\x98\x80"));
  EXPECT_TRUE(matches("root ::= \"h\xc3\xa9\"", "h\xc3\xa9"));
  EXPECT_FALSE(matches(R"(root ::= "ab")", "a"));
  EXPECT_FALSE(matches(R"(root ::= "ab")", "abc"));
}

TEST(Gbnf, ClassesAndAny) {
  const std::string g = R"(root ::= [a-c0-9_] [^"\\] .)";
  EXPECT_TRUE(matches(g, "b5\xe2\x82\xac"));
  EXPECT_TRUE(matches(g, "_x\n"));
  EXPECT_FALSE(matches(g, "d5x"));
  EXPECT_FALSE(matches(g, "a\"x"));
  EXPECT_FALSE(matches(g, "a\\x"));
  EXPECT_TRUE(matches(R"(root ::= [-a]+ [a-])", "-a-"));
}

TEST(Gbnf, GroupsAlternationAndRepetition) {
  const std::string g = "root ::= (\"a\" | \"b\")* \"c\"+ \"d\"?   # comment\n";
  EXPECT_TRUE(matches(g, "abbac"));
  EXPECT_TRUE(matches(g, "ccd"));
  EXPECT_FALSE(matches(g, "ab"));
  EXPECT_FALSE(matches(g, "cdd"));
  EXPECT_TRUE(matches(R"(root ::= "x"{3})", "xxx"));
  EXPECT_FALSE(matches(R"(root ::= "x"{3})", "xx"));
  EXPECT_FALSE(matches(R"(root ::= "x"{3})", "xxxx"));
  EXPECT_TRUE(matches(R"(root ::= "ab"{2,})", "abababab"));
  EXPECT_FALSE(matches(R"(root ::= "ab"{2,})", "ab"));
  for (int n = 0; n <= 5; ++n)
    EXPECT_EQ(matches(R"(root ::= [0-9]{1,3})", std::string(n, '7')), n >= 1 && n <= 3) << n;
  EXPECT_TRUE(matches(R"(root ::= "a"{0,2} "b")", "b"));
}

TEST(Gbnf, RulesReferencesAndLines) {
  const std::string g = "# leading comment\n"
                        "root ::= item (\",\" item)*\n"
                        "item ::= num | \"[\" (\n"
                        "    root\n"
                        "  ) \"]\"\n"
                        "num  ::= [0-9]+\n";
  EXPECT_TRUE(matches(g, "1,[2,[3]],45"));
  EXPECT_FALSE(matches(g, "1,[2"));
  const std::string multi = "root ::= \"a\" |\n  \"b\"\n";
  EXPECT_TRUE(matches(multi, "b"));
}

TEST(Gbnf, ErrorsNameLineAndColumn) {
  EXPECT_EQ(error_of("root ::= value\n"), "grammar line 1 column 10: undefined rule 'value'");
  EXPECT_EQ(error_of("item ::= \"x\"\n"),
            "grammar line 1 column 1: the grammar has no 'root' rule");
  EXPECT_EQ(error_of("root ::= \"x\"\nroot ::= \"y\"\n"),
            "grammar line 2 column 1: rule 'root' is defined twice");
  EXPECT_EQ(error_of("root ::= \"x\n"), "grammar line 2 column 1: unterminated literal");
  EXPECT_EQ(error_of("root ::= [ab"), "grammar line 1 column 13: unterminated character class");
  EXPECT_EQ(error_of("root ::= (\"x\"\n"), "grammar line 2 column 1: expecting ')'");
  EXPECT_EQ(error_of("root ::= \"\\q\"\n"), "grammar line 1 column 11: unknown escape \\q");
  EXPECT_EQ(error_of("root ::= *\n"),
            "grammar line 1 column 10: a repetition operator needs something before it");
  EXPECT_EQ(error_of("root ::= \"a\"{3,2}\n"),
            "grammar line 1 column 18: repetition maximum below its minimum");
  EXPECT_EQ(error_of("root ::= [z-a]\n"), "grammar line 1 column 13: character range out of order");
  EXPECT_EQ(error_of("root \"x\"\n"), "grammar line 1 column 6: expecting ::=");
  EXPECT_EQ(error_of("root ::= \"a\" b ::= \"c\"\n"),
            "grammar line 1 column 14: expecting a newline before the next rule");
  EXPECT_EQ(error_of("root ::= <[1000]>\n"),
            "grammar line 1 column 10: token references (<...>) are not supported");
  EXPECT_EQ(error_of("root ::= \"\\x4\"\n"),
            "grammar line 1 column 14: expecting 2 hex digits after \\x");
}

TEST(Gbnf, RejectsLeftRecursion) {
  EXPECT_EQ(error_of("root ::= root \"a\" | \"b\"\n"),
            "grammar line 1 column 1: left recursion through rule 'root'");
  EXPECT_EQ(error_of("root ::= a\na ::= b \"x\"\nb ::= c? a\nc ::= \"c\"\n"),
            "grammar line 2 column 1: left recursion through rule 'a'");
  // Right recursion and recursion after a terminal are fine.
  EXPECT_TRUE(matches("root ::= \"(\" root \")\" | \"x\"\n", "((x))"));
  EXPECT_TRUE(matches("root ::= \"a\" root | \"\"\n", "aaa"));
}

TEST(Gbnf, Bounds) {
  EXPECT_EQ(error_of("root ::= \"" + std::string(kMaxGrammarBytes, 'a') + "\"\n"),
            "the grammar is longer than 65536 bytes");
  // Repetitions expand: a 64-byte literal repeated 5000 times is 320000 elements.
  EXPECT_NE(error_of("root ::= \"" + std::string(64, 'a') + "\"{5000}\n")
                .find("elements after expanding repetitions"),
            std::string::npos);
  EXPECT_NE(error_of("root ::= (\"a\"{0,9000}){0,9000}\n").find("more than"), std::string::npos);
  // A count beyond the rule cap is refused at the count, before any helper rule is built (the
  // fuzzer's slow input: 16,384 rules built one by one, then refused).
  EXPECT_NE(
      error_of("root ::= m(\"3\"){2,99934}\n").find("repetition count needs more than 16384 rules"),
      std::string::npos);
  EXPECT_NE(error_of("root ::= \"ab\"{200000}\n").find("elements after expanding repetitions"),
            std::string::npos);
  // Right at the caps' edge a repetition still compiles.
  EXPECT_EQ(error_of("root ::= \"a\"{0,4000}\n"), "(compiled)");
  std::string deep = "root ::= " + std::string(kMaxNesting + 2, '(') + "\"x\"" +
                     std::string(kMaxNesting + 2, ')') + "\n";
  EXPECT_NE(error_of(deep).find("groups nest more than 64 deep"), std::string::npos);
  std::string ok =
      "root ::= " + std::string(kMaxNesting, '(') + "\"x\"" + std::string(kMaxNesting, ')') + "\n";
  EXPECT_TRUE(matches(ok, "x"));
}

} // namespace
} // namespace gantry::engine
