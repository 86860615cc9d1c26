#include "api/json_fields.h"

#include <boost/json.hpp>

#include <algorithm>
#include <cmath>

#include "api/json_schema_grammar.h"

namespace gantry::api::fields {
namespace json = boost::json;

Result<double> number(const json::value &v, const std::string &name) {
  if (v.is_double())
    return v.as_double();
  if (v.is_int64())
    return static_cast<double>(v.as_int64());
  if (v.is_uint64())
    return static_cast<double>(v.as_uint64());
  return bad("'" + name + "' must be a number", name);
}

Result<int64_t> integer(const json::value &v, const std::string &name) {
  if (v.is_int64())
    return v.as_int64();
  if (v.is_uint64()) {
    if (v.as_uint64() > static_cast<uint64_t>(INT64_MAX))
      return bad("'" + name + "' is too large", name);
    return static_cast<int64_t>(v.as_uint64());
  }
  if (v.is_double()) {
    const double d = v.as_double();
    if (d >= -0x1p63 && d < 0x1p63 && d == std::trunc(d))
      return static_cast<int64_t>(d);
  }
  return bad("'" + name + "' must be an integer", name);
}

Result<bool> boolean(const json::value &v, const std::string &name) {
  if (!v.is_bool())
    return bad("'" + name + "' must be a boolean", name);
  return v.as_bool();
}

Result<std::string> string(const json::value &v, const std::string &name) {
  if (!v.is_string())
    return bad("'" + name + "' must be a string", name);
  return std::string(v.as_string());
}

Result<float> ranged(const json::value &v, const std::string &name, double lo, double hi) {
  GANTRY_ASSIGN_OR_RETURN(double d, number(v, name));
  if (!(d >= lo && d <= hi)) {
    return bad("'" + name + "' must be between " + json::serialize(json::value(lo)) + " and " +
                   json::serialize(json::value(hi)) + ", got " + json::serialize(v),
               name);
  }
  return static_cast<float>(d);
}

Result<const json::object *> object(const json::value &v, const std::string &name) {
  if (!v.is_object())
    return bad("'" + name + "' must be an object", name);
  return &v.as_object();
}

Result<const json::array *> array(const json::value &v, const std::string &name) {
  if (!v.is_array())
    return bad("'" + name + "' must be an array", name);
  return &v.as_array();
}

Result<std::string> schema_text(const json::value &v, const std::string &name) {
  if (!v.is_object())
    return bad("'" + name + "' must be a JSON Schema object", name);
  return json::serialize(v);
}

Result<std::string> tool_schema_text(const json::value &v, const std::string &name) {
  GANTRY_ASSIGN_OR_RETURN(std::string text, schema_text(v, name));
  if (auto st = check_json_schema(text); !st)
    return bad(name + ": " + st.error().message, name);
  return text;
}

std::optional<size_t> chat_tool_schema_index(std::string_view param) {
  constexpr std::string_view kHead = "tools[", kTail = "].function.parameters";
  if (!param.starts_with(kHead) || !param.ends_with(kTail) ||
      param.size() <= kHead.size() + kTail.size())
    return std::nullopt;
  const std::string_view digits =
      param.substr(kHead.size(), param.size() - kHead.size() - kTail.size());
  if (digits.size() > 6 ||
      !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; }))
    return std::nullopt;
  size_t i = 0;
  for (char c : digits)
    i = i * 10 + static_cast<size_t>(c - '0');
  return i;
}

} // namespace gantry::api::fields
