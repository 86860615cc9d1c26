#include "api/tool_prompt.h"

#include <boost/json.hpp>

#include <charconv>
#include <cmath>

#include "core/json_text.h"

namespace gantry::api {
namespace json = boost::json;
namespace {

// Python's float repr: the shortest round-trip digits, ".0" on whole numbers.
void python_double(std::string &out, double d) {
  if (!std::isfinite(d)) {
    out += std::isnan(d) ? "NaN" : (d > 0 ? "Infinity" : "-Infinity");
    return;
  }
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof buf, d);
  std::string s(buf, r.ptr);
  if (s.find_first_of(".e") == std::string::npos)
    s += ".0";
  out += s;
}

void newline(std::string &out, int indent, int depth) {
  out += '\n';
  out.append(static_cast<size_t>(indent * depth), ' ');
}

// Strings: json.dumps (ensure_ascii=False) writes the literal append_json_string writes.
void write(std::string &out, const json::value &v, int indent, int depth) {
  switch (v.kind()) {
  case json::kind::null: out += "null"; break;
  case json::kind::bool_: out += v.get_bool() ? "true" : "false"; break;
  case json::kind::int64: out += std::to_string(v.get_int64()); break;
  case json::kind::uint64: out += std::to_string(v.get_uint64()); break;
  case json::kind::double_: python_double(out, v.get_double()); break;
  case json::kind::string: append_json_string(out, v.get_string()); break;
  case json::kind::array: {
    const auto &a = v.get_array();
    if (a.empty()) {
      out += "[]";
      break;
    }
    out += '[';
    for (size_t i = 0; i < a.size(); ++i) {
      if (i > 0)
        out += indent < 0 ? ", " : ",";
      if (indent >= 0)
        newline(out, indent, depth + 1);
      write(out, a[i], indent, depth + 1);
    }
    if (indent >= 0)
      newline(out, indent, depth);
    out += ']';
    break;
  }
  case json::kind::object: {
    const auto &o = v.get_object();
    if (o.empty()) {
      out += "{}";
      break;
    }
    out += '{';
    bool first = true;
    for (const auto &[k, val] : o) {
      if (!first)
        out += indent < 0 ? ", " : ",";
      first = false;
      if (indent >= 0)
        newline(out, indent, depth + 1);
      append_json_string(out, k);
      out += ": ";
      write(out, val, indent, depth + 1);
    }
    if (indent >= 0)
      newline(out, indent, depth);
    out += '}';
    break;
  }
  }
}

// The parameters schema as a value; "" (any object) and text that is not JSON (rejected by the
// request parser, so only reachable from typed callers) become {"type": "object"}.
json::value parameters_value(const std::string &text) {
  if (!text.empty()) {
    json::error_code ec;
    json::value v = json::parse(text, ec);
    if (!ec)
      return v;
  }
  return json::object{{"type", "object"}, {"properties", json::object{}}};
}

// One call as {"name": ..., "<key>": <arguments>} on one line.
std::string call_json(const ToolCall &call, std::string_view key) {
  std::string out = "{\"name\": ";
  append_json_string(out, call.name);
  out += ", ";
  append_json_string(out, key);
  out += ": ";
  out += arguments_json(call.arguments);
  out += '}';
  return out;
}

} // namespace

ToolStyle tool_style(ChatFormat format) {
  switch (format) {
  case ChatFormat::kChatML: return ToolStyle::kHermes;
  case ChatFormat::kLlama3: return ToolStyle::kLlama3;
  case ChatFormat::kMistralV1:
  case ChatFormat::kMistralV3:
  case ChatFormat::kMistralV3Tekken:
  case ChatFormat::kMistralV7:
  case ChatFormat::kMistralV7Tekken: return ToolStyle::kMistral;
  default: return ToolStyle::kGeneric;
  }
}

std::string python_json(const json::value &value, int indent) {
  std::string out;
  write(out, value, indent, 0);
  return out;
}

std::string tool_definition_json(const FunctionTool &tool, int indent) {
  json::object fn;
  fn["name"] = tool.name;
  if (!tool.description.empty())
    fn["description"] = tool.description;
  fn["parameters"] = parameters_value(tool.parameters);
  return python_json(json::object{{"type", "function"}, {"function", std::move(fn)}}, indent);
}

std::string tool_list_json(const std::vector<FunctionTool> &tools) {
  std::string out = "[";
  for (size_t i = 0; i < tools.size(); ++i) {
    if (i > 0)
      out += ", ";
    out += tool_definition_json(tools[i]);
  }
  out += ']';
  return out;
}

std::string arguments_json(std::string_view arguments) {
  json::error_code ec;
  json::value v = json::parse(arguments, ec);
  if (!ec)
    return python_json(v);
  std::string out;
  append_json_string(out, arguments);
  return out;
}

std::string generic_tools_instruction(const std::vector<FunctionTool> &tools) {
  return "You can call the following tools (functions), defined in JSON:\n" +
         tool_list_json(tools) +
         "\n\nTo call one or more tools, reply with only a JSON object of this form and nothing "
         "else:\n{\"tool_calls\": [{\"name\": \"<tool name>\", \"arguments\": {<the arguments as "
         "a JSON object>}}]}\nTo answer without calling a tool, reply with plain text.";
}

std::string generic_tool_calls_text(const std::vector<ToolCall> &calls) {
  std::string out = "{\"tool_calls\": [";
  for (size_t i = 0; i < calls.size(); ++i) {
    if (i > 0)
      out += ", ";
    out += call_json(calls[i], "arguments");
  }
  out += "]}";
  return out;
}

std::string generic_tool_result_text(std::string_view tool_call_id, std::string_view name,
                                     std::string_view content) {
  std::string out = "{\"tool_result\": {\"tool_call_id\": ";
  append_json_string(out, tool_call_id);
  out += ", \"name\": ";
  append_json_string(out, name);
  out += ", \"content\": ";
  append_json_string(out, content);
  out += "}}";
  return out;
}

std::string hermes_tools_block(const std::vector<FunctionTool> &tools) {
  std::string out = "# Tools\n\nYou may call one or more functions to assist with the user "
                    "query.\n\nYou are provided with function signatures within <tools></tools> "
                    "XML tags:\n<tools>";
  for (const auto &t : tools) {
    out += '\n';
    out += tool_definition_json(t);
  }
  out += "\n</tools>\n\nFor each function call, return a json object with function name and "
         "arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": "
         "<function-name>, \"arguments\": <args-json-object>}\n</tool_call>";
  return out;
}

std::string hermes_call_json(const ToolCall &call) { return call_json(call, "arguments"); }

std::string llama3_system_preamble() {
  return "Environment: ipython\nCutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n";
}

std::string llama3_user_preamble(const std::vector<FunctionTool> &tools) {
  std::string out = "Given the following functions, please respond with a JSON for a function "
                    "call with its proper arguments that best answers the given prompt.\n\n"
                    "Respond in the format {\"name\": function name, \"parameters\": dictionary "
                    "of argument name and its value}.Do not use variables.\n\n";
  for (const auto &t : tools) {
    out += tool_definition_json(t, 4);
    out += "\n\n";
  }
  return out;
}

std::string llama3_call_json(const ToolCall &call) { return call_json(call, "parameters"); }

std::string mistral_calls_json(const std::vector<ToolCall> &calls) {
  std::string out = "[";
  for (size_t i = 0; i < calls.size(); ++i) {
    if (i > 0)
      out += ", ";
    std::string c = call_json(calls[i], "arguments");
    c.pop_back();
    c += ", \"id\": ";
    append_json_string(c, calls[i].id);
    c += '}';
    out += c;
  }
  out += ']';
  return out;
}

std::string mistral_result_head() { return "{\"content\": "; }

std::string mistral_result_tail(std::string_view tool_call_id) {
  std::string out = ", \"call_id\": ";
  append_json_string(out, tool_call_id);
  out += '}';
  return out;
}

std::vector<std::string_view> tool_output_markers(ChatFormat format) {
  switch (tool_style(format)) {
  case ToolStyle::kHermes: return {"<tool_call>", "</tool_call>"};
  case ToolStyle::kLlama3: return {"<|python_tag|>"};
  case ToolStyle::kMistral: return {"[TOOL_CALLS]"};
  case ToolStyle::kGeneric: break;
  }
  return {};
}

} // namespace gantry::api
