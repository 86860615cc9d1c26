// Fuzzes chat-template detection and rendering: the input is split at NUL bytes into a
// template text and (role, content) pairs, rendered with every format.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "api/chat_template.h"

using namespace gantry;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  std::string_view in(reinterpret_cast<const char *>(data), size);
  std::vector<std::string_view> parts;
  size_t start = 0;
  while (start <= in.size() && parts.size() < 64) {
    size_t end = in.find('\0', start);
    if (end == std::string_view::npos)
      end = in.size();
    parts.push_back(in.substr(start, end - start));
    start = end + 1;
  }
  (void)api::detect_chat_format(parts[0]);
  static const char *kRoles[] = {"system", "user", "assistant", "tool", "developer", "nobody"};
  std::vector<api::ChatMessage> messages;
  for (size_t i = 1; i < parts.size(); ++i) {
    const size_t r = parts[i].empty() ? 0 : static_cast<unsigned char>(parts[i][0]) % 6;
    messages.push_back({kRoles[r], std::string(parts[i])});
  }
  for (api::ChatFormat f : api::all_chat_formats()) {
    (void)api::render_chat(f, messages, true);
    (void)api::render_chat(f, messages, false);
  }
  return 0;
}
