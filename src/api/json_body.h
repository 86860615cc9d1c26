// The prologue every JSON endpoint shares: parse the body and require an object, answering a body
// that is not JSON in the OpenAI API's own words (clients match on them).
#pragma once

#include <boost/json/object.hpp>
#include <boost/json/storage_ptr.hpp>

#include <string_view>

#include "core/result.h"

namespace gantry::api {

// The document's nodes come from `sp` (a caller that reads the document out and drops it can pass
// a monotonic resource: one allocation per node is most of a small request's parse).
Result<boost::json::object> parse_object_body(std::string_view body,
                                              boost::json::storage_ptr sp = {});

} // namespace gantry::api
