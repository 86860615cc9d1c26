// Typed readers for one JSON field of a request body, each failing with an invalid-argument
// Error whose `param` names the field (the JSON helpers of the Responses and Anthropic Messages
// parsers; the shape of openai.cpp's own, which the chat parser keeps for now).
#pragma once

#include <boost/json/value.hpp>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "core/result.h"

namespace gantry::api::fields {

inline Error bad(std::string message, std::string param) {
  return Error{ErrorCode::kInvalidArgument, std::move(message), std::move(param)};
}

Result<double> number(const boost::json::value &v, const std::string &name);
// A whole number (a whole double inside int64's range included; 1e300 is an error, not UB).
Result<int64_t> integer(const boost::json::value &v, const std::string &name);
Result<bool> boolean(const boost::json::value &v, const std::string &name);
Result<std::string> string(const boost::json::value &v, const std::string &name);
// A number in [lo, hi].
Result<float> ranged(const boost::json::value &v, const std::string &name, double lo, double hi);
// The object a field must be (its JSON null counts as absent for callers that skip nulls).
Result<const boost::json::object *> object(const boost::json::value &v, const std::string &name);
Result<const boost::json::array *> array(const boost::json::value &v, const std::string &name);
// A JSON Schema given as an object: its compact JSON text.
Result<std::string> schema_text(const boost::json::value &v, const std::string &name);
// A tool's input schema: schema_text, and an error when it is malformed (check_json_schema),
// even where nothing enforces it, as OpenAI's and Anthropic's APIs reject it too.
Result<std::string> tool_schema_text(const boost::json::value &v, const std::string &name);
// i when `param` is "tools[i].function.parameters", the chat API's name for a tool's schema,
// which errors of the shared inference path (a forced call's grammar) use.
std::optional<size_t> chat_tool_schema_index(std::string_view param);

} // namespace gantry::api::fields
