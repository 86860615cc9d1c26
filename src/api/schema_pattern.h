// JSON Schema string `pattern` and `format` as GBNF for the characters between a JSON string's
// quotes (used by json_schema_grammar.cpp). The pattern subset: ^ and $ at the ends (without
// them the match may start or end anywhere, as JSON Schema says), literals, escapes (\d \w \s
// \D \W \S, \. \uXXXX, ...), classes with ranges and ^, `.`, groups ( ) and (?: ), |, and
// * + ? {m} {m,} {m,n} (lazy forms match the same strings). Lookaround, backreferences, word
// boundaries and anchors elsewhere are errors naming the feature.
//
// Generated strings never need JSON escapes except where the pattern spells out a quote,
// backslash or control character: classes and `.` leave out '"', '\' and control characters
// (every such string still matches).
#pragma once

#include <string>
#include <string_view>

#include "core/result.h"

namespace gantry::api {

// A GBNF literal for raw text: "..." with escapes; UTF-8 passes through.
std::string gbnf_literal(std::string_view text);

// `any_char` names the GBNF rule for one JSON string character (escapes included), used where
// the pattern is not anchored. Errors carry a message naming the unsupported feature.
Result<std::string> pattern_to_gbnf(std::string_view pattern, const std::string &any_char);

// date, time, date-time, uuid, email; others are an error.
Result<std::string> format_to_gbnf(std::string_view format);

} // namespace gantry::api
