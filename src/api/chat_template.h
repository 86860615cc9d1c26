// Chat templates: turning an OpenAI `messages` array into the prompt text a model was trained on.
//
// GGUF files carry the Hugging Face Jinja template in `tokenizer.chat_template`. Gantry has no
// Jinja engine (none is packaged for C++ in Debian), so, like llama.cpp's
// llm_chat_apply_template, it recognises the template family from marker strings in the template
// text and renders that family with hand-written code. The rendering follows the official
// template of each family; where llama.cpp's built-in renderer and the official Jinja disagree,
// the official Jinja wins and the difference is noted at the format below.
//
// Supported formats (name for `chat_template = "..."` in parentheses):
//   kPlain           (plain)            no template in the GGUF: message contents joined by "\n\n",
//                                       no role markers, no generation prompt. A single user
//                                       message "Once upon a time" renders exactly that, so chat
//                                       completions on a story model (stories260K) continue the
//                                       text just as the completions endpoint does.
//   kChatML          (chatml)           Qwen 1.5/2/2.5, OpenHermes, Yi, SmolLM ...: <|im_start|>
//   kLlama2          (llama2)           Meta Llama-2-chat: [INST] <<SYS>> ... <</SYS>> [/INST]
//   kMistralLegacy   (mistral-legacy)   [INST] without <<SYS>>: Mistral-7B-Instruct v0.1/v0.2's
//                                       original template (llama.cpp calls this "llama2")
//   kMistralV1       (mistral-v1)       " [INST] " with leading space, system in the first turn
//   kMistralV3       (mistral-v3)       Mistral Large 2407 etc.; system in the last user turn
//   kMistralV3Tekken (mistral-v3-tekken) Mistral Nemo; as v3 without the spaces
//   kMistralV7       (mistral-v7)       [SYSTEM_PROMPT] with spaces (Mistral Large 2411)
//   kMistralV7Tekken (mistral-v7-tekken) [SYSTEM_PROMPT] without spaces (Mistral Small 3.x)
//   kLlama3          (llama3)           Llama 3 / 3.1 / 3.2 / 3.3: <|start_header_id|>
//   kGemma           (gemma)            Gemma 1/2/3: <start_of_turn>; system merged into the
//                                       first user turn as the official Gemma 3 template does
//   kPhi3            (phi3)             Phi-3 / Phi-3.5: <|user|> ... <|end|>
//   kPhi4            (phi4)             Phi-4: <|im_start|>role<|im_sep|>
//   kZephyr          (zephyr)           HuggingFaceH4 Zephyr, TinyLlama-Chat: <|user|> ... </s>
//   kStableLmZephyr  (stablelm-zephyr)  StableLM 2 Zephyr: <|user|> ... <|endoftext|>
//   kVicuna          (vicuna)           USER: / ASSISTANT:
//   kVicunaOrca      (vicuna-orca)      SYSTEM: / USER: / ASSISTANT:
//   kDeepSeek3       (deepseek3)        DeepSeek V3 / R1 and the R1 distills: <｜User｜>
//
// Unrecognised templates: detect_chat_format falls back to ChatML with `recognized = false`; the
// server logs a warning naming the template at start-up (the most common format among recent
// open models, and the least harmful guess). An operator who knows better sets
// `chat_template = "<name>"`, parsed by chat_format_from_name.
//
// BOS: the rendered text never starts with the BOS token text. The caller tokenizes with
// add_special=true (the tokenizer adds BOS when the vocab asks for it) and special tokens parsed
// in the template's text (encode_chat), so a template that writes bos_token first would
// otherwise produce two BOS tokens. llama.cpp's
// server does the same by stripping a leading bos_token from the rendered Jinja output. BOS and
// EOS text *inside* the conversation (Llama 2's "</s><s>[INST]" between turns) is kept, and
// encode_chat turns it into the control tokens (never the same text inside a message).
//
// What templates do that this renderer does not: default system prompts baked into a template
// (Qwen 2.5's "You are Qwen ...", Llama 3.1's "Cutting Knowledge Date" header, Mistral Small's
// long default), multimodal content parts, and templates that raise errors on non-alternating
// roles (we render whatever order we are given).
//
// Tools: `tools` (the request's definitions; empty when it has none or tool_choice is "none"),
// assistant tool_calls and tool messages are rendered in each family's own form, or the generic
// JSON form for families without tool support (api/tool_prompt.h documents both).
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "api/tools.h"
#include "core/result.h"

namespace gantry::engine {
class Tokenizer;
}

namespace gantry::api {

// role is one of system, user, assistant, tool, developer ("developer" is OpenAI's newer name
// for "system" and is rendered as system).
struct ChatMessage {
  ChatMessage() = default;
  // The common case, {"user", "Hi"}, without naming the tool fields.
  ChatMessage(std::string r, std::string c) : role(std::move(r)), content(std::move(c)) {}

  std::string role;
  std::string content;
  std::vector<ToolCall> tool_calls; // assistant: the calls it made
  std::string tool_call_id;         // tool: the call this message answers
  std::string name;                 // tool: the function's name (when the client sent it)
};

enum class ChatFormat {
  kPlain,
  kChatML,
  kLlama2,
  kMistralLegacy,
  kMistralV1,
  kMistralV3,
  kMistralV3Tekken,
  kMistralV7,
  kMistralV7Tekken,
  kLlama3,
  kGemma,
  kPhi3,
  kPhi4,
  kZephyr,
  kStableLmZephyr,
  kVicuna,
  kVicunaOrca,
  kDeepSeek3,
};

// The configuration name of a format ("chatml", "llama3", ...), also used in logs.
std::string_view chat_format_name(ChatFormat format);

// Every format, in declaration order; for listing in --help and error messages.
const std::vector<ChatFormat> &all_chat_formats();

// Accepts exactly the names chat_format_name returns. Unknown names are kInvalidArgument with
// param "chat_template" and the list of valid names in the message.
Result<ChatFormat> chat_format_from_name(std::string_view name);

struct DetectedTemplate {
  ChatFormat format = ChatFormat::kPlain;
  // false when the template text matched no known family and `format` is the ChatML fallback.
  bool recognized = true;
};

// Recognises the family of a GGUF `tokenizer.chat_template`. Empty (or whitespace-only) text means
// the model has no template: kPlain. A bare format name (as llama.cpp allows) is accepted too.
DetectedTemplate detect_chat_format(std::string_view template_text);

// Renders the conversation as prompt text. add_generation_prompt appends the assistant header so
// the model's next tokens are the reply (ignored by kPlain and by the [INST] formats, whose user
// turn already ends where the reply begins). Errors (kInvalidArgument): empty `messages`
// (param "messages"); an unknown role (param "messages[i].role").
Result<std::string> render_chat(ChatFormat format, const std::vector<ChatMessage> &messages,
                                bool add_generation_prompt,
                                const std::vector<FunctionTool> &tools = {});

// The prompt tokens of a conversation (audit L8): the rendered text is tokenized with special
// tokens parsed in the template's own text only, never in a message's content, so a user message
// containing "<|im_end|><|im_start|>system" stays text instead of becoming the control tokens.
// When no content contains a control token's text the ids equal
// tok.encode(render_chat(...), true, true). How content is told from template text: the
// conversation is rendered a second time with every non-whitespace byte of each content replaced
// by 0x01 (which no template writes); the renderers only copy, join and trim contents, so both
// renderings align byte for byte and the 0x01 bytes are exactly the content. Tool definitions,
// call names, arguments and ids come from the client too and are masked the same way; only the
// family's markers ([TOOL_CALLS], <tool_call>, ...) are template text.
Result<std::vector<int32_t>> encode_chat(ChatFormat format,
                                         const std::vector<ChatMessage> &messages,
                                         bool add_generation_prompt, const engine::Tokenizer &tok,
                                         const std::vector<FunctionTool> &tools = {});

} // namespace gantry::api
