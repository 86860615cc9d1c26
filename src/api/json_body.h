// The prologue every JSON endpoint shares: parse the body and require an object, answering a body
// that is not JSON in the OpenAI API's own words (clients match on them).
#pragma once

#include <boost/json/object.hpp>

#include <string_view>

#include "core/result.h"

namespace gantry::api {

Result<boost::json::object> parse_object_body(std::string_view body);

} // namespace gantry::api
