#include "http/response.h"

#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>

namespace gantry::http {

static Response render(int status, std::string_view type, std::string_view code,
                       std::string_view message, std::string_view param) {
  boost::json::object err;
  err["message"] = message;
  err["type"] = type;
  if (param.empty()) {
    err["param"] = nullptr;
  } else {
    err["param"] = param;
  }
  if (code.empty()) {
    err["code"] = nullptr;
  } else {
    err["code"] = code;
  }
  boost::json::object root;
  root["error"] = std::move(err);
  return Response::json(status, boost::json::serialize(root));
}

Response error_response(const Error &error) {
  return render(http_status(error.code), openai_error_type(error.code), error_code_name(error.code),
                error.message, error.param);
}

Response status_error_response(int status, std::string_view type, std::string_view code,
                               std::string_view message) {
  return render(status, type, code, message, {});
}

} // namespace gantry::http
