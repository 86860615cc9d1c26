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
  Response r = render(http_status(error.code), openai_error_type(error.code),
                      error_code_name(error.code), error.message, error.param);
  // The one retry policy on the wire: every retryable refusal says when to come back, in
  // seconds for standard clients and in milliseconds for ours.
  const bool retryable = error.code == ErrorCode::kQueueFull ||
                         error.code == ErrorCode::kRateLimited ||
                         error.code == ErrorCode::kCircuitOpen;
  if (retryable || error.retry_after_ms > 0) {
    const int64_t ms = error.retry_after_ms > 0 ? error.retry_after_ms : 1000;
    r.headers.push_back({"Retry-After", std::to_string((ms + 999) / 1000)});
    r.headers.push_back({"retry-after-ms", std::to_string(ms)});
  }
  return r;
}

Response status_error_response(int status, std::string_view type, std::string_view code,
                               std::string_view message) {
  return render(status, type, code, message, {});
}

} // namespace gantry::http
