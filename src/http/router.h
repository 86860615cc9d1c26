// Maps method + path pattern to a Handler; answers 404/405 itself with OpenAI-shaped errors.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "http/request.h"
#include "http/response.h"
#include "http/response_writer.h"

namespace gantry::http {

// Built on the main thread before the server starts, then read-only and shared by all I/O
// threads (dispatch is const and takes no locks).
class Router {
public:
  Router();

  // `pattern` is a path of literal segments and "{name}" parameter segments, e.g.
  // "/v1/jobs/{id}" or "/v1/files/{id}/content". A parameter matches one non-empty segment.
  // Routes are tried in the order added; the first match wins.
  Router &add(Method method, std::string_view pattern, Handler handler);
  Router &get(std::string_view pattern, Handler h) {
    return add(Method::kGet, pattern, std::move(h));
  }
  Router &post(std::string_view pattern, Handler h) {
    return add(Method::kPost, pattern, std::move(h));
  }
  Router &del(std::string_view pattern, Handler h) {
    return add(Method::kDelete, pattern, std::move(h));
  }

  // Overrides how 404/405 bodies are rendered (default: error_response).
  void set_error_renderer(ErrorRenderer renderer) { render_ = std::move(renderer); }

  // Fills req.path_params and calls the matching handler, or answers 404 (no pattern matches
  // the path) / 405 with an Allow header (the path matches, the method does not).
  void dispatch(Request &&req, std::shared_ptr<ResponseWriter> writer) const;

  // Moves the router into a Handler for HttpServer.
  Handler into_handler() &&;

private:
  struct Segment {
    std::string text;
    bool is_param = false;
  };
  struct Route {
    Method method;
    std::string pattern;
    std::vector<Segment> segments;
    Handler handler;
  };
  std::vector<Route> routes_;
  ErrorRenderer render_;
};

} // namespace gantry::http
