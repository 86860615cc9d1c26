// The grammar that forces a tool call (tool_choice "required" or a named function): GBNF text
// (llama.cpp's format) for the grammar engine, which compiles it and masks the tokens that
// cannot continue it. The output it admits is exactly what ToolCallParser reads back for the
// chat-template family, with each call's arguments constrained by its function's JSON schema:
//   kHermes   <tool_call>\n{"name": "<fn>", "arguments": <args>}\n</tool_call>   (repeated,
//             separated by "\n", when parallel)
//   kMistral  [TOOL_CALLS][{"name": "<fn>", "arguments": <args>}(, {...})*]
//   kLlama3   {"name": "<fn>", "parameters": <args>}(; {...})*
//   kGeneric  {"tool_calls": [{"name": "<fn>", "arguments": <args>}(, {...})*]}
// With parallel calls, at most kMaxForcedCalls calls (the repetitions above are bounded).
// <fn> alternates over the allowed functions (all of them for "required", one for a named
// choice); a function without a schema takes any JSON object ({"type": "object"}).
//
// The JSON-schema compiler belongs to the grammar engine and is passed in: it returns GBNF rules
// whose start rule is `<prefix>root` and whose other rules all start with `<prefix>` (so the
// rules of several schemas live in one grammar).
#pragma once

#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "api/chat_template.h"
#include "api/tools.h"
#include "core/result.h"

namespace gantry::api {

inline constexpr int kMaxForcedCalls = 8;

using SchemaToGbnf =
    std::function<Result<std::string>(std::string_view schema_json, std::string_view rule_prefix)>;

// kInvalidArgument (param "tool_choice") for kAuto/kNone, for no tools, or for a named function
// that is not among `tools`; errors of schema_to_gbnf are passed on (naming the tool's
// parameters as their param when they name none).
Result<std::string> tool_call_grammar(ChatFormat format, const std::vector<FunctionTool> &tools,
                                      const ToolChoice &choice, bool parallel,
                                      const SchemaToGbnf &schema_to_gbnf);

} // namespace gantry::api
