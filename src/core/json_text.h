// JSON text written by hand. json_escaped/json_quoted: text inside the hand-written log lines
// (quotes and backslashes escaped, control characters dropped: a log line stays one line).
// append_json_string / append_json_int: exact JSON literals for output written without a DOM.
#pragma once

#include <charconv>
#include <cstdint>
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

// A JSON string literal byte for byte as Boost.JSON's serializer (and Python's json.dumps with
// ensure_ascii=False) writes one: quote, backslash and control characters escaped (\b \f \n \r
// \t by name, the others as \u00XX), everything else, UTF-8 included, as is.
inline void append_json_string(std::string &out, std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  out += '"';
  std::size_t run = 0; // start of the bytes not yet copied
  for (std::size_t i = 0; i < s.size(); ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c != '"' && c != '\\')
      continue;
    out.append(s.data() + run, i - run);
    run = i + 1;
    out += '\\';
    switch (c) {
    case '"': out += '"'; break;
    case '\\': out += '\\'; break;
    case '\b': out += 'b'; break;
    case '\f': out += 'f'; break;
    case '\n': out += 'n'; break;
    case '\r': out += 'r'; break;
    case '\t': out += 't'; break;
    default:
      out += "u00";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  out.append(s.data() + run, s.size() - run);
  out += '"';
}

// An integer as JSON (and Boost.JSON's serializer) writes it.
inline void append_json_int(std::string &out, int64_t v) {
  char buf[24]; // any int64, sign included
  const auto res = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, res.ptr);
}

} // namespace gantry
