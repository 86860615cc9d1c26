// The matcher over real vocabularies: random walks through JSON and other grammars end only in
// complete documents, allows() agrees with apply(), UTF-8 split across tokens, end-of-generation
// and control tokens, finished(), clones, and the live-stack bound.
#include "engine/grammar/matcher.h"

#include <boost/json.hpp>
#include <cmath>
#include <limits>

#include <gtest/gtest.h>

#include "engine/grammar/walk.h"

namespace gantry::engine {
namespace {

using grammar_test::random_walk;
using grammar_test::vocab;
using grammar_test::vocab_names;

const char *kJsonGbnf = R"(root   ::= object
value  ::= object | array | string | number | ("true" | "false" | "null") ws
object ::= "{" ws ( string ":" ws value ("," ws string ":" ws value)* )? "}" ws
array  ::= "[" ws ( value ("," ws value)* )? "]" ws
string ::= "\"" ( [^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" hex4) )* "\"" ws
hex4   ::= [0-9a-cA-CefEF] [0-9a-fA-F]{3} | [dD] [0-7] [0-9a-fA-F]{2}
number ::= ("-"? ([0-9] | [1-9] [0-9]{0,15})) ("." [0-9]{1,16})? ([eE] [-+]? [0-9]{1,3})? ws
ws     ::= | " " | "\n" [ \t]{0,20}
)";

std::shared_ptr<const Grammar> compile(const std::string &text) {
  auto g = compile_gbnf(text);
  if (!g.ok())
    throw std::runtime_error(g.error().message);
  return *g;
}

TEST(GrammarMatcher, JsonWalksProduceJson) {
  auto g = compile(kJsonGbnf);
  for (const auto &name : vocab_names()) {
    const auto &v = vocab(name);
    GrammarMatcher proto(g, v.trie);
    int finished = 0;
    for (uint64_t seed = 1; seed <= 40; ++seed) {
      auto r = random_walk(proto, v, seed, 600, seed <= 2 ? 4 : 0);
      if (!r.ended)
        continue; // ran out of steps mid-document (the engine's "length" case)
      ++finished;
      boost::json::error_code ec;
      auto doc = boost::json::parse(r.text, ec);
      EXPECT_FALSE(ec) << name << " seed " << seed << ": " << r.text;
      EXPECT_TRUE(doc.is_object()) << r.text;
    }
    EXPECT_GE(finished, 30) << name;
  }
}

TEST(GrammarMatcher, EndOnlyWhenComplete) {
  const auto &v = vocab("stories260K");
  GrammarMatcher m(compile(R"(root ::= "[" [0-9]+ ("," [0-9]+)* "]")"), v.trie);
  const int32_t eos = v.tok->eos_id();
  const int32_t bos = v.tok->bos_id();
  for (const char *part : {"[", "1", "2", ",", "3"}) {
    EXPECT_FALSE(m.allows(eos)) << part;
    ASSERT_TRUE(m.accept_text(part)) << part;
    EXPECT_FALSE(m.finished());
  }
  EXPECT_FALSE(m.allows(eos));
  EXPECT_FALSE(m.accept_text("]]"));
  ASSERT_TRUE(m.accept_text("]"));
  EXPECT_TRUE(m.allows(eos));
  EXPECT_FALSE(m.allows(bos)); // control tokens never
  EXPECT_TRUE(m.finished());
  std::vector<float> logits(static_cast<size_t>(v.tok->n_vocab()) + 3, 1.0f);
  m.apply(logits);
  for (size_t t = 0; t < logits.size(); ++t)
    EXPECT_EQ(std::isfinite(logits[t]), v.tok->is_eog(static_cast<int32_t>(t))) << t;
}

TEST(GrammarMatcher, Utf8SplitAcrossByteTokens) {
  const auto &v = vocab("stories260K");
  // U+00E9 is one token, or the byte tokens <0xC3> <0xA9>.
  GrammarMatcher m(compile(R"(root ::= "\u00e9" [a-z])"), v.trie);
  auto c3 = v.tok->token_id("<0xC3>");
  auto a9 = v.tok->token_id("<0xA9>");
  auto a8 = v.tok->token_id("<0xA8>");
  ASSERT_TRUE(c3 && a9 && a8);
  std::vector<float> logits(static_cast<size_t>(v.tok->n_vocab()), 0.0f);
  m.apply(logits);
  int allowed = 0;
  for (int32_t t = 0; t < v.tok->n_vocab(); ++t)
    if (std::isfinite(logits[t])) {
      ++allowed;
      EXPECT_EQ(v.tok->token_to_piece(t).substr(0, 1), "\xc3");
    }
  EXPECT_EQ(allowed, 2); // <0xC3> and the whole-character token
  EXPECT_TRUE(std::isfinite(logits[*c3]));
  m.accept(*c3);
  EXPECT_FALSE(m.finished());
  EXPECT_FALSE(m.allows(v.tok->eos_id()));
  EXPECT_FALSE(m.allows(*a8)); // U+00E8, not in the grammar
  EXPECT_TRUE(m.allows(*a9));
  m.accept(*a9);
  EXPECT_FALSE(m.allows(*c3));
  EXPECT_TRUE(m.allows(*v.tok->token_id("a")));
  m.accept(*v.tok->token_id("a"));
  EXPECT_TRUE(m.finished());
}

TEST(GrammarMatcher, InvalidUtf8NeverAllowed) {
  const auto &v = vocab("stories260K");
  GrammarMatcher m(compile("root ::= .*\n"), v.trie);
  for (const char *bad : {"<0x80>", "<0xC0>", "<0xC1>", "<0xF5>", "<0xFF>"})
    EXPECT_FALSE(m.allows(*v.tok->token_id(bad))) << bad;
  EXPECT_TRUE(m.allows(*v.tok->token_id("<0xE2>")));
  m.accept(*v.tok->token_id("<0xED>"));
  EXPECT_FALSE(m.allows(*v.tok->token_id("<0xA0>"))); // would be a surrogate
  EXPECT_TRUE(m.allows(*v.tok->token_id("<0x9F>")));
  EXPECT_FALSE(m.allows(*v.tok->token_id("a")));
  EXPECT_FALSE(m.allows(v.tok->eos_id())); // mid code point
}

TEST(GrammarMatcher, RefusedAcceptKillsTheSequence) {
  const auto &v = vocab("stories260K");
  GrammarMatcher m(compile(R"(root ::= "a"+)"), v.trie);
  EXPECT_FALSE(m.finished());
  m.accept(*v.tok->token_id("b"));
  EXPECT_EQ(m.stats().refused_accepts, 1u);
  EXPECT_TRUE(m.finished());
  EXPECT_FALSE(m.allows(v.tok->eos_id()));
}

TEST(GrammarMatcher, ClonesAreIndependent) {
  const auto &v = vocab("llama-2-tiny-random");
  GrammarMatcher m(compile(R"(root ::= "yes" | "no")"), v.trie);
  auto c = m.clone();
  ASSERT_TRUE(m.accept_text("ye"));
  EXPECT_TRUE(c->allows(*v.tok->token_id("no")));
  EXPECT_FALSE(m.allows(*v.tok->token_id("no")));
  EXPECT_TRUE(m.allows(*v.tok->token_id("s")));
}

TEST(GrammarMatcher, AmbiguousGrammarIsBounded) {
  const auto &v = vocab("stories260K");
  // Every "(" can open p or q: the distinct stacks double with each one.
  GrammarMatcher m(compile("root ::= p\n"
                           "p ::= \"(\" p \")\" | \"(\" q \")\" | \"x\"\n"
                           "q ::= \"(\" p \")\" | \"(\" q \")\" | \"y\"\n"),
                   v.trie);
  ASSERT_TRUE(m.accept_text(std::string(20, '(')));
  EXPECT_GT(m.stats().truncated_stacks, 0u);
  std::vector<float> logits(static_cast<size_t>(v.tok->n_vocab()), 0.0f);
  m.apply(logits); // bounded by kMaxStacks live stacks, not 2^20
  EXPECT_TRUE(std::isfinite(logits[*v.tok->token_id("(")]));
}

TEST(GrammarMatcher, MaskCacheServesRepeatedStates) {
  const auto &v = vocab("llama-2-tiny-random");
  GrammarMatcher m(compile(R"(root ::= ("[" [a-z]* "]")*)"), v.trie);
  std::vector<float> a(32000, 0.0f), b(32000, 0.0f);
  m.apply(a);
  ASSERT_TRUE(m.accept_text("[abc]"));
  m.apply(b); // the same state as at the start
  EXPECT_EQ(m.stats().mask_cache_hits, 1u);
  EXPECT_EQ(m.stats().mask_cache_misses, 1u);
  for (size_t i = 0; i < a.size(); ++i)
    ASSERT_EQ(std::isfinite(a[i]), std::isfinite(b[i])) << i;
}

} // namespace
} // namespace gantry::engine
