// Text inside the hand-written JSON log lines: quotes and backslashes escaped, control characters
// dropped (a log line stays one line). Not for API output, which goes through Boost.JSON.
#pragma once

#include <string>
#include <string_view>

namespace gantry {

inline std::string json_escaped(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    if (c == '"' || c == '\\')
      out += '\\';
    if (static_cast<unsigned char>(c) >= 0x20)
      out += c;
  }
  return out;
}

inline std::string json_quoted(std::string_view s) { return "\"" + json_escaped(s) + "\""; }

} // namespace gantry
