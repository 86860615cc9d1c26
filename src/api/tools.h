// Function tools and tool calls: the typed form of OpenAI's `tools`, `tool_choice` and
// `message.tool_calls`, shared by the chat templates (which render tools into the prompt), the
// parsers that read a model's tool calls back out of its text, and the renderers.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace gantry::api {

// Bounds of a request's tools: the count (OpenAI's own limit) and one schema's JSON text.
constexpr std::size_t kMaxTools = 128;
constexpr std::size_t kMaxToolSchemaBytes = 64 * 1024;

struct FunctionTool {
  std::string name;
  std::string description;
  std::string parameters; // the JSON Schema of the arguments as JSON text; "" = any object
  bool strict = false;
};

struct ToolChoice {
  enum class Mode { kAuto, kNone, kRequired, kFunction };
  Mode mode = Mode::kAuto;
  std::string function; // kFunction: the name the model must call
};

// A complete tool call (a request's assistant history, a non-streamed response).
struct ToolCall {
  std::string id; // "call_..."
  std::string name;
  std::string arguments; // JSON text, as the model wrote it
};

// One streamed fragment of a tool call: the first fragment of call `index` carries its id and
// name, later ones only more argument text (OpenAI's delta.tool_calls).
struct ToolCallDelta {
  int index = 0;
  std::string id;
  std::string name;
  std::string arguments;
};

// Fragments into whole calls: a fragment with an id starts call `index`, the others add argument
// text to it. Backends number a choice's calls 0, 1, ...; indices past kMaxTools are dropped.
inline void add_tool_call_deltas(std::vector<ToolCall> &calls,
                                 const std::vector<ToolCallDelta> &deltas) {
  for (const auto &d : deltas) {
    if (d.index < 0 || static_cast<std::size_t>(d.index) >= kMaxTools)
      continue;
    if (static_cast<std::size_t>(d.index) >= calls.size())
      calls.resize(static_cast<std::size_t>(d.index) + 1);
    ToolCall &call = calls[static_cast<std::size_t>(d.index)];
    if (!d.id.empty())
      call.id = d.id;
    call.name += d.name;
    call.arguments += d.arguments;
  }
}

} // namespace gantry::api
