// The forcing grammar's GBNF text, with a stand-in schema compiler (the grammar engine supplies
// the real one): the rules per family, the allowed functions, and its errors.
#include "api/tool_grammar.h"

#include <gtest/gtest.h>

namespace gantry::api {
namespace {

std::vector<FunctionTool> two_tools() {
  FunctionTool a;
  a.name = "get_weather";
  a.parameters = R"({"type":"object","properties":{"city":{"type":"string"}}})";
  FunctionTool b;
  b.name = "now";
  return {a, b};
}

// Records what it was asked to compile and answers one rule per schema.
struct FakeCompiler {
  std::vector<std::pair<std::string, std::string>> asked; // schema, prefix
  SchemaToGbnf fn() {
    return [this](std::string_view schema, std::string_view prefix) -> Result<std::string> {
      asked.emplace_back(std::string(schema), std::string(prefix));
      return std::string(prefix) + "root ::= \"{}\"\n";
    };
  }
};

TEST(ToolGrammar, RequiredAlternatesOverEveryTool) {
  FakeCompiler c;
  ToolChoice required;
  required.mode = ToolChoice::Mode::kRequired;
  auto g = tool_call_grammar(ChatFormat::kChatML, two_tools(), required, false, c.fn());
  ASSERT_TRUE(g.ok()) << g.error().message;
  EXPECT_EQ(*g, "root ::= \"<tool_call>\\n\" call \"\\n</tool_call>\"\n"
                "call ::= call0 | call1\n"
                "tool0-root ::= \"{}\"\n"
                "call0 ::= \"{\\\"name\\\": \\\"get_weather\\\", \\\"arguments\\\": \" tool0-root "
                "\"}\"\n"
                "tool1-root ::= \"{}\"\n"
                "call1 ::= \"{\\\"name\\\": \\\"now\\\", \\\"arguments\\\": \" tool1-root \"}\"\n");
  ASSERT_EQ(c.asked.size(), 2u);
  EXPECT_EQ(c.asked[0].first, two_tools()[0].parameters);
  EXPECT_EQ(c.asked[1].first, "{\"type\":\"object\"}"); // no schema: any object
  EXPECT_EQ(c.asked[1].second, "tool1-");
}

TEST(ToolGrammar, NamedFunctionAndEachFamilysRoot) {
  ToolChoice named;
  named.mode = ToolChoice::Mode::kFunction;
  named.function = "now";
  struct Expect {
    ChatFormat format;
    const char *root;
  };
  const Expect cases[] = {
      {ChatFormat::kLlama3, "root ::= call (\"; \" call){0,7}\n"},
      {ChatFormat::kMistralV3,
       "root ::= \"[TOOL_CALLS]\" \" \"? \"[\" call (\", \" call){0,7} \"]\"\n"},
      {ChatFormat::kPlain, "root ::= \"{\\\"tool_calls\\\": [\" call (\", \" call){0,7} \"]}\"\n"},
      {ChatFormat::kChatML,
       "root ::= \"<tool_call>\\n\" call \"\\n</tool_call>\" (\"\\n\" \"<tool_call>\\n\" call "
       "\"\\n</tool_call>\"){0,7}\n"},
  };
  for (const Expect &e : cases) {
    FakeCompiler c;
    auto g = tool_call_grammar(e.format, two_tools(), named, true, c.fn());
    ASSERT_TRUE(g.ok()) << g.error().message;
    EXPECT_TRUE(g->starts_with(e.root)) << *g;
    EXPECT_NE(g->find("call ::= call1\n"), std::string::npos) << *g;
    EXPECT_EQ(g->find("call0"), std::string::npos) << *g;
    ASSERT_EQ(c.asked.size(), 1u);
  }
  FakeCompiler c;
  auto llama = tool_call_grammar(ChatFormat::kLlama3, two_tools(), named, false, c.fn());
  ASSERT_TRUE(llama.ok());
  EXPECT_NE(llama->find("\\\"parameters\\\": "), std::string::npos) << *llama;
}

TEST(ToolGrammar, Errors) {
  FakeCompiler c;
  ToolChoice named;
  named.mode = ToolChoice::Mode::kFunction;
  named.function = "missing";
  auto g = tool_call_grammar(ChatFormat::kPlain, two_tools(), named, true, c.fn());
  ASSERT_FALSE(g.ok());
  EXPECT_EQ(g.error().param, "tool_choice");
  ToolChoice autoc;
  EXPECT_FALSE(tool_call_grammar(ChatFormat::kPlain, two_tools(), autoc, true, c.fn()).ok());
  ToolChoice required;
  required.mode = ToolChoice::Mode::kRequired;
  SchemaToGbnf failing = [](std::string_view, std::string_view) -> Result<std::string> {
    return Err(Error::invalid("'pattern' is not supported"));
  };
  auto f = tool_call_grammar(ChatFormat::kPlain, two_tools(), required, true, failing);
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.error().param, "tools[0].function.parameters");
}

} // namespace
} // namespace gantry::api
