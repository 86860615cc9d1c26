#include "api/tool_grammar.h"

#include "api/tool_prompt.h"

namespace gantry::api {
namespace {

// A GBNF string literal.
std::string literal(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    switch (c) {
    case '"': out += "\\\""; break;
    case '\\': out += "\\\\"; break;
    case '\n': out += "\\n"; break;
    case '\r': out += "\\r"; break;
    case '\t': out += "\\t"; break;
    default: out += c;
    }
  }
  return out + "\"";
}

} // namespace

Result<std::string> tool_call_grammar(ChatFormat format, const std::vector<FunctionTool> &tools,
                                      const ToolChoice &choice, bool parallel,
                                      const SchemaToGbnf &schema_to_gbnf) {
  if (choice.mode != ToolChoice::Mode::kRequired && choice.mode != ToolChoice::Mode::kFunction)
    return Err(Error::invalid("only a required or named tool choice forces a call", "tool_choice"));
  if (tools.empty())
    return Err(Error::invalid("'tool_choice' requires 'tools'", "tool_choice"));
  const ToolStyle style = tool_style(format);
  const std::string_view args_key = style == ToolStyle::kLlama3 ? "parameters" : "arguments";
  std::string rules;
  std::string alternatives;
  for (std::size_t i = 0; i < tools.size(); ++i) {
    const FunctionTool &t = tools[i];
    if (choice.mode == ToolChoice::Mode::kFunction && t.name != choice.function)
      continue;
    const std::string prefix = "tool" + std::to_string(i) + "-";
    const std::string schema = t.parameters.empty() ? "{\"type\":\"object\"}" : t.parameters;
    auto compiled = schema_to_gbnf(schema, prefix);
    if (!compiled) {
      Error e = compiled.take_error();
      if (e.param.empty())
        e.param = "tools[" + std::to_string(i) + "].function.parameters";
      return Err(std::move(e));
    }
    rules += *compiled;
    if (!rules.empty() && rules.back() != '\n')
      rules += '\n';
    const std::string head = "{\"name\": \"" + t.name + "\", \"" + std::string(args_key) + "\": ";
    rules += "call" + std::to_string(i) + " ::= " + literal(head) + " " + prefix + "root " +
             literal("}") + "\n";
    if (!alternatives.empty())
      alternatives += " | ";
    alternatives += "call" + std::to_string(i);
  }
  if (alternatives.empty()) {
    return Err(Error::invalid("tool_choice names the function '" + choice.function +
                                  "', which is not in 'tools'",
                              "tool_choice"));
  }
  // A forced call with parallel calls allowed may hold several, but not without end: a model
  // that keeps repeating calls (greedy decoding loves a loop) must close the list, so the calls
  // it made come back as calls rather than as text cut off at max_tokens.
  const std::string more = "){0," + std::to_string(kMaxForcedCalls - 1) + "}";
  std::string root;
  switch (style) {
  case ToolStyle::kHermes: {
    const std::string one = literal("<tool_call>\n") + " call " + literal("\n</tool_call>");
    root = one + (parallel ? " (" + literal("\n") + " " + one + more : "");
    break;
  }
  case ToolStyle::kMistral:
    root = literal("[TOOL_CALLS]") + " " + literal(" ") + "? " + literal("[") + " call" +
           (parallel ? " (" + literal(", ") + " call" + more : "") + " " + literal("]");
    break;
  case ToolStyle::kLlama3:
    root = std::string("call") + (parallel ? " (" + literal("; ") + " call" + more : "");
    break;
  case ToolStyle::kGeneric:
    root = literal("{\"tool_calls\": [") + " call" +
           (parallel ? " (" + literal(", ") + " call" + more : "") + " " + literal("]}");
    break;
  }
  return "root ::= " + root + "\ncall ::= " + alternatives + "\n" + rules;
}

} // namespace gantry::api
