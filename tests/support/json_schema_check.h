// A JSON Schema validator for the subset the grammar compiler supports (api/json_schema_grammar.h):
// the unit tests check random walks with it and the integration tests the server's outputs
// (the end-to-end tests use ajv, a full validator). Returns "" or what failed where.
#pragma once

#include <boost/json.hpp>

#include <map>
#include <regex>
#include <string>
#include <string_view>

namespace gantry::testing {

namespace json = boost::json;

inline size_t code_points(std::string_view s) {
  size_t n = 0;
  for (char c : s)
    n += (static_cast<unsigned char>(c) & 0xC0) != 0x80;
  return n;
}

inline std::string validate(const json::value &v, const json::value &s, const json::value &root,
                            const std::string &at = "$") {
  if (s.is_bool())
    return s.as_bool() ? "" : at + ": false schema";
  const json::object &o = s.as_object();
  if (const auto *ref = o.if_contains("$ref")) {
    json::error_code ec;
    const json::value *t = root.find_pointer(std::string(ref->as_string()).substr(1), ec);
    return t ? validate(v, *t, root, at) : at + ": bad ref";
  }
  if (const auto *c = o.if_contains("const"); c && *c != v)
    return at + ": const";
  if (const auto *e = o.if_contains("enum")) {
    bool found = false;
    for (const auto &x : e->as_array())
      found |= x == v;
    if (!found)
      return at + ": enum";
  }
  if (const auto *a = o.if_contains("anyOf")) {
    for (const auto &b : a->as_array())
      if (validate(v, b, root, at).empty())
        return "";
    return at + ": anyOf";
  }
  if (const auto *a = o.if_contains("oneOf")) {
    int n = 0;
    for (const auto &b : a->as_array())
      n += validate(v, b, root, at).empty();
    return n == 1 ? "" : at + ": oneOf matched " + std::to_string(n);
  }
  if (const auto *a = o.if_contains("allOf"))
    for (const auto &b : a->as_array())
      if (auto e = validate(v, b, root, at); !e.empty())
        return e;
  if (const auto *t = o.if_contains("type")) {
    auto is = [&](std::string_view name) {
      if (name == "object")
        return v.is_object();
      if (name == "array")
        return v.is_array();
      if (name == "string")
        return v.is_string();
      if (name == "boolean")
        return v.is_bool();
      if (name == "null")
        return v.is_null();
      if (name == "number")
        return v.is_number();
      if (name == "integer")
        return v.is_int64() || v.is_uint64() ||
               (v.is_double() && std::floor(v.as_double()) == v.as_double());
      return false;
    };
    bool ok = false;
    if (t->is_string())
      ok = is(t->as_string());
    else
      for (const auto &x : t->as_array())
        ok |= is(x.as_string());
    if (!ok)
      return at + ": type";
  }
  if (v.is_object()) {
    const json::object &obj = v.as_object();
    const json::object *props =
        o.contains("properties") ? &o.at("properties").as_object() : nullptr;
    if (const auto *r = o.if_contains("required"))
      for (const auto &k : r->as_array())
        if (!obj.contains(k.as_string()))
          return at + ": missing " + std::string(k.as_string());
    for (const auto &kv : obj) {
      const std::string child = at + "." + std::string(kv.key());
      if (props && props->contains(kv.key())) {
        if (auto e = validate(kv.value(), props->at(kv.key()), root, child); !e.empty())
          return e;
      } else if (const auto *ap = o.if_contains("additionalProperties")) {
        if (auto e = validate(kv.value(), *ap, root, child); !e.empty())
          return e;
      }
    }
  }
  if (v.is_array()) {
    const json::array &arr = v.as_array();
    if (const auto *m = o.if_contains("minItems"); m && arr.size() < m->to_number<size_t>())
      return at + ": minItems";
    if (const auto *m = o.if_contains("maxItems"); m && arr.size() > m->to_number<size_t>())
      return at + ": maxItems";
    size_t n_prefix = 0;
    if (const auto *p = o.if_contains("prefixItems")) {
      n_prefix = p->as_array().size();
      for (size_t i = 0; i < arr.size() && i < n_prefix; ++i)
        if (auto e = validate(arr[i], p->as_array()[i], root, at + "[" + std::to_string(i) + "]");
            !e.empty())
          return e;
    }
    if (const auto *it = o.if_contains("items"))
      for (size_t i = n_prefix; i < arr.size(); ++i)
        if (auto e = validate(arr[i], *it, root, at + "[" + std::to_string(i) + "]"); !e.empty())
          return e;
  }
  if (v.is_string()) {
    const std::string str(v.as_string());
    if (const auto *m = o.if_contains("minLength"); m && code_points(str) < m->to_number<size_t>())
      return at + ": minLength";
    if (const auto *m = o.if_contains("maxLength"); m && code_points(str) > m->to_number<size_t>())
      return at + ": maxLength";
    if (const auto *p = o.if_contains("pattern"))
      if (!std::regex_search(str, std::regex(std::string(p->as_string()))))
        return at + ": pattern " + str;
    if (const auto *f = o.if_contains("format")) {
      static const std::map<std::string, std::string> re = {
          {"date", R"(^\d{4}-\d{2}-\d{2}$)"},
          {"date-time", R"(^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$)"},
          {"uuid", R"(^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$)"},
          {"email", R"(^[^@\s]+@[^@\s]+\.[^@\s]+$)"}};
      if (!std::regex_search(str, std::regex(re.at(std::string(f->as_string())))))
        return at + ": format " + str;
    }
  }
  if (v.is_number()) {
    const double d = v.to_number<double>();
    if (const auto *m = o.if_contains("minimum"); m && d < m->to_number<double>())
      return at + ": minimum";
    if (const auto *m = o.if_contains("maximum"); m && d > m->to_number<double>())
      return at + ": maximum";
    if (const auto *m = o.if_contains("exclusiveMinimum"); m && d <= m->to_number<double>())
      return at + ": exclusiveMinimum";
    if (const auto *m = o.if_contains("exclusiveMaximum"); m && d >= m->to_number<double>())
      return at + ": exclusiveMaximum";
  }
  return "";
}

} // namespace gantry::testing
