// The tool-call parser per family: complete outputs, the same outputs streamed in random splits
// (the result must not depend on where the pieces break), malformed calls kept as content, and
// parallel_tool_calls=false.
#include "api/tool_call_parser.h"

#include <gtest/gtest.h>

#include <map>
#include <random>

namespace gantry::api {
namespace {

struct Parsed {
  std::string content;
  std::vector<ToolCall> calls;
};

// Feeds `pieces` and finish(), checking the fragment protocol on the way: a call's first
// fragment has an id and a name, later ones only arguments, indexes count up from 0.
Parsed run(ToolStyle style, const std::vector<std::string> &pieces, bool parallel = true) {
  ToolCallParser p(style, parallel, 42);
  Parsed out;
  auto take = [&](ToolParse r) {
    out.content += r.content;
    for (const auto &d : r.calls) {
      if (!d.id.empty()) {
        EXPECT_EQ(d.index, static_cast<int>(out.calls.size()));
        EXPECT_TRUE(d.id.starts_with("call_")) << d.id;
        EXPECT_EQ(d.id.size(), 29u) << d.id;
        EXPECT_FALSE(d.name.empty());
        out.calls.push_back({d.id, d.name, d.arguments});
      } else {
        EXPECT_TRUE(d.name.empty());
        EXPECT_EQ(d.index + 1, static_cast<int>(out.calls.size()));
        if (!out.calls.empty())
          out.calls.back().arguments += d.arguments;
      }
    }
  };
  for (const auto &s : pieces)
    take(p.push(s));
  take(p.finish());
  EXPECT_EQ(p.calls(), static_cast<int>(out.calls.size()));
  return out;
}

// `text` cut at random places (several seeds), each split parsed like the whole.
std::vector<std::vector<std::string>> splits(const std::string &text) {
  std::vector<std::vector<std::string>> out;
  out.push_back({text});
  std::vector<std::string> bytes;
  for (char c : text)
    bytes.emplace_back(1, c);
  out.push_back(bytes);
  for (uint32_t seed = 1; seed <= 20; ++seed) {
    std::mt19937 rng(seed);
    std::vector<std::string> pieces;
    size_t i = 0;
    while (i < text.size()) {
      const size_t n = 1 + rng() % 7;
      pieces.push_back(text.substr(i, n));
      i += n;
    }
    out.push_back(pieces);
  }
  return out;
}

struct Case {
  const char *name;
  ToolStyle style;
  std::string output;
  std::string content;
  std::vector<std::pair<std::string, std::string>> calls; // name, arguments
};

const std::vector<Case> &cases() {
  static const std::vector<Case> c = {
      {"hermes one call",
       ToolStyle::kHermes,
       "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n"
       "</tool_call>",
       "",
       {{"get_weather", "{\"city\": \"Paris\"}"}}},
      {"hermes text then two calls",
       ToolStyle::kHermes,
       "Let me check.\n<tool_call>\n{\"name\": \"a\", \"arguments\": {\"x\": [1, {\"y\": \"}\"}]}}"
       "\n</tool_call>\n<tool_call>\n{\"name\": \"b\", \"arguments\": {}}\n</tool_call>",
       "Let me check.\n",
       {{"a", "{\"x\": [1, {\"y\": \"}\"}]}"}, {"b", "{}"}}},
      {"hermes unclosed call at the end",
       ToolStyle::kHermes,
       "<tool_call>\n{\"name\": \"a\", \"arguments\": {\"q\": 1}}",
       "",
       {{"a", "{\"q\": 1}"}}},
      {"hermes malformed call stays content",
       ToolStyle::kHermes,
       "x <tool_call>\n{\"name\": \"a\", \"arguments\": {oops}\n</tool_call> y",
       "x <tool_call>\n{\"name\": \"a\", \"arguments\": {oops}\n</tool_call> y",
       {}},
      {"hermes text with a lone angle bracket",
       ToolStyle::kHermes,
       "a < b <tool and <tool_ca",
       "a < b <tool and <tool_ca",
       {}},
      {"mistral calls",
       ToolStyle::kMistral,
       "[TOOL_CALLS] [{\"name\": \"a\", \"arguments\": {\"k\": \"v\"}, \"id\": \"abcdefghi\"}, "
       "{\"name\": \"b\", \"arguments\": {}}]",
       "",
       {{"a", "{\"k\": \"v\"}"}, {"b", "{}"}}},
      {"mistral text then malformed",
       ToolStyle::kMistral,
       "Sure [TOOL_CALLS][{\"name\": ",
       "Sure [TOOL_CALLS][{\"name\": ",
       {}},
      {"mistral plain text",
       ToolStyle::kMistral,
       "[TOOL is not a marker [TOOL_CALL",
       "[TOOL is not a marker [TOOL_CALL",
       {}},
      {"llama3 call",
       ToolStyle::kLlama3,
       "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}",
       "",
       {{"get_weather", "{\"city\": \"Paris\"}"}}},
      {"llama3 python tag and two calls",
       ToolStyle::kLlama3,
       "<|python_tag|>{\"name\": \"a\", \"parameters\": {}}; {\"name\": \"b\", \"parameters\": "
       "{\"n\": 2}}",
       "",
       {{"a", "{}"}, {"b", "{\"n\": 2}"}}},
      {"llama3 text",
       ToolStyle::kLlama3,
       "  The weather is {mild}.",
       "  The weather is {mild}.",
       {}},
      {"llama3 json that is not a call",
       ToolStyle::kLlama3,
       "{\"answer\": 42}",
       "{\"answer\": 42}",
       {}},
      {"llama3 arguments as JSON text in a string",
       ToolStyle::kLlama3,
       "{\"name\": \"a\", \"parameters\": \"{\\\"x\\\": 1}\"}",
       "",
       {{"a", "{\"x\": 1}"}}},
      {"llama3 string arguments that are not an object stay text",
       ToolStyle::kLlama3,
       "{\"name\": \"f\", \"parameters\": \"f\"}",
       "{\"name\": \"f\", \"parameters\": \"f\"}",
       {}},
      {"llama3 truncated call",
       ToolStyle::kLlama3,
       "{\"name\": \"a\", \"parameters\": {\"x\":",
       "{\"name\": \"a\", \"parameters\": {\"x\":",
       {}},
      {"generic calls",
       ToolStyle::kGeneric,
       "\n{\"tool_calls\": [{\"name\": \"a\", \"arguments\": {\"s\": \"]}\"}}, {\"name\": \"b\", "
       "\"arguments\": \"{\\\"n\\\": 1}\"}]}\n",
       "",
       {{"a", "{\"s\": \"]}\"}"}, {"b", "{\"n\": 1}"}}},
      {"generic bare call",
       ToolStyle::kGeneric,
       "{\"name\": \"a\", \"arguments\": {\"z\": null}}",
       "",
       {{"a", "{\"z\": null}"}}},
      {"generic story text",
       ToolStyle::kGeneric,
       "Once upon a time {there} was",
       "Once upon a time {there} was",
       {}},
      {"generic invalid json",
       ToolStyle::kGeneric,
       "{\"tool_calls\": [{\"name\": \"a\",}]}",
       "{\"tool_calls\": [{\"name\": \"a\",}]}",
       {}},
      {"generic arguments not an object",
       ToolStyle::kGeneric,
       "{\"tool_calls\": [{\"name\": \"a\", \"arguments\": 3}]}",
       "{\"tool_calls\": [{\"name\": \"a\", \"arguments\": 3}]}",
       {}},
  };
  return c;
}

TEST(ToolCallParser, EveryFamilyWholeAndInRandomSplits) {
  for (const Case &c : cases()) {
    for (const auto &pieces : splits(c.output)) {
      const Parsed p = run(c.style, pieces);
      EXPECT_EQ(p.content, c.content) << c.name << " (" << pieces.size() << " pieces)";
      ASSERT_EQ(p.calls.size(), c.calls.size()) << c.name << " (" << pieces.size() << " pieces)";
      for (size_t i = 0; i < c.calls.size(); ++i) {
        EXPECT_EQ(p.calls[i].name, c.calls[i].first) << c.name;
        EXPECT_EQ(p.calls[i].arguments, c.calls[i].second) << c.name;
      }
    }
  }
}

TEST(ToolCallParser, ContentIsReleasedWithoutWaitingForTheEnd) {
  ToolCallParser hermes(ToolStyle::kHermes, true, 1);
  EXPECT_EQ(hermes.push("Hello <tool").content, "Hello ");
  EXPECT_EQ(hermes.push("box> world").content, "<toolbox> world");
  ToolCallParser generic(ToolStyle::kGeneric, true, 1);
  EXPECT_EQ(generic.push("{").content, "");
  EXPECT_EQ(generic.push(" \"story").content, "{ \"story");
  EXPECT_EQ(generic.push("\": 1}").content, "\": 1}");
}

TEST(ToolCallParser, ParallelFalseKeepsTheFirstCall) {
  const Parsed p = run(ToolStyle::kGeneric,
                       {"{\"tool_calls\": [{\"name\": \"a\", \"arguments\": {}}, {\"name\": \"b\", "
                        "\"arguments\": {}}]}"},
                       false);
  ASSERT_EQ(p.calls.size(), 1u);
  EXPECT_EQ(p.calls[0].name, "a");
  EXPECT_EQ(p.content, "");
}

TEST(ToolCallParser, IdsDifferPerCall) {
  const Parsed p = run(ToolStyle::kMistral, {"[TOOL_CALLS][{\"name\": \"a\", \"arguments\": {}}, "
                                             "{\"name\": \"a\", \"arguments\": {}}]"});
  ASSERT_EQ(p.calls.size(), 2u);
  EXPECT_NE(p.calls[0].id, p.calls[1].id);
}

TEST(ToolCallParser, HeldTextIsBounded) {
  ToolCallParser p(ToolStyle::kHermes, true, 1);
  const std::string head = "<tool_call>{\"name\": \"a\", \"arguments\": {\"s\": \"";
  EXPECT_EQ(p.push(head).content, "");
  const std::string big(ToolCallParser::kMaxHeldBytes, 'x');
  const ToolParse r = p.push(big);
  EXPECT_TRUE(r.calls.empty());
  EXPECT_EQ(r.content, head + big);                        // everything held comes out as text
  EXPECT_EQ(p.push("<tool_call>").content, "<tool_call>"); // and the rest passes through
}

} // namespace
} // namespace gantry::api
