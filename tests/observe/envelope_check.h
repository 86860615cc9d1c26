// Parses a Sentry envelope the way Relay reads one, for tests: header line, item header line,
// then exactly `length` bytes of payload and a closing newline.
#pragma once

#include <string>

#include <boost/json.hpp>

namespace gantry::observe::testing {

struct ParsedEnvelope {
  std::string error; // empty when the envelope is well formed
  boost::json::object header;
  boost::json::object item;
  boost::json::object payload;
  std::size_t payload_bytes = 0;
};

inline bool is_hex32(const boost::json::value &v) {
  if (!v.is_string() || v.as_string().size() != 32)
    return false;
  for (char c : v.as_string())
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
      return false;
  return true;
}

inline ParsedEnvelope parse_envelope(const std::string &body) {
  ParsedEnvelope out;
  auto parse_object = [&](std::string_view text, boost::json::object &into, const char *what) {
    boost::system::error_code ec;
    boost::json::value v = boost::json::parse(text, ec);
    if (ec || !v.is_object()) {
      out.error = std::string(what) + " is not a JSON object: " + std::string(text);
      return false;
    }
    into = v.as_object();
    return true;
  };
  const std::size_t nl1 = body.find('\n');
  if (nl1 == std::string::npos)
    return out.error = "no header line", out;
  const std::size_t nl2 = body.find('\n', nl1 + 1);
  if (nl2 == std::string::npos)
    return out.error = "no item header line", out;
  if (!parse_object(std::string_view(body).substr(0, nl1), out.header, "envelope header"))
    return out;
  if (!parse_object(std::string_view(body).substr(nl1 + 1, nl2 - nl1 - 1), out.item, "item header"))
    return out;
  if (!out.item.contains("length") || !out.item.at("length").is_number())
    return out.error = "item header has no numeric length", out;
  const std::size_t length = out.item.at("length").to_number<std::size_t>();
  const std::size_t start = nl2 + 1;
  if (start + length + 1 != body.size() || body[start + length] != '\n') {
    return out.error = "item length " + std::to_string(length) + " does not match the " +
                       std::to_string(body.size() - start) + " bytes after the item header " +
                       "(payload + closing newline)",
           out;
  }
  out.payload_bytes = length;
  parse_object(std::string_view(body).substr(start, length), out.payload, "payload");
  return out;
}

} // namespace gantry::observe::testing
