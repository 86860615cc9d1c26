#include "api/chat_template.h"

#include <array>
#include <cstddef>
#include <deque>
#include <optional>
#include <utility>

#include "api/tool_prompt.h"
#include "engine/tokenizer/tokenizer.h"

namespace gantry::api {
namespace {

struct FormatName {
  ChatFormat format;
  std::string_view name;
};

constexpr std::array kFormatNames = {
    FormatName{ChatFormat::kPlain, "plain"},
    FormatName{ChatFormat::kChatML, "chatml"},
    FormatName{ChatFormat::kLlama2, "llama2"},
    FormatName{ChatFormat::kMistralLegacy, "mistral-legacy"},
    FormatName{ChatFormat::kMistralV1, "mistral-v1"},
    FormatName{ChatFormat::kMistralV3, "mistral-v3"},
    FormatName{ChatFormat::kMistralV3Tekken, "mistral-v3-tekken"},
    FormatName{ChatFormat::kMistralV7, "mistral-v7"},
    FormatName{ChatFormat::kMistralV7Tekken, "mistral-v7-tekken"},
    FormatName{ChatFormat::kLlama3, "llama3"},
    FormatName{ChatFormat::kGemma, "gemma"},
    FormatName{ChatFormat::kPhi3, "phi3"},
    FormatName{ChatFormat::kPhi4, "phi4"},
    FormatName{ChatFormat::kZephyr, "zephyr"},
    FormatName{ChatFormat::kStableLmZephyr, "stablelm-zephyr"},
    FormatName{ChatFormat::kVicuna, "vicuna"},
    FormatName{ChatFormat::kVicunaOrca, "vicuna-orca"},
    FormatName{ChatFormat::kDeepSeek3, "deepseek3"},
};

bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

// Jinja's `trim` filter and Python's str.strip(), restricted to ASCII whitespace.
std::string_view trim(std::string_view s) {
  while (!s.empty() && is_space(s.front()))
    s.remove_prefix(1);
  while (!s.empty() && is_space(s.back()))
    s.remove_suffix(1);
  return s;
}

bool contains(std::string_view haystack, std::string_view needle) {
  return haystack.find(needle) != std::string_view::npos;
}

std::optional<ChatFormat> find_by_name(std::string_view name) {
  for (const auto &entry : kFormatNames) {
    if (entry.name == name)
      return entry.format;
  }
  return std::nullopt;
}

// The [INST] family. Mistral's own templates are told apart by the spacing around [INST], as
// llama.cpp does; everything else with [INST] is Llama 2 (with <<SYS>>) or the pre-v1 Mistral
// template (without).
ChatFormat detect_inst_family(std::string_view t) {
  if (contains(t, "[SYSTEM_PROMPT]")) {
    // Large 2411 writes '[SYSTEM_PROMPT] ' + ..., Small 3.x (tekken) writes '[SYSTEM_PROMPT]' + ...
    return contains(t, "[SYSTEM_PROMPT] ") ? ChatFormat::kMistralV7 : ChatFormat::kMistralV7Tekken;
  }
  if (contains(t, "' [INST] ' + system_message") || contains(t, "[AVAILABLE_TOOLS]")) {
    if (contains(t, " [INST]"))
      return ChatFormat::kMistralV1;
    if (contains(t, "\"[INST]\""))
      return ChatFormat::kMistralV3Tekken;
    return ChatFormat::kMistralV3;
  }
  return contains(t, "<<SYS>>") ? ChatFormat::kLlama2 : ChatFormat::kMistralLegacy;
}

std::optional<ChatFormat> detect_family(std::string_view t) {
  if (contains(t, "<|im_start|>")) {
    return contains(t, "<|im_sep|>") ? ChatFormat::kPhi4 : ChatFormat::kChatML;
  }
  if (contains(t, "<|start_header_id|>") && contains(t, "<|end_header_id|>")) {
    return ChatFormat::kLlama3;
  }
  if (t.starts_with("mistral") || contains(t, "[INST]"))
    return detect_inst_family(t);
  if (contains(t, "<start_of_turn>"))
    return ChatFormat::kGemma;
  if (contains(t, "<|assistant|>") && contains(t, "<|end|>"))
    return ChatFormat::kPhi3;
  // ChatGLM also writes <|user|>/<|assistant|> but is a different format; refuse to guess Zephyr.
  if (contains(t, "[gMASK]"))
    return std::nullopt;
  if (contains(t, "<|assistant|>") && contains(t, "<|endoftext|>")) {
    return ChatFormat::kStableLmZephyr;
  }
  // TinyLlama and HF Zephyr write eos_token rather than a literal "</s>". Templates that end
  // turns with neither (GLM-Edge) are a different format.
  if (contains(t, "<|assistant|>") && contains(t, "<|user|>") &&
      (contains(t, "eos_token") || contains(t, "</s>"))) {
    return ChatFormat::kZephyr;
  }
  if (contains(t, "<｜User｜>") && contains(t, "<｜Assistant｜>"))
    return ChatFormat::kDeepSeek3;
  if (contains(t, "USER: ") && contains(t, "ASSISTANT: ")) {
    return contains(t, "SYSTEM: ") ? ChatFormat::kVicunaOrca : ChatFormat::kVicuna;
  }
  return std::nullopt;
}

enum class Role { kSystem, kUser, kAssistant, kTool };

struct Turn {
  Role role;
  std::string_view content;
  const ChatMessage *msg = nullptr; // the original (tool calls, ids); null for added turns
};

void mask(std::string &s) {
  for (char &c : s) {
    if (!is_space(c))
      c = '\x01';
  }
}

// One rendering. In the shape pass of encode_chat (shape = true) every byte that came from the
// client — message contents and the tool text built by tool_prompt.h — is replaced by 0x01 where
// it is not whitespace, so the two passes align byte for byte and the 0x01 bytes are exactly
// the text that must never become control tokens.
struct RenderCtx {
  bool shape = false;
  const std::vector<FunctionTool> &tools;
  std::deque<std::string> store; // owns the text that turns point into

  std::string client(std::string s) const {
    if (shape)
      mask(s);
    return s;
  }
  std::string_view keep(std::string s) {
    store.push_back(std::move(s));
    return store.back();
  }
};

// Validates roles once so that each renderer handles exactly four.
Result<std::vector<Turn>> to_turns(const std::vector<ChatMessage> &messages, RenderCtx &ctx) {
  if (messages.empty()) {
    return Error::invalid("messages must contain at least one message", "messages");
  }
  std::vector<Turn> turns;
  turns.reserve(messages.size());
  for (std::size_t i = 0; i < messages.size(); ++i) {
    const std::string &role = messages[i].role;
    Role r;
    if (role == "system" || role == "developer") {
      r = Role::kSystem;
    } else if (role == "user") {
      r = Role::kUser;
    } else if (role == "assistant") {
      r = Role::kAssistant;
    } else if (role == "tool") {
      r = Role::kTool;
    } else {
      return Error::invalid("unknown role '" + role + "' in messages[" + std::to_string(i) +
                                "]; expected system, developer, user, assistant or tool",
                            "messages[" + std::to_string(i) + "].role");
    }
    std::string_view content = messages[i].content;
    if (ctx.shape)
      content = ctx.keep(ctx.client(messages[i].content));
    turns.push_back({r, content, &messages[i]});
  }
  return turns;
}

bool has_calls(const Turn &t) {
  return t.role == Role::kAssistant && t.msg && !t.msg->tool_calls.empty();
}

// The function a tool message answers: its own `name`, else the earlier call with its id.
std::string_view tool_name_of(const std::vector<Turn> &turns, std::size_t i) {
  const ChatMessage &m = *turns[i].msg;
  if (!m.name.empty())
    return m.name;
  for (std::size_t j = i; j-- > 0;) {
    if (!has_calls(turns[j]))
      continue;
    for (const auto &c : turns[j].msg->tool_calls) {
      if (c.id == m.tool_call_id)
        return c.name;
    }
  }
  return "";
}

// The generic fallback (tool_prompt.h): tools become system text, earlier calls assistant text
// and results user turns, so every renderer shows them without knowing about tools.
std::vector<Turn> generic_tool_turns(std::vector<Turn> turns, RenderCtx &ctx) {
  for (std::size_t i = 0; i < turns.size(); ++i) {
    Turn &t = turns[i];
    if (has_calls(t)) {
      std::string text(t.content);
      if (!text.empty())
        text += '\n';
      text += ctx.client(generic_tool_calls_text(t.msg->tool_calls));
      t.content = ctx.keep(std::move(text));
    } else if (t.role == Role::kTool) {
      t.content = ctx.keep(ctx.client(
          generic_tool_result_text(t.msg->tool_call_id, tool_name_of(turns, i), t.msg->content)));
      t.role = Role::kUser;
    }
  }
  if (!ctx.tools.empty()) {
    const std::string instruction = ctx.client(generic_tools_instruction(ctx.tools));
    if (turns.front().role == Role::kSystem) {
      turns.front().content = ctx.keep(std::string(turns.front().content) + "\n\n" + instruction);
    } else {
      turns.insert(turns.begin(), Turn{Role::kSystem, ctx.keep(instruction), nullptr});
    }
  }
  return turns;
}

std::string_view generic_role(Role r) {
  switch (r) {
  case Role::kSystem: return "system";
  case Role::kUser: return "user";
  case Role::kAssistant: return "assistant";
  case Role::kTool: return "tool";
  }
  return "user";
}

// For formats without a system role: system text waits here and is prepended to the next user
// turn, which is what the official Gemma 3 and Mistral v1 templates do with messages[0].
class PendingSystem {
public:
  void add(std::string_view text, std::string_view joiner) {
    if (!text_.empty())
      text_ += joiner;
    text_ += text;
  }
  bool empty() const { return text_.empty(); }
  // Returns system + sep + user, or just one of them when the other is empty, and clears.
  std::string merge_into(std::string_view user, std::string_view sep) {
    std::string out = std::move(text_);
    text_.clear();
    if (!out.empty() && !user.empty())
      out += sep;
    out += user;
    return out;
  }

private:
  std::string text_;
};

std::string render_plain(const std::vector<Turn> &turns) {
  std::string out;
  for (std::size_t i = 0; i < turns.size(); ++i) {
    if (i > 0)
      out += "\n\n";
    out += turns[i].content;
  }
  return out;
}

// Qwen 2.5's template: tools in the first system turn, calls as <tool_call> blocks, a run of
// tool results as one user turn of <tool_response> blocks.
std::string render_chatml(const std::vector<Turn> &turns, bool add_gen, RenderCtx &ctx) {
  std::string out;
  std::size_t first = 0;
  if (!ctx.tools.empty()) {
    out += "<|im_start|>system\n";
    if (turns.front().role == Role::kSystem) {
      out += turns.front().content;
      out += "\n\n";
      first = 1;
    }
    out += ctx.client(hermes_tools_block(ctx.tools));
    out += "<|im_end|>\n";
  }
  for (std::size_t i = first; i < turns.size(); ++i) {
    const Turn &t = turns[i];
    if (has_calls(t)) {
      out += "<|im_start|>assistant";
      if (!t.content.empty()) {
        out += '\n';
        out += t.content;
      }
      for (const auto &c : t.msg->tool_calls) {
        out += "\n<tool_call>\n";
        out += ctx.client(hermes_call_json(c));
        out += "\n</tool_call>";
      }
      out += "<|im_end|>\n";
    } else if (t.role == Role::kTool) {
      if (i == 0 || turns[i - 1].role != Role::kTool)
        out += "<|im_start|>user";
      out += "\n<tool_response>\n";
      out += t.content;
      out += "\n</tool_response>";
      if (i + 1 == turns.size() || turns[i + 1].role != Role::kTool)
        out += "<|im_end|>\n";
    } else {
      out += "<|im_start|>";
      out += generic_role(t.role);
      out += '\n';
      out += t.content;
      out += "<|im_end|>\n";
    }
  }
  if (add_gen)
    out += "<|im_start|>assistant\n";
  return out;
}

// Llama 3.1's template with its default tools_in_user_message: the tool preamble opens the first
// user turn; a call is the whole assistant turn; results are `ipython` turns (not trimmed).
std::string render_llama3(const std::vector<Turn> &turns, bool add_gen, RenderCtx &ctx) {
  std::string out;
  std::size_t first = 0;
  if (!ctx.tools.empty()) {
    out += "<|start_header_id|>system<|end_header_id|>\n\n";
    out += ctx.client(llama3_system_preamble());
    if (turns.front().role == Role::kSystem) {
      out += trim(turns.front().content);
      first = 1;
    }
    out += "<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n";
    out += ctx.client(llama3_user_preamble(ctx.tools));
    if (first < turns.size() && turns[first].role == Role::kUser) {
      out += trim(turns[first].content);
      ++first;
    }
    out += "<|eot_id|>";
  }
  for (std::size_t i = first; i < turns.size(); ++i) {
    const Turn &t = turns[i];
    if (has_calls(t)) {
      out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
      for (std::size_t k = 0; k < t.msg->tool_calls.size(); ++k) {
        if (k > 0)
          out += '\n';
        out += ctx.client(llama3_call_json(t.msg->tool_calls[k]));
      }
      out += "<|eot_id|>";
      continue;
    }
    out += "<|start_header_id|>";
    // Llama 3.1 names tool results "ipython".
    out += t.role == Role::kTool ? "ipython" : generic_role(t.role);
    out += "<|end_header_id|>\n\n";
    out += t.role == Role::kTool ? t.content : trim(t.content);
    out += "<|eot_id|>";
  }
  if (add_gen)
    out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
  return out;
}

// Meta's Llama-2-chat template: the system block opens the first user turn, every turn after the
// first restarts with BOS, and contents are strip()ped.
std::string render_llama2(const std::vector<Turn> &turns) {
  std::string out;
  std::string system;
  auto emit_user = [&](std::string_view user) {
    std::string content;
    if (!system.empty())
      content = "<<SYS>>\n" + system + "\n<</SYS>>\n\n";
    system.clear();
    content += user;
    if (!out.empty())
      out += "<s>";
    out += "[INST] ";
    out += trim(content);
    out += " [/INST]";
  };
  for (const Turn &t : turns) {
    if (t.role == Role::kSystem) {
      if (!system.empty())
        system += "\n\n";
      system += t.content;
    } else if (t.role == Role::kUser) {
      emit_user(t.content);
    } else {
      out += ' ';
      out += trim(t.content);
      out += " </s>";
    }
  }
  if (!system.empty())
    emit_user("");
  return out;
}

// Mistral-7B-Instruct v0.1/v0.2's original template; no system role, so llama.cpp's convention
// of "system\nuser" in the first [INST] is used.
std::string render_mistral_legacy(const std::vector<Turn> &turns) {
  std::string out;
  PendingSystem system;
  auto emit_user = [&](std::string_view user) {
    out += "[INST] ";
    out += system.merge_into(user, "\n");
    out += " [/INST]";
  };
  for (const Turn &t : turns) {
    if (t.role == Role::kSystem) {
      system.add(t.content, "\n");
    } else if (t.role == Role::kUser) {
      emit_user(t.content);
    } else {
      out += t.content;
      out += "</s>";
    }
  }
  if (!system.empty())
    emit_user("");
  return out;
}

// Mistral's tool markers: the definitions before the last user turn, calls and results in
// place of a reply or a turn. `space` follows each marker except in the tekken formats.
struct MistralTools {
  RenderCtx &ctx;
  std::string_view space;

  void available(std::string &out) const {
    if (ctx.tools.empty())
      return;
    out += "[AVAILABLE_TOOLS]";
    out += space;
    out += ctx.client(tool_list_json(ctx.tools));
    out += "[/AVAILABLE_TOOLS]";
  }
  // An assistant turn with calls or a tool result; false for other turns.
  bool turn(std::string &out, const Turn &t) const {
    if (has_calls(t)) {
      out += "[TOOL_CALLS]";
      out += space;
      out += ctx.client(mistral_calls_json(t.msg->tool_calls));
      out += "</s>";
      return true;
    }
    if (t.role != Role::kTool)
      return false;
    out += "[TOOL_RESULTS]";
    out += space;
    out += ctx.client(mistral_result_head());
    out += t.content;
    out += ctx.client(mistral_result_tail(t.msg->tool_call_id));
    out += "[/TOOL_RESULTS]";
    return true;
  }
};

std::size_t last_user_turn(const std::vector<Turn> &turns) {
  std::size_t last = turns.size();
  for (std::size_t i = 0; i < turns.size(); ++i) {
    if (turns[i].role == Role::kUser)
      last = i;
  }
  return last;
}

std::string render_mistral_v1(const std::vector<Turn> &turns, RenderCtx &ctx) {
  const MistralTools tools{ctx, " "};
  const std::size_t last_user = last_user_turn(turns);
  std::string out;
  PendingSystem system;
  auto emit_user = [&](std::string_view user) {
    out += " [INST] ";
    out += system.merge_into(user, "\n\n");
    out += " [/INST]";
  };
  for (std::size_t i = 0; i < turns.size(); ++i) {
    const Turn &t = turns[i];
    if (t.role == Role::kSystem) {
      system.add(t.content, "\n\n");
    } else if (t.role == Role::kUser) {
      if (i == last_user)
        tools.available(out);
      emit_user(t.content);
    } else if (!tools.turn(out, t)) {
      out += ' ';
      out += t.content;
      out += "</s>";
    }
  }
  if (!system.empty()) {
    if (last_user == turns.size())
      tools.available(out);
    emit_user("");
  }
  return out;
}

// The official v3 templates put the system prompt in front of the *last* user message (so it
// stays close to the reply); llama.cpp's built-in renderer puts it first, its Jinja path last.
std::string render_mistral_v3(const std::vector<Turn> &turns, bool tekken, RenderCtx &ctx) {
  const std::string_view space = tekken ? "" : " ";
  const MistralTools tools{ctx, space};
  std::string system;
  const std::size_t last_user = last_user_turn(turns);
  for (const Turn &t : turns) {
    if (t.role == Role::kSystem) {
      if (!system.empty())
        system += "\n\n";
      system += t.content;
    }
  }
  std::string out;
  auto emit_user = [&](std::string_view user, bool with_system) {
    if (with_system)
      tools.available(out);
    out += "[INST]";
    out += space;
    if (with_system && !system.empty()) {
      out += system;
      if (!user.empty())
        out += "\n\n";
    }
    out += user;
    out += "[/INST]";
  };
  for (std::size_t i = 0; i < turns.size(); ++i) {
    const Turn &t = turns[i];
    if (t.role == Role::kUser) {
      emit_user(t.content, i == last_user);
    } else if (tools.turn(out, t)) {
      continue;
    } else if (t.role == Role::kAssistant) {
      out += space;
      out += tekken ? t.content : trim(t.content);
      out += "</s>";
    }
  }
  if (last_user == turns.size() && (!system.empty() || !ctx.tools.empty()))
    emit_user("", true);
  return out;
}

std::string render_mistral_v7(const std::vector<Turn> &turns, bool tekken, RenderCtx &ctx) {
  const std::string_view space = tekken ? "" : " ";
  const MistralTools tools{ctx, space};
  const std::size_t last_user = last_user_turn(turns);
  std::string out;
  for (std::size_t i = 0; i < turns.size(); ++i) {
    const Turn &t = turns[i];
    if (tools.turn(out, t))
      continue;
    switch (t.role) {
    case Role::kSystem:
      out += "[SYSTEM_PROMPT]";
      out += space;
      out += t.content;
      out += "[/SYSTEM_PROMPT]";
      break;
    case Role::kUser:
      if (i == last_user)
        tools.available(out);
      out += "[INST]";
      out += space;
      out += t.content;
      out += "[/INST]";
      break;
    case Role::kAssistant:
    case Role::kTool: // handled by tools.turn
      out += space;
      out += t.content;
      out += "</s>";
      break;
    }
  }
  if (last_user == turns.size())
    tools.available(out);
  return out;
}

std::string render_gemma(const std::vector<Turn> &turns, bool add_gen) {
  std::string out;
  PendingSystem system;
  auto emit_user = [&](std::string_view user) {
    out += "<start_of_turn>user\n";
    out += system.merge_into(user, "\n\n");
    out += "<end_of_turn>\n";
  };
  for (const Turn &t : turns) {
    if (t.role == Role::kSystem) {
      system.add(trim(t.content), "\n\n");
    } else if (t.role == Role::kUser) {
      emit_user(trim(t.content));
    } else {
      out += "<start_of_turn>model\n";
      out += trim(t.content);
      out += "<end_of_turn>\n";
    }
  }
  if (!system.empty())
    emit_user("");
  if (add_gen)
    out += "<start_of_turn>model\n";
  return out;
}

// <|role|>\n content END \n: Phi-3 (END = <|end|>) and the Zephyr family (END = EOS text).
std::string render_tagged(const std::vector<Turn> &turns, std::string_view end, bool add_gen) {
  std::string out;
  for (const Turn &t : turns) {
    out += "<|";
    out += generic_role(t.role);
    out += "|>\n";
    out += t.content;
    out += end;
    out += '\n';
  }
  if (add_gen)
    out += "<|assistant|>\n";
  return out;
}

std::string render_phi4(const std::vector<Turn> &turns, bool add_gen) {
  std::string out;
  for (const Turn &t : turns) {
    out += "<|im_start|>";
    out += generic_role(t.role);
    out += "<|im_sep|>";
    out += t.content;
    out += "<|im_end|>";
  }
  if (add_gen)
    out += "<|im_start|>assistant<|im_sep|>";
  return out;
}

std::string render_vicuna(const std::vector<Turn> &turns, bool orca, bool add_gen) {
  std::string out;
  for (const Turn &t : turns) {
    if (t.role == Role::kSystem) {
      if (orca)
        out += "SYSTEM: ";
      out += t.content;
      out += orca ? "\n" : "\n\n";
    } else if (t.role == Role::kUser) {
      out += "USER: ";
      out += t.content;
      out += '\n';
    } else {
      out += "ASSISTANT: ";
      out += t.content;
      out += "</s>\n";
    }
  }
  if (add_gen)
    out += "ASSISTANT:";
  return out;
}

// The official template gathers every system message into one prompt at the very start.
std::string render_deepseek3(const std::vector<Turn> &turns, bool add_gen) {
  std::string out;
  for (const Turn &t : turns) {
    if (t.role != Role::kSystem)
      continue;
    if (!out.empty())
      out += "\n\n";
    out += t.content;
  }
  for (const Turn &t : turns) {
    if (t.role == Role::kUser) {
      out += "<｜User｜>";
      out += t.content;
    } else if (t.role == Role::kAssistant) {
      out += "<｜Assistant｜>";
      out += t.content;
      out += "<｜end▁of▁sentence｜>";
    }
  }
  if (add_gen)
    out += "<｜Assistant｜>";
  return out;
}

} // namespace

std::string_view chat_format_name(ChatFormat format) {
  for (const auto &entry : kFormatNames) {
    if (entry.format == format)
      return entry.name;
  }
  return "unknown";
}

const std::vector<ChatFormat> &all_chat_formats() {
  static const std::vector<ChatFormat> formats = [] {
    std::vector<ChatFormat> v;
    for (const auto &entry : kFormatNames)
      v.push_back(entry.format);
    return v;
  }();
  return formats;
}

Result<ChatFormat> chat_format_from_name(std::string_view name) {
  if (auto f = find_by_name(name))
    return *f;
  std::string valid;
  for (const auto &entry : kFormatNames) {
    if (!valid.empty())
      valid += ", ";
    valid += entry.name;
  }
  return Error::invalid("unknown chat template '" + std::string(name) + "'; expected one of " +
                            valid,
                        "chat_template");
}

DetectedTemplate detect_chat_format(std::string_view template_text) {
  const std::string_view t = trim(template_text);
  if (t.empty())
    return {ChatFormat::kPlain, true};
  if (auto f = find_by_name(t))
    return {*f, true};
  if (auto f = detect_family(t))
    return {*f, true};
  return {ChatFormat::kChatML, false};
}

namespace {

Result<std::string> render(ChatFormat format, const std::vector<ChatMessage> &messages,
                           bool add_generation_prompt, RenderCtx &ctx) {
  GANTRY_ASSIGN_OR_RETURN(std::vector<Turn> turns, to_turns(messages, ctx));
  if (tool_style(format) == ToolStyle::kGeneric)
    turns = generic_tool_turns(std::move(turns), ctx);
  const bool gen = add_generation_prompt;
  switch (format) {
  case ChatFormat::kPlain: return render_plain(turns);
  case ChatFormat::kChatML: return render_chatml(turns, gen, ctx);
  case ChatFormat::kLlama2: return render_llama2(turns);
  case ChatFormat::kMistralLegacy: return render_mistral_legacy(turns);
  case ChatFormat::kMistralV1: return render_mistral_v1(turns, ctx);
  case ChatFormat::kMistralV3: return render_mistral_v3(turns, false, ctx);
  case ChatFormat::kMistralV3Tekken: return render_mistral_v3(turns, true, ctx);
  case ChatFormat::kMistralV7: return render_mistral_v7(turns, false, ctx);
  case ChatFormat::kMistralV7Tekken: return render_mistral_v7(turns, true, ctx);
  case ChatFormat::kLlama3: return render_llama3(turns, gen, ctx);
  case ChatFormat::kGemma: return render_gemma(turns, gen);
  case ChatFormat::kPhi3: return render_tagged(turns, "<|end|>", gen);
  case ChatFormat::kPhi4: return render_phi4(turns, gen);
  case ChatFormat::kZephyr: return render_tagged(turns, "</s>", gen);
  case ChatFormat::kStableLmZephyr: return render_tagged(turns, "<|endoftext|>", gen);
  case ChatFormat::kVicuna: return render_vicuna(turns, false, gen);
  case ChatFormat::kVicunaOrca: return render_vicuna(turns, true, gen);
  case ChatFormat::kDeepSeek3: return render_deepseek3(turns, gen);
  }
  return Error::internal("unhandled chat format");
}

} // namespace

Result<std::string> render_chat(ChatFormat format, const std::vector<ChatMessage> &messages,
                                bool add_generation_prompt,
                                const std::vector<FunctionTool> &tools) {
  RenderCtx ctx{false, tools, {}};
  return render(format, messages, add_generation_prompt, ctx);
}

Result<std::vector<int32_t>> encode_chat(ChatFormat format,
                                         const std::vector<ChatMessage> &messages,
                                         bool add_generation_prompt, const engine::Tokenizer &tok,
                                         const std::vector<FunctionTool> &tools) {
  GANTRY_ASSIGN_OR_RETURN(std::string text,
                          render_chat(format, messages, add_generation_prompt, tools));
  RenderCtx shape_ctx{true, tools, {}};
  GANTRY_ASSIGN_OR_RETURN(std::string shape,
                          render(format, messages, add_generation_prompt, shape_ctx));
  if (shape.size() != text.size()) {
    return Err(Error::internal("chat template '" + std::string(chat_format_name(format)) +
                               "' does not render contents verbatim"));
  }
  std::vector<uint8_t> special_ok(text.size());
  for (size_t i = 0; i < text.size(); ++i)
    special_ok[i] = shape[i] != '\x01';
  return tok.encode(text, true, special_ok);
}

} // namespace gantry::api
