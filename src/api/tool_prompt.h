// Tool calling in the prompt: how each chat-template family shows a model its tools, the calls
// it made earlier and their results, and which text in its output is a call. The renderers in
// chat_template.cpp call these for the parts that come from the client (definitions, arguments,
// ids); they keep the family's own markers ([TOOL_CALLS], <tool_call>, ...) as template text so
// encode_chat turns them into control tokens, while everything built here is tokenized as text.
//
// Families (ToolStyle), following the official Hugging Face templates:
//   kHermes   ChatML (Qwen 2.5, Hermes): a "# Tools" block with the definitions inside
//             <tools></tools> in the system turn; calls as
//             <tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>; results as
//             <tool_response>\n...\n</tool_response> inside one user turn per run of results.
//   kLlama3   Llama 3.1 / 3.2 / 3.3 (JSON tool calling, tools in the first user message, the
//             template's default): the system turn says "Environment: ipython" and the
//             knowledge/today dates (the template's default date, "26 Jul 2024"); calls are the
//             whole reply, {"name": ..., "parameters": {...}} (optionally after <|python_tag|>);
//             results in an `ipython` turn.
//   kMistral  the Mistral [INST] families v1, v3, v7 (and their tekken variants):
//             [AVAILABLE_TOOLS] [...][/AVAILABLE_TOOLS] before the last user turn; calls as
//             [TOOL_CALLS] [{"name": ..., "arguments": {...}, "id": ...}]; results as
//             [TOOL_RESULTS] {"content": ..., "call_id": ...}[/TOOL_RESULTS] (tekken formats
//             write no space after the markers).
//   kGeneric  every other format (plain, Llama 2, Mistral legacy, Gemma, Phi, Zephyr, Vicuna,
//             DeepSeek 3): generic_tools_instruction() is added to the system prompt (a system
//             message in front when there is none) and the model is asked to answer with ONLY
//                 {"tool_calls": [{"name": "<tool name>", "arguments": {...}}]}
//             Earlier calls are written into the assistant's turn in that same form; a tool result
//             becomes a user turn holding
//                 {"tool_result": {"tool_call_id": "...", "name": "...", "content": "..."}}
//
// JSON inside prompts is written as the templates' `tojson` filter writes it (Python's json.dumps
// with ensure_ascii=False: ", " and ": " separators; Llama 3 uses indent=4).
#pragma once

#include <boost/json/value.hpp>

#include <string>
#include <string_view>
#include <vector>

#include "api/chat_template.h"
#include "api/tools.h"

namespace gantry::api {

enum class ToolStyle { kGeneric, kHermes, kLlama3, kMistral };
ToolStyle tool_style(ChatFormat format);

// Python's json.dumps(value, ensure_ascii=False[, indent=indent]); indent < 0: one line.
std::string python_json(const boost::json::value &value, int indent = -1);

// {"type": "function", "function": {"name", "description", "parameters"}} as tojson writes it.
std::string tool_definition_json(const FunctionTool &tool, int indent = -1);
// "[def, def, ...]" on one line.
std::string tool_list_json(const std::vector<FunctionTool> &tools);
// A call's arguments as a JSON value: the client's text when it is JSON, else a JSON string.
std::string arguments_json(std::string_view arguments);

// The generic fallback's pieces (see the file comment for the exact form).
std::string generic_tools_instruction(const std::vector<FunctionTool> &tools);
std::string generic_tool_calls_text(const std::vector<ToolCall> &calls);
std::string generic_tool_result_text(std::string_view tool_call_id, std::string_view name,
                                     std::string_view content);

// Hermes: the system block after the client's system prompt (which it follows after "\n\n"), and
// the JSON inside one <tool_call>.
std::string hermes_tools_block(const std::vector<FunctionTool> &tools);
std::string hermes_call_json(const ToolCall &call);

// Llama 3: the system turn's preamble (before the client's system prompt), the tool preamble of
// the first user message (before its text), and one call as the assistant writes it.
std::string llama3_system_preamble();
std::string llama3_user_preamble(const std::vector<FunctionTool> &tools);
std::string llama3_call_json(const ToolCall &call);

// Mistral: the call list after [TOOL_CALLS] ("[{...}, ...]"), and the two halves of a result
// around its content: {"content": <content>, "call_id": "<id>"}.
std::string mistral_calls_json(const std::vector<ToolCall> &calls);
std::string mistral_result_head();
std::string mistral_result_tail(std::string_view tool_call_id);

// Control tokens whose text the tool-call parser must see in the output (the engine renders
// them instead of dropping them as it does other control tokens): [TOOL_CALLS] for Mistral,
// <|python_tag|> for Llama 3, <tool_call> and </tool_call> for Hermes (text in most vocabs).
std::vector<std::string_view> tool_output_markers(ChatFormat format);

} // namespace gantry::api
