#include "api/json_schema_grammar.h"

#include <algorithm>
#include <boost/json.hpp>
#include <cctype>
#include <cmath>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <utility>
#include <vector>

#include "api/schema_pattern.h"

namespace gantry::api {

namespace json = boost::json;

namespace {

constexpr int kMaxDigits = kMaxRangeDigits; // integer and fraction digits of generated numbers

const std::set<std::string, std::less<>> kAnnotations = {
    "title",    "description", "default",  "examples",  "$schema", "$id",
    "$comment", "deprecated",  "readOnly", "writeOnly", "$defs",   "definitions"};
const std::set<std::string, std::less<>> kObjectKeys = {"properties", "required",
                                                        "additionalProperties"};
const std::set<std::string, std::less<>> kArrayKeys = {"items", "prefixItems", "minItems",
                                                       "maxItems", "uniqueItems"};
const std::set<std::string, std::less<>> kStringKeys = {"minLength", "maxLength", "pattern",
                                                        "format"};
const std::set<std::string, std::less<>> kNumberKeys = {"minimum", "maximum", "exclusiveMinimum",
                                                        "exclusiveMaximum"};
const std::set<std::string, std::less<>> kCombinators = {"$ref",  "const", "enum",
                                                         "anyOf", "oneOf", "allOf"};

std::string pointer_child(const std::string &ptr, std::string_view key) {
  std::string out = ptr + "/";
  for (char c : key) {
    if (c == '~')
      out += "~0";
    else if (c == '/')
      out += "~1";
    else
      out += c;
  }
  return out;
}

// The GBNF for a JSON value written exactly as serialized (enum members, const).
std::string json_literal(const json::value &v) { return gbnf_literal(json::serialize(v)); }

class Compiler {
public:
  Compiler(const json::value &root, std::string prefix) : root_(root), prefix_(std::move(prefix)) {}

  Result<std::string> run() {
    GANTRY_ASSIGN_OR_RETURN(std::string body, visit(root_, "#", 0));
    add_rule("root", body);
    std::string out;
    for (const auto &[name, rule] : rules_)
      out += prefix_ + name + " ::= " + rule + "\n";
    if (out.size() > engine::kMaxGrammarBytes)
      return Error::invalid("the JSON schema is too large: its grammar exceeds " +
                            std::to_string(engine::kMaxGrammarBytes) + " bytes");
    return out;
  }

  // Rules for any JSON value, shared by every use.
  std::string prim(const std::string &kind) {
    if (have_.count(kind))
      return prefix_ + kind;
    have_.insert(kind);
    const std::string p = prefix_;
    if (kind == "space") {
      add_rule(kind, R"(| " " | "\n" [ \t]{0,20})");
    } else if (kind == "char") {
      // \u escapes stop short of surrogates: a lone one is not a character and parsers refuse it.
      add_rule(kind, R"([^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" )"
                     R"(([0-9a-cA-CefEF] [0-9a-fA-F]{3} | [dD] [0-7] [0-9a-fA-F]{2})))");
    } else if (kind == "string") {
      add_rule(kind, "\"\\\"\" " + prim("char") + "* \"\\\"\" " + prim("space"));
    } else if (kind == "integral") {
      add_rule(kind, "\"0\" | [1-9] [0-9]{0," + std::to_string(kMaxDigits - 1) + "}");
    } else if (kind == "integer") {
      add_rule(kind, "\"-\"? " + prim("integral") + " " + prim("space"));
    } else if (kind == "number") {
      add_rule(kind, "\"-\"? " + prim("integral") + " (\".\" [0-9]{1," +
                         std::to_string(kMaxDigits) + "})? ([eE] [-+]? [0-9]{1,3})? " +
                         prim("space"));
    } else if (kind == "boolean") {
      add_rule(kind, "(\"true\" | \"false\") " + prim("space"));
    } else if (kind == "null") {
      add_rule(kind, "\"null\" " + prim("space"));
    } else if (kind == "value") {
      const size_t slot = rules_.size();
      add_rule(kind, "");
      rules_[slot].second = prim("object") + " | " + prim("array") + " | " + prim("string") +
                            " | " + prim("number") + " | " + prim("boolean") + " | " + prim("null");
    } else if (kind == "object") {
      const std::string kv = prim("string") + " \":\" " + prim("space") + " " + prim("value");
      add_rule(kind, "\"{\" " + prim("space") + " (" + kv + " (\",\" " + prim("space") + " " + kv +
                         ")*)? \"}\" " + prim("space"));
    } else if (kind == "array") {
      add_rule(kind, "\"[\" " + prim("space") + " (" + prim("value") + " (\",\" " + prim("space") +
                         " " + prim("value") + ")*)? \"]\" " + prim("space"));
    }
    return p + kind;
  }

private:
  void add_rule(const std::string &name, const std::string &body) {
    rules_.emplace_back(name, body);
  }
  // A fresh rule name from a hint.
  std::string fresh(std::string_view hint) {
    std::string base;
    for (char c : hint.substr(0, 32))
      base += std::isalnum(static_cast<unsigned char>(c)) ? c : '-';
    if (base.empty())
      base = "s";
    std::string name = base;
    // The shared primitives' names are reserved: prim() may add them later.
    static const std::set<std::string, std::less<>> kReserved = {
        "root",   "space",   "char", "string", "integral", "integer",
        "number", "boolean", "null", "value",  "object",   "array"};
    // Numbered from where this base left off: probing from 1 each time made a schema with many
    // rules of one kind (a trie of excluded property names) quadratic (found by grammar_fuzz).
    int &next = next_suffix_[base];
    while (taken_.count(name) || kReserved.count(name))
      name = base + "-" + std::to_string(++next);
    taken_.insert(name);
    return name;
  }
  std::string named(std::string_view hint, const std::string &body) {
    const std::string name = fresh(hint);
    add_rule(name, body);
    return prefix_ + name;
  }

  // kUnsupported (also a 400): check_json_schema tells these from malformed schemas.
  static Error unsupported(const std::string &what, const std::string &ptr) {
    return Error::unsupported("unsupported JSON schema feature: " + what + " at " + ptr);
  }
  static Error invalid(const std::string &what, const std::string &ptr) {
    return Error::invalid("invalid JSON schema at " + ptr + ": " + what);
  }

  Result<const json::value *> resolve(std::string_view ref, const std::string &ptr) {
    if (ref.empty() || ref[0] != '#')
      return unsupported("$ref '" + std::string(ref) + "' (only local refs \"#...\")", ptr);
    if (ref != "#" && ref.substr(0, 8) != "#/$defs/" && ref.substr(0, 14) != "#/definitions/")
      return unsupported("$ref '" + std::string(ref) + "' (only #, #/$defs/ and #/definitions/)",
                         ptr);
    json::error_code ec;
    const json::value *target = root_.find_pointer(ref.substr(1), ec);
    if (!target)
      return invalid("$ref '" + std::string(ref) + "' points nowhere", ptr);
    return target;
  }

  Result<std::string> visit(const json::value &s, const std::string &ptr, int depth) {
    if (++nodes_ > kMaxSchemaNodes)
      return Error::invalid("the JSON schema is too large: more than " +
                            std::to_string(kMaxSchemaNodes) + " sub-schemas");
    if (depth > kMaxSchemaDepth)
      return Error::invalid("the JSON schema nests more than " + std::to_string(kMaxSchemaDepth) +
                            " levels deep");
    if (s.is_bool()) {
      if (s.as_bool())
        return prim("value");
      return invalid("schema false can never be satisfied", ptr);
    }
    if (!s.is_object())
      return invalid("a schema must be an object or a boolean", ptr);
    const json::object &o = s.as_object();
    for (const auto &kv : o) {
      const std::string_view k = kv.key();
      if (!kAnnotations.count(k) && !kObjectKeys.count(k) && !kArrayKeys.count(k) &&
          !kStringKeys.count(k) && !kNumberKeys.count(k) && !kCombinators.count(k) && k != "type")
        return unsupported("keyword '" + std::string(k) + "'", ptr);
    }
    // Combinators stand alone: their siblings would need an intersection of grammars.
    for (const char *c : {"$ref", "const", "enum", "anyOf", "oneOf", "allOf"}) {
      if (!o.contains(c))
        continue;
      for (const auto &kv : o)
        if (kv.key() != c && !kAnnotations.count(kv.key()) &&
            !(kv.key() == "type" &&
              (std::string_view(c) == "const" || std::string_view(c) == "enum")))
          return unsupported("keyword '" + std::string(kv.key()) + "' alongside '" + c + "'", ptr);
    }
    if (const json::value *ref = o.if_contains("$ref")) {
      if (!ref->is_string())
        return invalid("$ref must be a string", ptr);
      const std::string key(ref->as_string());
      auto it = ref_rules_.find(key);
      if (it != ref_rules_.end())
        return it->second;
      GANTRY_ASSIGN_OR_RETURN(const json::value *target, resolve(key, ptr));
      const std::string name = fresh(key == "#" ? "root-ref" : key.substr(key.rfind('/') + 1));
      ref_rules_[key] = prefix_ + name;
      const size_t slot = rules_.size();
      add_rule(name, "");
      GANTRY_ASSIGN_OR_RETURN(std::string body, visit(*target, key, depth + 1));
      rules_[slot].second = body;
      return prefix_ + name;
    }
    if (o.contains("const") || o.contains("enum")) {
      json::array values;
      if (const json::value *c = o.if_contains("const")) {
        values.push_back(*c);
      } else {
        const json::value &e = o.at("enum");
        if (!e.is_array() || e.as_array().empty())
          return invalid("enum must be a non-empty array", ptr);
        values = e.as_array();
      }
      std::string body;
      for (const auto &v : values)
        if (of_type(v, o.if_contains("type")))
          body += (body.empty() ? "" : " | ") + json_literal(v);
      if (body.empty())
        return invalid("no enum or const value has the schema's type", ptr);
      return "((" + body + ") " + prim("space") + ")";
    }
    for (const char *c : {"anyOf", "oneOf"}) {
      const json::value *list = o.if_contains(c);
      if (!list)
        continue;
      if (!list->is_array() || list->as_array().empty())
        return invalid(std::string(c) + " must be a non-empty array", ptr);
      if (std::string_view(c) == "oneOf")
        GANTRY_TRY(check_disjoint(list->as_array(), pointer_child(ptr, c)));
      std::string body;
      size_t i = 0;
      for (const auto &branch : list->as_array()) {
        GANTRY_ASSIGN_OR_RETURN(
            std::string alt,
            visit(branch, pointer_child(pointer_child(ptr, c), std::to_string(i++)), depth + 1));
        body += (body.empty() ? "" : " | ") + alt;
      }
      return "(" + body + ")";
    }
    if (const json::value *all = o.if_contains("allOf"))
      return visit_all_of(*all, pointer_child(ptr, "allOf"), depth);
    return visit_typed(o, ptr, depth);
  }

  static bool of_type(const json::value &v, const json::value *type) {
    if (!type)
      return true;
    auto one = [&](std::string_view t) {
      if (t == "object")
        return v.is_object();
      if (t == "array")
        return v.is_array();
      if (t == "string")
        return v.is_string();
      if (t == "boolean")
        return v.is_bool();
      if (t == "null")
        return v.is_null();
      if (t == "number")
        return v.is_number();
      if (t == "integer")
        return v.is_int64() || v.is_uint64() ||
               (v.is_double() && std::floor(v.as_double()) == v.as_double());
      return false;
    };
    if (type->is_string())
      return one(type->as_string());
    if (type->is_array())
      for (const auto &t : type->as_array())
        if (t.is_string() && one(t.as_string()))
          return true;
    return false;
  }

  // oneOf is exact only when no document can match two branches: each branch a const/enum
  // (all values distinct) or a single distinct type.
  Status check_disjoint(const json::array &branches, const std::string &ptr) {
    std::set<std::string> seen;
    for (const auto &b : branches) {
      std::vector<std::string> keys;
      const json::object *o = b.if_object();
      if (o && o->if_contains("const")) {
        keys.push_back("v:" + json::serialize(o->at("const")));
      } else if (o && o->if_contains("enum") && o->at("enum").is_array()) {
        for (const auto &v : o->at("enum").as_array())
          keys.push_back("v:" + json::serialize(v));
      } else if (o && o->if_contains("type") && o->at("type").is_string()) {
        std::string t(o->at("type").as_string());
        keys.push_back("t:" + t);
        if (t == "number" || t == "integer")
          keys.push_back(t == "number" ? "t:integer" : "t:number");
      } else {
        return unsupported("oneOf whose branches may overlap (use anyOf)", ptr);
      }
      for (const auto &k : keys)
        if (!seen.insert(k).second)
          return unsupported("oneOf whose branches may overlap (use anyOf)", ptr);
    }
    // A constant and a type branch could still overlap.
    bool consts = false, types = false;
    for (const auto &k : seen)
      (k[0] == 'v' ? consts : types) = true;
    if (consts && types)
      return unsupported("oneOf whose branches may overlap (use anyOf)", ptr);
    return Ok();
  }

  // allOf: one schema, or object schemas merged into one (properties, required,
  // additionalProperties: false only when every merged property is in that branch).
  Result<std::string> visit_all_of(const json::value &all, const std::string &ptr, int depth) {
    if (!all.is_array() || all.as_array().empty())
      return invalid("allOf must be a non-empty array", ptr);
    if (all.as_array().size() == 1)
      return visit(all.as_array()[0], pointer_child(ptr, "0"), depth + 1);
    json::object props, merged;
    json::array required;
    std::vector<const json::object *> closed;
    size_t i = 0;
    for (const auto &b : all.as_array()) {
      const std::string bp = pointer_child(ptr, std::to_string(i++));
      const json::value *v = &b;
      if (v->is_object() && v->as_object().if_contains("$ref")) {
        GANTRY_ASSIGN_OR_RETURN(v, resolve(v->as_object().at("$ref").as_string(), bp));
      }
      const json::object *o = v->if_object();
      if (!o)
        return unsupported("allOf of non-object schemas", bp);
      for (const auto &kv : *o) {
        const std::string_view k = kv.key();
        if (kAnnotations.count(k))
          continue;
        if (k == "type" && kv.value() == "object")
          continue;
        if (k == "properties" && kv.value().is_object()) {
          for (const auto &p : kv.value().as_object()) {
            if (props.contains(p.key()) && props.at(p.key()) != p.value())
              return unsupported("allOf with conflicting property '" + std::string(p.key()) + "'",
                                 bp);
            props[p.key()] = p.value();
          }
        } else if (k == "required" && kv.value().is_array()) {
          for (const auto &r : kv.value().as_array())
            required.push_back(r);
        } else if (k == "additionalProperties" && kv.value() == false) {
          closed.push_back(o);
        } else {
          return unsupported("allOf of non-object schemas (keyword '" + std::string(k) + "')", bp);
        }
      }
    }
    for (const json::object *c : closed) {
      const json::value *own = c->if_contains("properties");
      for (const auto &p : props)
        if (!own || !own->is_object() || !own->as_object().contains(p.key()))
          return unsupported("allOf where additionalProperties: false excludes property '" +
                                 std::string(p.key()) + "'",
                             ptr);
    }
    merged["type"] = "object";
    merged["properties"] = std::move(props);
    merged["required"] = std::move(required);
    merged["additionalProperties"] = false;
    merged_.push_back(std::make_unique<json::value>(std::move(merged)));
    return visit_typed(merged_.back()->as_object(), ptr, depth);
  }

  Result<std::string> visit_typed(const json::object &o, const std::string &ptr, int depth) {
    std::vector<std::string> types;
    if (const json::value *t = o.if_contains("type")) {
      if (t->is_string()) {
        types.emplace_back(t->as_string());
      } else if (t->is_array() && !t->as_array().empty()) {
        for (const auto &x : t->as_array()) {
          if (!x.is_string())
            return invalid("type must be a string or an array of strings", ptr);
          types.emplace_back(x.as_string());
        }
      } else {
        return invalid("type must be a string or an array of strings", ptr);
      }
    } else {
      // No type: the keywords present say which; none means any value.
      auto has_any = [&](const auto &keys) {
        for (const auto &kv : o)
          if (keys.count(kv.key()))
            return true;
        return false;
      };
      if (has_any(kObjectKeys))
        types.push_back("object");
      if (has_any(kArrayKeys))
        types.push_back("array");
      if (has_any(kStringKeys))
        types.push_back("string");
      if (has_any(kNumberKeys))
        types.push_back("number");
      if (types.size() > 1)
        return unsupported("keywords of several types without a 'type'", ptr);
      if (types.empty())
        return prim("value");
    }
    std::string body;
    for (const auto &t : types) {
      std::string alt;
      if (t == "object") {
        GANTRY_ASSIGN_OR_RETURN(alt, visit_object(o, ptr, depth));
      } else if (t == "array") {
        GANTRY_ASSIGN_OR_RETURN(alt, visit_array(o, ptr, depth));
      } else if (t == "string") {
        GANTRY_ASSIGN_OR_RETURN(alt, visit_string(o, ptr));
      } else if (t == "number" || t == "integer") {
        GANTRY_ASSIGN_OR_RETURN(alt, visit_number(o, ptr, t == "integer"));
      } else if (t == "boolean" || t == "null") {
        alt = prim(t);
      } else {
        return invalid("unknown type '" + t + "'", ptr);
      }
      body += (body.empty() ? "" : " | ") + alt;
    }
    return types.size() == 1 ? body : "(" + body + ")";
  }

  // A JSON string whose content is none of `names` (keys of additional properties), from a trie
  // of the names: leave it at any character, or close the string short of a name's end. The
  // names are printable ASCII without '"' and '\' (visit_object checks).
  std::string string_not_in(const std::vector<std::string> &names) {
    if (names.empty())
      return prim("string");
    struct Node {
      std::map<char, int> next;
      bool end = false;
    };
    std::vector<Node> trie(1);
    for (const auto &n : names) {
      int at = 0;
      for (char c : n) {
        auto it = trie[at].next.find(c);
        if (it == trie[at].next.end()) {
          trie.emplace_back();
          it = trie[at].next.emplace(c, static_cast<int>(trie.size()) - 1).first;
        }
        at = it->second;
      }
      trie[at].end = true;
    }
    const std::string quote = R"("\"")";
    const std::string rest = prim("char") + "* " + quote;
    const std::string escape = R"("\\" (["\\/bfnrt] | "u" ([0-9a-cA-CefEF] [0-9a-fA-F]{3} | )"
                               R"([dD] [0-7] [0-9a-fA-F]{2})))";
    // One rule per trie node, children first (they were created after their parents): the
    // grammar grows linearly with the names. Nesting each child's text into its parent's (as this
    // did before) copied the whole subtree once per level, quadratic in a name's length — a 3 KB
    // property name took tens of seconds (found by grammar_fuzz) — and recursed once per byte.
    std::vector<std::string> rule(trie.size());
    for (size_t at = trie.size(); at-- > 0;) {
      std::string excluded, body;
      for (const auto &[c, child] : trie[at].next) {
        if (c == ']' || c == '-' || c == '^' || c == '[')
          excluded += '\\';
        excluded += c;
        body += (body.empty() ? "" : " | ") + gbnf_literal(std::string(1, c)) + " " + rule[child];
      }
      body += (body.empty() ? "" : " | ") + std::string(R"([^"\\\x7F\x00-\x1F)") + excluded + "] " +
              rest + " | " + escape + " " + rest;
      if (!trie[at].end)
        body += " | " + quote;
      rule[at] = at == 0 ? "(" + body + ")" : named("key-not-listed-node", body);
    }
    return named("key-not-listed", quote + " " + rule[0] + " " + prim("space"));
  }

  Result<std::string> visit_object(const json::object &o, const std::string &ptr, int depth) {
    std::vector<std::pair<std::string, std::string>> kvs; // key, rule
    std::vector<bool> req;
    std::set<std::string> required;
    if (const json::value *r = o.if_contains("required")) {
      if (!r->is_array())
        return invalid("required must be an array", ptr);
      for (const auto &x : r->as_array()) {
        if (!x.is_string())
          return invalid("required must list strings", ptr);
        required.insert(std::string(x.as_string()));
      }
    }
    const json::value *props = o.if_contains("properties");
    if (props && !props->is_object())
      return invalid("properties must be an object", ptr);
    const json::value *extra = o.if_contains("additionalProperties");
    // Absent: closed when properties are listed (a subset of what the schema allows).
    const bool open = extra ? !(extra->is_bool() && !extra->as_bool()) : !props;
    std::vector<std::string> names;
    if (props) {
      for (const auto &p : props->as_object()) {
        const std::string key(p.key());
        GANTRY_ASSIGN_OR_RETURN(
            std::string value,
            visit(p.value(), pointer_child(pointer_child(ptr, "properties"), key), depth + 1));
        kvs.emplace_back(key, gbnf_literal(json::serialize(json::value(key))) + " " +
                                  prim("space") + " \":\" " + prim("space") + " " + value);
        req.push_back(required.count(key) > 0);
        names.push_back(key);
      }
    }
    for (const auto &r : required)
      if (std::find(names.begin(), names.end(), r) == names.end()) {
        if (!open)
          return invalid("required property '" + r + "' is not in properties", ptr);
        kvs.emplace_back(r, gbnf_literal(json::serialize(json::value(r))) + " " + prim("space") +
                                " \":\" " + prim("space") + " " + prim("value"));
        req.push_back(true);
        names.push_back(r);
      }
    std::string extra_kv;
    if (open) {
      for (const auto &name : names)
        for (char c : name)
          if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) >= 0x7F ||
              c == '"' || c == '\\')
            return unsupported("additional properties beside a property name with escapes or "
                               "non-ASCII characters",
                               ptr);
      std::string value = prim("value");
      if (extra && extra->is_object()) {
        GANTRY_ASSIGN_OR_RETURN(
            value, visit(*extra, pointer_child(ptr, "additionalProperties"), depth + 1));
      }
      extra_kv = string_not_in(names) + " \":\" " + prim("space") + " " + value;
    }
    // Listed order, optional ones skippable: t_i = the rest from i when something came before
    // (each item preceded by a comma), s_i = the rest from i when nothing has yet.
    const size_t n = kvs.size();
    const std::string comma = "\",\" " + prim("space") + " ";
    std::string t_next = extra_kv.empty() ? "" : "(" + comma + extra_kv + ")*";
    std::string s_next = extra_kv.empty() ? "" : "(" + extra_kv + " (" + comma + extra_kv + ")*)?";
    for (size_t k = n; k-- > 0;) {
      const std::string &kv = kvs[k].second;
      std::string t = comma + kv + " " + t_next;
      std::string s = kv + " " + t_next;
      if (!req[k]) {
        t = "(" + t + ")" + (t_next.empty() ? "?" : " | " + t_next);
        s = "(" + s + ")" + (s_next.empty() ? "?" : " | " + s_next);
      }
      t_next = k ? named("obj-t", t.empty() ? "\"\"" : t) : t;
      s_next = named("obj-s", s);
    }
    return "\"{\" " + prim("space") + " " + (s_next.empty() ? "" : s_next + " ") + "\"}\" " +
           prim("space");
  }

  Result<int64_t> count(const json::object &o, const char *key, const std::string &ptr) {
    const json::value *v = o.if_contains(key);
    if (!v)
      return int64_t{-1};
    if (v->is_int64() && v->as_int64() >= 0)
      return v->as_int64();
    if (v->is_uint64())
      return static_cast<int64_t>(std::min<uint64_t>(v->as_uint64(), 1u << 30));
    if (v->is_double() && v->as_double() >= 0 && std::floor(v->as_double()) == v->as_double())
      return static_cast<int64_t>(std::min(v->as_double(), 1e9));
    return invalid(std::string(key) + " must be a non-negative integer", ptr);
  }

  Result<std::string> visit_array(const json::object &o, const std::string &ptr, int depth) {
    if (const json::value *u = o.if_contains("uniqueItems"); u && *u != false)
      return unsupported("uniqueItems", ptr);
    GANTRY_ASSIGN_OR_RETURN(int64_t min, count(o, "minItems", ptr));
    GANTRY_ASSIGN_OR_RETURN(int64_t max, count(o, "maxItems", ptr));
    min = std::max<int64_t>(min, 0);
    if (max >= 0 && max < min)
      return invalid("maxItems is below minItems", ptr);
    std::vector<std::string> prefix;
    if (const json::value *p = o.if_contains("prefixItems")) {
      if (!p->is_array())
        return invalid("prefixItems must be an array", ptr);
      size_t i = 0;
      for (const auto &item : p->as_array()) {
        GANTRY_ASSIGN_OR_RETURN(
            std::string rule,
            visit(item, pointer_child(pointer_child(ptr, "prefixItems"), std::to_string(i++)),
                  depth + 1));
        prefix.push_back(rule);
      }
    }
    std::string item = prim("value");
    bool more = true;
    if (const json::value *it = o.if_contains("items")) {
      if (it->is_bool() && !it->as_bool()) {
        more = false;
      } else {
        GANTRY_ASSIGN_OR_RETURN(item, visit(*it, pointer_child(ptr, "items"), depth + 1));
      }
    }
    const auto k = static_cast<int64_t>(prefix.size());
    if (!more)
      max = max < 0 ? k : std::min(max, k);
    if (max >= 0 && min > max)
      return invalid("minItems needs more items than the schema allows", ptr);
    const int64_t kMaxBound = 1000;
    if (min > kMaxBound || (max > kMaxBound && max - min > 0 && max != k))
      return unsupported("minItems/maxItems above " + std::to_string(kMaxBound), ptr);
    const std::string comma = "\",\" " + prim("space") + " ";
    // tail(j): elements j.. (1-based) once j-1 are written, each preceded by a comma.
    auto homogeneous = [&](int64_t j) -> std::string {
      if (!more || (max >= 0 && max < j))
        return "";
      const int64_t need = std::max<int64_t>(0, min - (j - 1));
      return "(" + comma + item + "){" + std::to_string(need) + "," +
             (max < 0 ? "" : std::to_string(max - (j - 1))) + "}";
    };
    std::string tail = homogeneous(std::max<int64_t>(k + 1, 2));
    for (int64_t j = k; j >= 2; --j) {
      if (max >= 0 && j > max) {
        tail.clear();
        continue;
      }
      const std::string t = comma + prefix[j - 1] + " " + tail;
      tail = named("arr-t", j <= min ? t : "(" + t + ")?");
    }
    std::string body;
    if (max != 0)
      body = (k >= 1 ? prefix[0] : item) + " " + tail;
    std::string inner = body.empty() ? "" : (min >= 1 ? body : "(" + body + ")?");
    return named("array", "\"[\" " + prim("space") + " " + inner + " \"]\" " + prim("space"));
  }

  Result<std::string> visit_string(const json::object &o, const std::string &ptr) {
    GANTRY_ASSIGN_OR_RETURN(int64_t min, count(o, "minLength", ptr));
    GANTRY_ASSIGN_OR_RETURN(int64_t max, count(o, "maxLength", ptr));
    const json::value *pattern = o.if_contains("pattern");
    const json::value *format = o.if_contains("format");
    if ((pattern || format) && (min >= 0 || max >= 0))
      return unsupported("minLength/maxLength together with pattern or format", ptr);
    if (pattern && format)
      return unsupported("pattern together with format", ptr);
    const std::string q = "\"\\\"\"";
    if (pattern) {
      if (!pattern->is_string())
        return invalid("pattern must be a string", ptr);
      auto body = pattern_to_gbnf(pattern->as_string(), prim("char"));
      if (!body.ok())
        return unsupported(body.error().message, pointer_child(ptr, "pattern"));
      return named("pattern", q + " " + *body + " " + q + " " + prim("space"));
    }
    if (format) {
      if (!format->is_string())
        return invalid("format must be a string", ptr);
      const std::string f(format->as_string());
      auto body = format_to_gbnf(f);
      if (!body.ok())
        return unsupported("format '" + f + "'", ptr);
      return named("format-" + f, q + " " + *body + " " + q + " " + prim("space"));
    }
    if (min < 0 && max < 0)
      return prim("string");
    min = std::max<int64_t>(min, 0);
    if (max >= 0 && max < min)
      return invalid("maxLength is below minLength", ptr);
    if (min > 4096 || max > 4096)
      return unsupported("minLength/maxLength above 4096", ptr);
    return named("string", q + " " + prim("char") + "{" + std::to_string(min) + "," +
                               (max < 0 ? "" : std::to_string(max)) + "} " + q + " " +
                               prim("space"));
  }

  Result<std::string> visit_number(const json::object &o, const std::string &ptr, bool integer) {
    // Bounds as whole numbers: lo/hi inclusive, absent = unbounded.
    std::optional<int64_t> lo, hi;
    for (const char *key : {"minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"}) {
      const json::value *v = o.if_contains(key);
      if (!v)
        continue;
      if (!v->is_number())
        return invalid(std::string(key) + " must be a number", ptr);
      const double d = v->to_number<double>();
      const std::string_view k(key);
      const bool is_min = k == "minimum" || k == "exclusiveMinimum";
      const bool exclusive = k[0] == 'e';
      if (std::fabs(d) > 1e15)
        return unsupported(std::string(key) + " beyond 1e15", ptr);
      double bound;
      if (integer) {
        bound = is_min ? (exclusive ? std::floor(d) + 1 : std::ceil(d))
                       : (exclusive ? std::ceil(d) - 1 : std::floor(d));
      } else {
        if (exclusive || std::floor(d) != d)
          return unsupported(std::string(key) + " on a number (only inclusive whole bounds)", ptr);
        bound = d;
      }
      auto &slot = is_min ? lo : hi;
      const auto b = static_cast<int64_t>(bound);
      slot = slot ? (is_min ? std::max(*slot, b) : std::min(*slot, b)) : b;
    }
    if (!lo && !hi)
      return prim(integer ? "integer" : "number");
    if (lo && hi && *lo > *hi)
      return invalid("the minimum is above the maximum", ptr);
    if (integer) {
      std::vector<std::string> alts;
      if (!lo || *lo < 0) { // negative part: -(max(1,-hi) .. -lo)
        const int64_t from = hi && *hi < 0 ? -*hi : 1;
        alts.push_back("\"-\" " + uint_range_gbnf(from, lo ? -*lo : -1));
      }
      if (!hi || *hi >= 0)
        alts.push_back(uint_range_gbnf(lo ? std::max<int64_t>(*lo, 0) : 0, hi ? *hi : -1));
      std::string body;
      for (const auto &a : alts)
        body += (body.empty() ? "" : " | ") + a;
      return named("integer", "(" + body + ") " + prim("space"));
    }
    if (!lo || *lo < 0)
      return unsupported("a number without a minimum >= 0 alongside a maximum", ptr);
    const std::string frac = "(\".\" [0-9]{1," + std::to_string(kMaxDigits) + "})?";
    std::string body;
    if (hi && *hi == *lo)
      body = gbnf_literal(std::to_string(*lo)) + " (\".\" \"0\"{1," + std::to_string(kMaxDigits) +
             "})?";
    else
      body = uint_range_gbnf(*lo, hi ? *hi - 1 : -1) + " " + frac +
             (hi ? " | " + gbnf_literal(std::to_string(*hi)) : "");
    return named("number", "(" + body + ") " + prim("space"));
  }

  const json::value &root_;
  const std::string prefix_;
  std::vector<std::pair<std::string, std::string>> rules_;
  std::set<std::string> have_, taken_;
  std::map<std::string, int> next_suffix_; // fresh(): the last number given to each base
  std::map<std::string, std::string> ref_rules_;
  std::vector<std::unique_ptr<json::value>> merged_;
  size_t nodes_ = 0;
};

bool valid_prefix(std::string_view p) {
  return std::all_of(p.begin(), p.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_';
  });
}

} // namespace

Result<std::string> json_schema_to_gbnf(std::string_view schema_json,
                                        std::string_view rule_prefix) {
  if (!valid_prefix(rule_prefix))
    return Error::invalid("a grammar rule prefix may hold only letters, digits, '-' and '_'");
  if (schema_json.size() > 4 * engine::kMaxGrammarBytes)
    return Error::invalid("the JSON schema is too large");
  json::error_code ec;
  json::parse_options opts;
  opts.max_depth = 2 * kMaxSchemaDepth + 8;
  json::value schema = json::parse(schema_json, ec, {}, opts);
  if (ec)
    return Error::invalid("the JSON schema is not valid JSON (" + ec.message() + ")");
  return Compiler(schema, std::string(rule_prefix)).run();
}

std::string json_object_gbnf(std::string_view rule_prefix) {
  json::value any = json::object{{"type", "object"}};
  auto r = Compiler(any, std::string(rule_prefix)).run();
  return r.ok() ? *r : std::string();
}

Status check_json_schema(std::string_view schema_json) {
  auto gbnf = json_schema_to_gbnf(schema_json, "");
  if (!gbnf && gbnf.error().code != ErrorCode::kUnsupported)
    return Err(gbnf.take_error());
  return Ok();
}

Result<std::shared_ptr<const engine::Grammar>> compile_json_schema(std::string_view schema_json) {
  GANTRY_ASSIGN_OR_RETURN(std::string gbnf, json_schema_to_gbnf(schema_json, ""));
  return engine::compile_gbnf(gbnf);
}

} // namespace gantry::api
