// Reading a model's tool calls back out of its text, as the text streams: one ToolCallParser per
// choice takes the pieces the engine releases and splits them into plain content and tool-call
// fragments (OpenAI's delta.tool_calls), in the form its chat-template family writes calls
// (api/tool_prompt.h):
//   kHermes   <tool_call>{json}</tool_call> anywhere in the text (an unclosed one at the end is
//             read too);
//   kMistral  [TOOL_CALLS] followed by a JSON array of calls (or one call), to the end;
//   kLlama3   a reply that is one or more {"name": ..., "parameters": {...}} objects (separated
//             by whitespace or ';'), optionally after <|python_tag|>;
//   kGeneric  a reply that is {"tool_calls": [{"name": ..., "arguments": {...}}, ...]} (a bare
//             call object or an array of calls is accepted too).
// Content is released as soon as it cannot be the start of a call: only a possible marker prefix
// (a few bytes) or — for the formats whose calls are the whole reply — a reply that starts like
// a call object is held back. A call is released once it is complete and parses (at its closing
// tag, or at the end of the output for the whole-reply formats), as two fragments: the first with
// its id ("call_" + 24 random alphanumerics) and name, the second with the arguments' JSON text.
// A call that does not parse, or held text over kMaxHeldBytes, goes out as plain content
// instead: malformed output is never lost and never half a call. With parallel = false only the
// first call is kept (later ones are dropped).
//
// Threading: one parser per choice, used by one thread at a time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "api/tool_prompt.h"
#include "api/tools.h"

namespace gantry::api {

// What one push() or finish() released.
struct ToolParse {
  std::string content;
  std::vector<ToolCallDelta> calls;
};

class ToolCallParser {
public:
  // The most text held back while waiting for a call to complete.
  static constexpr std::size_t kMaxHeldBytes = 256 * 1024;

  // `seed` drives the generated call ids (tests pass a fixed one).
  ToolCallParser(ToolStyle style, bool parallel, uint64_t seed);

  ToolParse push(std::string_view text);
  // The end of the choice's output: everything still held is released.
  ToolParse finish();

  // Calls released so far (the choice's finish_reason becomes "tool_calls" when > 0).
  int calls() const { return calls_; }

private:
  enum class Mode { kStart, kText, kInCall, kToEnd, kPassThrough };

  void process(ToolParse &out);
  void process_start(ToolParse &out);
  void process_text(ToolParse &out);
  void process_in_call(ToolParse &out);
  void release_all_as_content(ToolParse &out);
  // Parses `body` (the held call text without its markers) as this style's calls; on success
  // appends the calls' fragments and returns true.
  bool emit_calls(std::string_view body, bool whole_reply, ToolParse &out);
  void emit_call(std::string name, std::string arguments, ToolParse &out);
  std::string new_id();

  const ToolStyle style_;
  const bool parallel_;
  std::mt19937_64 rng_;
  Mode mode_;
  std::string held_;   // text not yet released
  std::string marker_; // the opening marker consumed for the held call (re-emitted on failure)
  int calls_ = 0;
  bool after_call_ = false; // a Hermes call just closed: skip the whitespace that follows
};

} // namespace gantry::api
