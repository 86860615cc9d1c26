// JSON Schema string `pattern` and `format`, and integer ranges, as GBNF (for
// json_schema_grammar.cpp). The pattern GBNF covers the characters between a string's quotes; the
// subset: ^ and $ at the ends (without them the match may start or end anywhere, as JSON Schema
// says), literals, escapes (\d \w \s \D \W \S, \. \uXXXX, ...), classes with ranges and ^, `.`,
// groups ( ) and (?: ), |, and
// * + ? {m} {m,} {m,n} (lazy forms match the same strings). Lookaround, backreferences, word
// boundaries and anchors elsewhere are errors naming the feature.
//
// Generated strings never need JSON escapes except where the pattern spells out a quote,
// backslash or control character: classes and `.` leave out '"', '\' and control characters
// (every such string still matches).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "core/result.h"

namespace gantry::api {

// A GBNF literal for raw text: "..." with escapes; UTF-8 passes through.
std::string gbnf_literal(std::string_view text);

// `any_char` names the GBNF rule for one JSON string character (escapes included), used where
// the pattern is not anchored. Errors carry a message naming the unsupported feature.
Result<std::string> pattern_to_gbnf(std::string_view pattern, const std::string &any_char);

// Non-negative decimal integers in [lo, hi] without leading zeros, as a GBNF group; hi < 0
// means no upper bound (up to kMaxRangeDigits digits).
inline constexpr int kMaxRangeDigits = 16;
std::string uint_range_gbnf(int64_t lo, int64_t hi);

// date, time, date-time, uuid, email; others are an error.
Result<std::string> format_to_gbnf(std::string_view format);

} // namespace gantry::api
