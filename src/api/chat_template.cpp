#include "api/chat_template.h"

#include <array>
#include <cstddef>
#include <optional>
#include <utility>

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
};

// Validates roles once so that each renderer handles exactly four.
Result<std::vector<Turn>> to_turns(const std::vector<ChatMessage> &messages) {
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
    turns.push_back({r, messages[i].content});
  }
  return turns;
}

Status reject_tool_turns(ChatFormat format, const std::vector<Turn> &turns) {
  for (std::size_t i = 0; i < turns.size(); ++i) {
    if (turns[i].role == Role::kTool) {
      return Error::invalid("role 'tool' in messages[" + std::to_string(i) +
                                "] is not supported by the " +
                                std::string(chat_format_name(format)) + " chat template",
                            "messages[" + std::to_string(i) + "].role");
    }
  }
  return Ok();
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

std::string render_chatml(const std::vector<Turn> &turns, bool add_gen) {
  std::string out;
  for (const Turn &t : turns) {
    out += "<|im_start|>";
    out += generic_role(t.role);
    out += '\n';
    out += t.content;
    out += "<|im_end|>\n";
  }
  if (add_gen)
    out += "<|im_start|>assistant\n";
  return out;
}

std::string render_llama3(const std::vector<Turn> &turns, bool add_gen) {
  std::string out;
  for (const Turn &t : turns) {
    out += "<|start_header_id|>";
    // Llama 3.1 names tool results "ipython".
    out += t.role == Role::kTool ? "ipython" : generic_role(t.role);
    out += "<|end_header_id|>\n\n";
    out += trim(t.content);
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

std::string render_mistral_v1(const std::vector<Turn> &turns) {
  std::string out;
  PendingSystem system;
  auto emit_user = [&](std::string_view user) {
    out += " [INST] ";
    out += system.merge_into(user, "\n\n");
    out += " [/INST]";
  };
  for (const Turn &t : turns) {
    if (t.role == Role::kSystem) {
      system.add(t.content, "\n\n");
    } else if (t.role == Role::kUser) {
      emit_user(t.content);
    } else {
      out += ' ';
      out += t.content;
      out += "</s>";
    }
  }
  if (!system.empty())
    emit_user("");
  return out;
}

// The official v3 templates put the system prompt in front of the *last* user message (so it
// stays close to the reply); llama.cpp's built-in renderer puts it first, its Jinja path last.
std::string render_mistral_v3(const std::vector<Turn> &turns, bool tekken) {
  const std::string_view space = tekken ? "" : " ";
  std::string system;
  std::size_t last_user = turns.size();
  for (std::size_t i = 0; i < turns.size(); ++i) {
    if (turns[i].role == Role::kSystem) {
      if (!system.empty())
        system += "\n\n";
      system += turns[i].content;
    } else if (turns[i].role == Role::kUser) {
      last_user = i;
    }
  }
  std::string out;
  auto emit_user = [&](std::string_view user, bool with_system) {
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
    } else if (t.role == Role::kAssistant) {
      out += space;
      out += tekken ? t.content : trim(t.content);
      out += "</s>";
    }
  }
  if (last_user == turns.size() && !system.empty())
    emit_user("", true);
  return out;
}

std::string render_mistral_v7(const std::vector<Turn> &turns, bool tekken) {
  const std::string_view space = tekken ? "" : " ";
  std::string out;
  for (const Turn &t : turns) {
    switch (t.role) {
    case Role::kSystem:
      out += "[SYSTEM_PROMPT]";
      out += space;
      out += t.content;
      out += "[/SYSTEM_PROMPT]";
      break;
    case Role::kUser:
      out += "[INST]";
      out += space;
      out += t.content;
      out += "[/INST]";
      break;
    case Role::kAssistant:
    case Role::kTool: // rejected before rendering
      out += space;
      out += t.content;
      out += "</s>";
      break;
    }
  }
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

bool has_tool_role(ChatFormat format) {
  return format == ChatFormat::kPlain || format == ChatFormat::kChatML ||
         format == ChatFormat::kLlama3;
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

Result<std::string> render_chat(ChatFormat format, const std::vector<ChatMessage> &messages,
                                bool add_generation_prompt) {
  GANTRY_ASSIGN_OR_RETURN(std::vector<Turn> turns, to_turns(messages));
  if (!has_tool_role(format))
    GANTRY_TRY(reject_tool_turns(format, turns));
  const bool gen = add_generation_prompt;
  switch (format) {
  case ChatFormat::kPlain: return render_plain(turns);
  case ChatFormat::kChatML: return render_chatml(turns, gen);
  case ChatFormat::kLlama2: return render_llama2(turns);
  case ChatFormat::kMistralLegacy: return render_mistral_legacy(turns);
  case ChatFormat::kMistralV1: return render_mistral_v1(turns);
  case ChatFormat::kMistralV3: return render_mistral_v3(turns, false);
  case ChatFormat::kMistralV3Tekken: return render_mistral_v3(turns, true);
  case ChatFormat::kMistralV7: return render_mistral_v7(turns, false);
  case ChatFormat::kMistralV7Tekken: return render_mistral_v7(turns, true);
  case ChatFormat::kLlama3: return render_llama3(turns, gen);
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

Result<std::vector<int32_t>> encode_chat(ChatFormat format,
                                         const std::vector<ChatMessage> &messages,
                                         bool add_generation_prompt, const engine::Tokenizer &tok) {
  GANTRY_ASSIGN_OR_RETURN(std::string text, render_chat(format, messages, add_generation_prompt));
  std::vector<ChatMessage> shapes = messages;
  for (auto &m : shapes) {
    for (char &c : m.content) {
      if (!is_space(c))
        c = '\x01';
    }
  }
  GANTRY_ASSIGN_OR_RETURN(std::string shape, render_chat(format, shapes, add_generation_prompt));
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
