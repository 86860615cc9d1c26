// JSON Schema -> grammar: each feature accepts what the schema allows and refuses what it does
// not (checked by walking text through the compiled grammar); unsupported features are errors
// naming the keyword and where; and random walks over the real vocabularies always end in a
// document that parses and validates (validator below, for the supported subset).
#include "api/json_schema_grammar.h"

#include <boost/json.hpp>
#include <cmath>
#include <regex>

#include <gtest/gtest.h>

#include "engine/grammar/matcher.h"
#include "engine/grammar/walk.h"
#include "support/json_schema_check.h"

namespace gantry::api {
namespace {

namespace json = boost::json;
using engine::GrammarMatcher;
using engine::grammar_test::random_walk;
using engine::grammar_test::vocab;
using engine::grammar_test::vocab_names;
using testing::code_points;
using testing::validate;

std::shared_ptr<const engine::Grammar> compile(const std::string &schema) {
  auto g = compile_json_schema(schema);
  if (!g.ok())
    throw std::runtime_error(schema + ": " + g.error().message);
  return *g;
}

bool accepts(const std::shared_ptr<const engine::Grammar> &g, const std::string &text) {
  GrammarMatcher m(g, vocab("stories260K").trie);
  return m.accept_text(text) && m.accepting();
}

std::string error_of(const std::string &schema) {
  auto g = compile_json_schema(schema);
  if (g.ok())
    return "(compiled)";
  // Features outside the subset are kUnsupported, malformed schemas kInvalidArgument.
  EXPECT_EQ(g.error().code, g.error().message.starts_with("unsupported JSON schema feature")
                                ? ErrorCode::kUnsupported
                                : ErrorCode::kInvalidArgument)
      << g.error().message;
  EXPECT_EQ(g.error().param, "");
  return g.error().message;
}

TEST(JsonSchemaGrammar, ObjectsInListedOrder) {
  auto g = compile(R"({"type":"object","properties":{"a":{"type":"integer"},"b":{"type":"string"},
                       "c":{"type":"boolean"}},"required":["a","c"],"additionalProperties":false})");
  EXPECT_TRUE(accepts(g, R"({"a": 1, "c": true})"));
  EXPECT_TRUE(accepts(g, R"({"a":-12,"b":"x","c":false})"));
  EXPECT_TRUE(accepts(g, "{\n  \"a\": 0,\n  \"c\": true\n}"));
  EXPECT_FALSE(accepts(g, R"({"c": true, "a": 1})")); // order as listed
  EXPECT_FALSE(accepts(g, R"({"a": 1})"));            // c is required
  EXPECT_FALSE(accepts(g, R"({"a": 1, "c": true, "d": 1})"));
  EXPECT_FALSE(accepts(g, R"({"a": 1.5, "c": true})"));
  EXPECT_FALSE(accepts(g, R"({"a": 01, "c": true})"));
  auto none = compile(R"({"type":"object","properties":{"x":{"type":"null"}}})");
  EXPECT_TRUE(accepts(none, "{}"));
  EXPECT_TRUE(accepts(none, R"({"x": null})"));
  EXPECT_FALSE(accepts(none, R"({"y": null})")); // absent additionalProperties: closed
}

TEST(JsonSchemaGrammar, AdditionalProperties) {
  auto open = compile(R"({"type":"object","properties":{"id":{"type":"integer"}},
                          "required":["id"],"additionalProperties":{"type":"string"}})");
  EXPECT_TRUE(accepts(open, R"({"id": 1, "name": "x", "i": "y", "idd": "z"})"));
  EXPECT_FALSE(accepts(open, R"({"id": 1, "id": "x"})")); // a listed key cannot come again
  EXPECT_FALSE(accepts(open, R"({"id": 1, "n": 2})"));
  auto any = compile(R"({"type":"object"})");
  EXPECT_TRUE(accepts(any, R"({"k": [1, {"z": null}], "e": "\u00e9\n"})"));
  EXPECT_FALSE(accepts(any, "[]"));
  EXPECT_FALSE(accepts(any, R"({"k": "\ud800"})")); // a lone surrogate is no character
  auto json_object = engine::compile_gbnf("root ::= x-root\n" + json_object_gbnf("x-"));
  ASSERT_TRUE(json_object.ok());
  EXPECT_TRUE(accepts(*json_object, R"({"a": {"b": [true, false, null, -1.5e3]}})"));
}

TEST(JsonSchemaGrammar, Arrays) {
  auto g = compile(R"({"type":"array","items":{"type":"integer"},"minItems":2,"maxItems":3})");
  EXPECT_FALSE(accepts(g, "[1]"));
  EXPECT_TRUE(accepts(g, "[1, 2]"));
  EXPECT_TRUE(accepts(g, "[1,2,3]"));
  EXPECT_FALSE(accepts(g, "[1,2,3,4]"));
  auto empty = compile(R"({"type":"array","items":{"type":"string"}})");
  EXPECT_TRUE(accepts(empty, "[]"));
  EXPECT_TRUE(accepts(empty, R"(["a", "b"])"));
  auto tuple = compile(R"({"type":"array","prefixItems":[{"type":"string"},{"type":"number"}],
                           "items":false,"minItems":1})");
  EXPECT_TRUE(accepts(tuple, R"(["a"])"));
  EXPECT_TRUE(accepts(tuple, R"(["a", 2.5])"));
  EXPECT_FALSE(accepts(tuple, R"(["a", 2.5, 3])"));
  EXPECT_FALSE(accepts(tuple, "[]"));
  EXPECT_FALSE(accepts(tuple, "[2.5]"));
}

TEST(JsonSchemaGrammar, ScalarsEnumsConsts) {
  auto e = compile(R"({"enum":["red","green",3,null]})");
  for (const char *ok : {"\"red\"", "\"green\"", "3", "null"})
    EXPECT_TRUE(accepts(e, ok)) << ok;
  EXPECT_FALSE(accepts(e, "\"blue\""));
  auto typed = compile(R"({"type":"string","enum":["a",1]})");
  EXPECT_TRUE(accepts(typed, "\"a\""));
  EXPECT_FALSE(accepts(typed, "1"));
  auto c = compile(R"({"const":{"k":[1,"x\"y"]}})");
  EXPECT_TRUE(accepts(c, R"({"k":[1,"x\"y"]})"));
  auto types = compile(R"({"type":["string","null"]})");
  EXPECT_TRUE(accepts(types, "null"));
  EXPECT_TRUE(accepts(types, "\"s\""));
  EXPECT_FALSE(accepts(types, "1"));
  auto s = compile(R"({"type":"string","minLength":2,"maxLength":3})");
  EXPECT_FALSE(accepts(s, "\"a\""));
  EXPECT_TRUE(accepts(s, "\"ab\""));
  EXPECT_TRUE(accepts(s, "\"\\n\\u00e9\""));
  EXPECT_FALSE(accepts(s, "\"abcd\""));
  // A bounded string's rule first, the shared string rule after: names must not collide.
  auto both = compile(R"({"type":"object","properties":{"a":{"type":"string","maxLength":3},
                          "b":{"type":"string"}},"required":["a","b"]})");
  EXPECT_TRUE(accepts(both, R"({"a": "xyz", "b": "longer than three"})"));
  EXPECT_FALSE(accepts(both, R"({"a": "wxyz", "b": ""})"));
}

TEST(JsonSchemaGrammar, NumberBounds) {
  auto i = compile(R"({"type":"integer","minimum":-15,"maximum":120})");
  for (int v = -30; v <= 300; ++v)
    EXPECT_EQ(accepts(i, std::to_string(v)), v >= -15 && v <= 120) << v;
  auto ex = compile(R"({"type":"integer","exclusiveMinimum":0})");
  EXPECT_FALSE(accepts(ex, "0"));
  EXPECT_TRUE(accepts(ex, "1"));
  EXPECT_TRUE(accepts(ex, "98765"));
  EXPECT_FALSE(accepts(ex, "-3"));
  auto neg = compile(R"({"type":"integer","maximum":-7})");
  EXPECT_TRUE(accepts(neg, "-7"));
  EXPECT_TRUE(accepts(neg, "-1000"));
  EXPECT_FALSE(accepts(neg, "-6"));
  EXPECT_FALSE(accepts(neg, "0"));
  auto n = compile(R"({"type":"number","minimum":0,"maximum":1})");
  EXPECT_TRUE(accepts(n, "0.25"));
  EXPECT_TRUE(accepts(n, "1"));
  EXPECT_TRUE(accepts(n, "0"));
  EXPECT_FALSE(accepts(n, "1.5"));
  EXPECT_FALSE(accepts(n, "-0.5"));
  EXPECT_NE(error_of(R"({"type":"number","minimum":0.5})").find("minimum on a number"),
            std::string::npos);
}

TEST(JsonSchemaGrammar, CombinatorsAndRefs) {
  auto any = compile(
      R"({"anyOf":[{"type":"integer"},{"type":"object","properties":{"x":{"type":"string"}},"required":["x"]}]})");
  EXPECT_TRUE(accepts(any, "5"));
  EXPECT_TRUE(accepts(any, R"({"x":"y"})"));
  EXPECT_FALSE(accepts(any, "\"5\""));
  auto one = compile(R"({"oneOf":[{"type":"string"},{"type":"boolean"}]})");
  EXPECT_TRUE(accepts(one, "true"));
  EXPECT_NE(error_of(R"({"oneOf":[{"type":"number"},{"type":"integer"}]})").find("oneOf"),
            std::string::npos);
  auto rec = compile(R"({"$ref":"#/$defs/node","$defs":{"node":{"type":"object",
      "properties":{"v":{"type":"integer"},"kids":{"type":"array","items":{"$ref":"#/$defs/node"}}},
      "required":["v"]}}})");
  EXPECT_TRUE(accepts(rec, R"({"v":1,"kids":[{"v":2},{"v":3,"kids":[{"v":4,"kids":[]}]}]})"));
  EXPECT_FALSE(accepts(rec, R"({"v":1,"kids":[{"w":2}]})"));
  auto self = compile(
      R"({"type":"object","properties":{"next":{"anyOf":[{"$ref":"#"},{"type":"null"}]}},"required":["next"]})");
  EXPECT_TRUE(accepts(self, R"({"next":{"next":null}})"));
  auto defs = compile(
      R"({"definitions":{"a":{"type":"integer"}},"type":"array","items":{"$ref":"#/definitions/a"}})");
  EXPECT_TRUE(accepts(defs, "[1,2]"));
  auto all =
      compile(R"({"allOf":[{"type":"object","properties":{"a":{"type":"integer"}},"required":["a"]},
                                  {"properties":{"b":{"type":"string"}}}]})");
  EXPECT_TRUE(accepts(all, R"({"a":1,"b":"x"})"));
  EXPECT_TRUE(accepts(all, R"({"a":1})"));
  EXPECT_FALSE(accepts(all, R"({"b":"x"})"));
}

TEST(JsonSchemaGrammar, PatternsAndFormats) {
  auto p = compile(R"({"type":"string","pattern":"^[A-Z]{2}-\\d{3,4}(x|yz)?$"})");
  EXPECT_TRUE(accepts(p, "\"AB-123\""));
  EXPECT_TRUE(accepts(p, "\"AB-1234yz\""));
  EXPECT_FALSE(accepts(p, "\"AB-12\""));
  EXPECT_FALSE(accepts(p, "\"ab-123\""));
  auto unanchored = compile(R"({"type":"string","pattern":"o\\.k"})");
  EXPECT_TRUE(accepts(unanchored, "\"yes o.k then\""));
  EXPECT_FALSE(accepts(unanchored, "\"ok\""));
  auto quote = compile(R"({"type":"string","pattern":"^a\"b\\\\c$"})");
  EXPECT_TRUE(accepts(quote, R"("a\"b\\c")"));
  auto date = compile(R"({"type":"string","format":"date"})");
  EXPECT_TRUE(accepts(date, "\"2024-02-28\""));
  EXPECT_FALSE(accepts(date, "\"2024-02-30\""));
  EXPECT_FALSE(accepts(date, "\"2024-13-01\""));
  auto dt = compile(R"({"type":"string","format":"date-time"})");
  EXPECT_TRUE(accepts(dt, "\"2024-05-06T07:08:09Z\""));
  EXPECT_TRUE(accepts(dt, "\"2024-05-06T07:08:09.5+02:00\""));
  auto uuid = compile(R"({"type":"string","format":"uuid"})");
  EXPECT_TRUE(accepts(uuid, "\"123e4567-e89b-12d3-a456-426614174000\""));
  auto email = compile(R"({"type":"string","format":"email"})");
  EXPECT_TRUE(accepts(email, "\"a.b+c@example.co.uk\""));
  EXPECT_FALSE(accepts(email, "\"a@b\""));
}

TEST(JsonSchemaGrammar, UnsupportedFeaturesAreNamed) {
  EXPECT_EQ(error_of(R"({"type":"object","properties":{"x":{"type":"integer","multipleOf":3}}})"),
            "unsupported JSON schema feature: keyword 'multipleOf' at #/properties/x");
  EXPECT_EQ(error_of(R"({"type":"array","uniqueItems":true})"),
            "unsupported JSON schema feature: uniqueItems at #");
  EXPECT_EQ(error_of(R"({"type":"string","format":"hostname"})"),
            "unsupported JSON schema feature: format 'hostname' at #");
  EXPECT_EQ(error_of(R"({"type":"string","pattern":"^(?=a)b$"})"),
            "unsupported JSON schema feature: pattern group kind (?= (lookaround and named groups) "
            "at offset 2 at #/pattern");
  EXPECT_EQ(error_of(R"({"type":"string","pattern":"(a)\\1"})"),
            "unsupported JSON schema feature: pattern backreference at offset 5 at #/pattern");
  EXPECT_EQ(error_of(R"({"$ref":"http://example.com/s.json"})"),
            "unsupported JSON schema feature: $ref 'http://example.com/s.json' (only local refs "
            "\"#...\") at #");
  EXPECT_EQ(error_of(R"({"$ref":"#/$defs/missing"})"),
            "invalid JSON schema at #: $ref '#/$defs/missing' points nowhere");
  EXPECT_EQ(error_of(R"({"type":"integer","$ref":"#"})"),
            "unsupported JSON schema feature: keyword 'type' alongside '$ref' at #");
  EXPECT_EQ(error_of(R"({"type":"strin"})"), "invalid JSON schema at #: unknown type 'strin'");
  EXPECT_EQ(error_of("{"), "the JSON schema is not valid JSON (incomplete JSON)");
  EXPECT_EQ(error_of(R"({"not":{}})"), "unsupported JSON schema feature: keyword 'not' at #");
}

TEST(JsonSchemaGrammar, CheckRefusesMalformedSchemasOnly) {
  EXPECT_TRUE(check_json_schema(R"({"type":"object","properties":{"a":{"type":"integer"}}})").ok());
  // Unsupported, but a schema: fine where it is not enforced.
  EXPECT_TRUE(check_json_schema(R"({"type":"integer","multipleOf":3})").ok());
  EXPECT_TRUE(check_json_schema(R"({"type":"string","format":"uri"})").ok());
  for (const char *bad : {R"({"type":"strin"})", R"({"properties":[1]})", R"({"required":"a"})",
                          R"({"$ref":"#/$defs/missing"})", R"({"minItems":-1})", "{", "[]"}) {
    auto st = check_json_schema(bad);
    ASSERT_FALSE(st.ok()) << bad;
    EXPECT_EQ(st.error().code, ErrorCode::kInvalidArgument) << bad;
  }
  std::string wide = R"({"type":"object","properties":{)";
  for (int i = 0; i < 5000; ++i)
    wide += (i ? "," : "") + std::string("\"p") + std::to_string(i) + R"(":{"type":"string"})";
  wide += "}}";
  EXPECT_FALSE(check_json_schema(wide).ok()) << "bounded even where not enforced";
}

TEST(JsonSchemaGrammar, BoundedSize) {
  std::string deep = "{}";
  for (int i = 0; i < kMaxSchemaDepth + 2; ++i)
    deep = R"({"type":"array","items":)" + deep + "}";
  EXPECT_NE(error_of(deep).find("nests more than"), std::string::npos);
  std::string wide = R"({"type":"object","properties":{)";
  for (int i = 0; i < 5000; ++i)
    wide += (i ? "," : "") + std::string("\"p") + std::to_string(i) + R"(":{"type":"string"})";
  wide += "}}";
  EXPECT_NE(error_of(wide).find("too large"), std::string::npos);
}

TEST(JsonSchemaGrammar, PrefixComposes) {
  auto args = json_schema_to_gbnf(R"({"type":"object","properties":{"city":{"type":"string"}},
                                      "required":["city"]})",
                                  "args-");
  ASSERT_TRUE(args.ok()) << args.error().message;
  const std::string gbnf = "root ::= \"<tool_call>\\n{\\\"name\\\": \\\"get_weather\\\", "
                           "\\\"arguments\\\": \" args-root \"}\\n</tool_call>\"\n" +
                           *args;
  auto g = engine::compile_gbnf(gbnf);
  ASSERT_TRUE(g.ok()) << g.error().message << "\n" << gbnf;
  EXPECT_TRUE(accepts(*g, "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": "
                          "{\"city\": \"Paris\"}}\n</tool_call>"));
  EXPECT_FALSE(json_schema_to_gbnf("{}", "bad prefix").ok());
}

const char *kWalkSchemas[] = {
    // nested objects
    R"({"type":"object","properties":{"name":{"type":"string","maxLength":12},
        "age":{"type":"integer","minimum":0,"maximum":150},
        "address":{"type":"object","properties":{"city":{"type":"string","maxLength":10},
        "zip":{"type":"string","pattern":"^[0-9]{5}$"}},"required":["city","zip"],
        "additionalProperties":false}},"required":["name","age","address"],
        "additionalProperties":false})",
    // arrays with bounds, enums
    R"({"type":"object","properties":{"tags":{"type":"array","items":{"enum":["a","b","c"]},
        "minItems":1,"maxItems":4},"scores":{"type":"array","items":{"type":"number",
        "minimum":0,"maximum":10},"maxItems":3}},"required":["tags","scores"]})",
    // anyOf
    R"({"type":"array","items":{"anyOf":[{"type":"integer","minimum":-5,"maximum":5},
        {"type":"boolean"},{"type":"null"},{"type":"string","maxLength":4}]},"maxItems":5})",
    // $ref recursion
    R"({"$ref":"#/$defs/node","$defs":{"node":{"type":"object","properties":{
        "v":{"type":"integer","minimum":0,"maximum":9},"kids":{"type":"array","maxItems":2,
        "items":{"$ref":"#/$defs/node"}}},"required":["v"],"additionalProperties":false}}})",
    // patterns and formats
    R"({"type":"object","properties":{"code":{"type":"string","pattern":"^[A-Z]{3}-\\d{2}$"},
        "when":{"type":"string","format":"date"},"id":{"type":"string","format":"uuid"},
        "kind":{"const":"x"}},"required":["code","when","id","kind"]})",
};

TEST(JsonSchemaGrammar, RandomWalksValidate) {
  for (const auto &name : vocab_names()) {
    const auto &v = vocab(name);
    for (const char *schema_text : kWalkSchemas) {
      const json::value schema = json::parse(schema_text);
      GrammarMatcher proto(compile(schema_text), v.trie);
      int ended = 0;
      for (uint64_t seed = 1; seed <= 25; ++seed) {
        auto r = random_walk(proto, v, seed * 7919, 500, seed == 1 ? 3 : 0);
        if (!r.ended)
          continue;
        ++ended;
        json::error_code ec;
        const json::value doc = json::parse(r.text, ec);
        ASSERT_FALSE(ec) << name << ": " << r.text;
        EXPECT_EQ(validate(doc, schema, schema), "") << name << ": " << r.text;
      }
      EXPECT_GE(ended, 20) << name << " " << schema_text;
    }
  }
}

} // namespace
} // namespace gantry::api
