#include "api/json_body.h"

#include <boost/json.hpp>

namespace gantry::api {

Result<boost::json::object> parse_object_body(std::string_view body, boost::json::storage_ptr sp) {
  boost::json::error_code ec;
  boost::json::value doc = boost::json::parse(body, ec, std::move(sp));
  if (ec) {
    return Error{ErrorCode::kInvalidArgument,
                 "We could not parse the JSON body of your request (" + ec.message() +
                     "). The OpenAI API expects a JSON payload.",
                 ""};
  }
  if (!doc.is_object())
    return Error{ErrorCode::kInvalidArgument, "the request body must be a JSON object", ""};
  return std::move(doc.as_object());
}

} // namespace gantry::api
