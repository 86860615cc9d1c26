// The compiled-grammar cache: hits, LRU eviction by count and by bytes, errors not cached,
// concurrent use.
#include "engine/grammar/grammar_cache.h"

#include <thread>
#include <vector>

#include <gtest/gtest.h>

namespace gantry::engine {
namespace {

GrammarCache::Compile compiler(const std::string &text, int *calls) {
  return [text, calls]() {
    ++*calls;
    return compile_gbnf(text);
  };
}

TEST(GrammarCache, HitsAndEvictsByCount) {
  GrammarCache cache(2, 1 << 20);
  int calls = 0;
  auto a = cache.get_or_compile("a", compiler("root ::= \"a\"", &calls));
  auto a2 = cache.get_or_compile("a", compiler("root ::= \"a\"", &calls));
  ASSERT_TRUE(a.ok() && a2.ok());
  EXPECT_EQ(a->get(), a2->get());
  EXPECT_EQ(calls, 1);
  ASSERT_TRUE(cache.get_or_compile("b", compiler("root ::= \"b\"", &calls)).ok());
  ASSERT_TRUE(cache.get_or_compile("a", compiler("root ::= \"a\"", &calls)).ok()); // a is newest
  ASSERT_TRUE(cache.get_or_compile("c", compiler("root ::= \"c\"", &calls)).ok()); // evicts b
  EXPECT_EQ(calls, 3);
  ASSERT_TRUE(cache.get_or_compile("a", compiler("root ::= \"a\"", &calls)).ok());
  EXPECT_EQ(calls, 3);
  ASSERT_TRUE(cache.get_or_compile("b", compiler("root ::= \"b\"", &calls)).ok());
  EXPECT_EQ(calls, 4);
  const auto s = cache.stats();
  EXPECT_EQ(s.entries, 2u);
  EXPECT_EQ(s.evictions, 2u);
  EXPECT_EQ(s.hits, 3u);
  EXPECT_EQ(s.misses, 4u);
}

TEST(GrammarCache, BoundedByBytes) {
  auto one = compile_gbnf("root ::= [a-z]{0,50}");
  ASSERT_TRUE(one.ok());
  const size_t each = (*one)->bytes();
  GrammarCache cache(100, each * 3);
  int calls = 0;
  for (int i = 0; i < 10; ++i)
    ASSERT_TRUE(
        cache.get_or_compile(std::to_string(i), compiler("root ::= [a-z]{0,50}", &calls)).ok());
  const auto s = cache.stats();
  EXPECT_LE(s.bytes, each * 3);
  EXPECT_GE(s.entries, 1u);
  EXPECT_LT(s.entries, 4u);
  // A grammar larger than the whole budget is returned but not kept.
  GrammarCache tiny(10, 16);
  ASSERT_TRUE(tiny.get_or_compile("x", compiler("root ::= \"x\"", &calls)).ok());
  EXPECT_EQ(tiny.stats().entries, 0u);
}

TEST(GrammarCache, ErrorsAreNotCached) {
  GrammarCache cache(4, 1 << 20);
  int calls = 0;
  EXPECT_FALSE(cache.get_or_compile("bad", compiler("root ::= nope", &calls)).ok());
  EXPECT_FALSE(cache.get_or_compile("bad", compiler("root ::= nope", &calls)).ok());
  EXPECT_EQ(calls, 2);
  EXPECT_EQ(cache.stats().entries, 0u);
}

TEST(GrammarCache, ConcurrentUse) {
  GrammarCache cache(8, 1 << 20);
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < 200; ++i) {
        const std::string key = std::to_string((i + t) % 12);
        auto g =
            cache.get_or_compile(key, [&] { return compile_gbnf("root ::= \"" + key + "\""); });
        if (!g.ok())
          ++failures;
      }
    });
  for (auto &th : threads)
    th.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_LE(cache.stats().entries, 8u);
}

} // namespace
} // namespace gantry::engine
