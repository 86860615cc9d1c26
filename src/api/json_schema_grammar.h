// JSON Schema -> GBNF, for structured outputs and forced tool-call arguments. The output is GBNF
// text for engine::compile_gbnf (engine/grammar/grammar.h); it lives here, not in the engine,
// because reading a schema is reading JSON and the engine stays free of JSON and Boost.
//
// Supported (anything else is an error naming the keyword and its JSON pointer, never a
// silently unenforced schema):
//   type (a name or an array of names): object, array, string, number, integer, boolean, null
//   object: properties (emitted in the order listed), required, additionalProperties
//           (false / true / a schema; when absent: false if `properties` is given — every
//           document produced is still valid — and any properties otherwise)
//   array:  items, prefixItems, minItems, maxItems (uniqueItems: false)
//   string: minLength, maxLength, pattern (^ $ anchors at the ends, literals, escapes, classes,
//           \d \w \s, `.`, * + ? {m} {m,} {m,n}, groups, |), format date / time / date-time /
//           uuid / email
//   integer: minimum, maximum, exclusiveMinimum, exclusiveMaximum (any whole bounds)
//   number:  minimum / maximum when they are whole numbers and the minimum is >= 0
//   enum, const, anyOf, oneOf (when its branches cannot overlap: distinct types or
//   constants), allOf (one schema, or objects whose properties merge), $ref to "#",
//   "#/$defs/..." and "#/definitions/..." (recursion allowed)
//   ignored annotations: title, description, default, examples, $schema, $id, $comment,
//   deprecated, readOnly, writeOnly
// Strings the grammar produces never contain control characters or escapes other than those a
// pattern or constant spells out; numbers have at most 16 integer and 16 fraction digits.
// Whitespace between tokens is bounded (`space ::= | " " | "\n" [ \t]{0,20}`), so a model cannot
// loop on it.
//
// Bounds: the schema has at most kMaxSchemaNodes sub-schemas nested at most kMaxSchemaDepth
// deep, and the GBNF must fit engine::kMaxGrammarBytes.
//
// Errors name the feature and its place; `param` is left for the caller
// ("response_format.json_schema.schema", "tools[0].function.parameters", ...). A feature outside
// the subset above is kUnsupported, a malformed schema (a keyword of the wrong type, an unknown
// type, a $ref that points nowhere, too large) kInvalidArgument; both are 400s.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "core/result.h"
#include "engine/grammar/grammar.h"

namespace gantry::api {

inline constexpr size_t kMaxSchemaNodes = 4096;
inline constexpr int kMaxSchemaDepth = 48;

// GBNF rules for the schema; the start rule is `<rule_prefix>root` and every rule name starts
// with rule_prefix (letters, digits, '-'), so the text can be concatenated with other GBNF, e.g.
//   root ::= "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": " args-root "}\n</tool_call>"
// followed by json_schema_to_gbnf(parameters, "args-").
Result<std::string> json_schema_to_gbnf(std::string_view schema_json, std::string_view rule_prefix);

// Any JSON object (response_format json_object), start rule `<rule_prefix>root`.
std::string json_object_gbnf(std::string_view rule_prefix);

// An error only for a malformed schema (kInvalidArgument above), not for an unsupported feature:
// for a tool the model is not forced to call, whose schema is shown to the model but not
// enforced (as OpenAI accepts any valid schema there). Compilation stops at the first
// unsupported feature, so a malformation after it goes unseen until the schema is enforced.
Status check_json_schema(std::string_view schema_json);

// Convenience: json_schema_to_gbnf(schema, "") compiled.
Result<std::shared_ptr<const engine::Grammar>> compile_json_schema(std::string_view schema_json);

} // namespace gantry::api
