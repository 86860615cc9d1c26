// A complete (non-streaming) response and the JSON error bodies the HTTP layer produces itself.
#pragma once

#include <functional>
#include <string>
#include <string_view>

#include "core/result.h"
#include "http/request.h"

namespace gantry::http {

// Plain value; owned by whoever builds it, moved into ResponseWriter::respond.
struct Response {
  int status = 200;
  std::string content_type = "application/json";
  Headers headers; // extra headers; Content-Length, Connection and x-request-id are set by us
  std::string body;

  static Response json(int status, std::string body) {
    return Response{status, "application/json", {}, std::move(body)};
  }
  static Response text(int status, std::string body) {
    return Response{status, "text/plain; charset=utf-8", {}, std::move(body)};
  }
};

// {"error":{"message":...,"type":...,"param":...|null,"code":...}} with the status, type and
// code that core/result.h assigns to `error.code`. This is the shape OpenAI clients parse, and
// the HTTP layer needs it for the errors it raises on its own (404, 405, 413, ...).
Response error_response(const Error &error);
// Same shape with an explicit status, type and code, for statuses without an ErrorCode (405).
Response status_error_response(int status, std::string_view type, std::string_view code,
                               std::string_view message);

// Renders the errors the HTTP layer raises itself; the composition root may swap it.
using ErrorRenderer = std::function<Response(const Error &)>;

} // namespace gantry::http
