#include "http/router.h"

#include <array>
#include <cassert>

namespace gantry::http {

namespace {

// Splits "/a/b/c" into its segments without allocating for typical depths. Returns false if
// the path has more segments than fit (no route is that deep).
constexpr std::size_t kMaxSegments = 16;
struct SplitPath {
  std::array<std::string_view, kMaxSegments> parts;
  std::size_t count = 0;
};

bool split(std::string_view path, SplitPath &out) {
  out.count = 0;
  std::size_t i = 0;
  while (i < path.size()) {
    if (path[i] == '/') {
      ++i;
      continue;
    }
    std::size_t end = path.find('/', i);
    if (end == std::string_view::npos)
      end = path.size();
    if (out.count == kMaxSegments)
      return false;
    out.parts[out.count++] = path.substr(i, end - i);
    i = end;
  }
  return true;
}

} // namespace

Router::Router() : render_(&error_response) {}

Router &Router::add(Method method, std::string_view pattern, Handler handler) {
  Route route{method, std::string(pattern), {}, std::move(handler)};
  SplitPath parts;
  // A pattern deeper than kMaxSegments could never match; that is a programming error.
  [[maybe_unused]] bool ok = split(pattern, parts);
  assert(ok && "route pattern too deep");
  for (std::size_t i = 0; i < parts.count; ++i) {
    std::string_view s = parts.parts[i];
    if (s.size() >= 2 && s.front() == '{' && s.back() == '}') {
      route.segments.push_back({std::string(s.substr(1, s.size() - 2)), true});
    } else {
      route.segments.push_back({std::string(s), false});
    }
  }
  routes_.push_back(std::move(route));
  return *this;
}

void Router::dispatch(Request &&req, std::shared_ptr<ResponseWriter> writer) const {
  SplitPath parts;
  bool path_matched = false;
  std::string allow;
  if (split(req.path, parts)) {
    for (const Route &route : routes_) {
      if (route.segments.size() != parts.count)
        continue;
      bool match = true;
      for (std::size_t i = 0; i < parts.count && match; ++i) {
        const Segment &seg = route.segments[i];
        match = seg.is_param ? !parts.parts[i].empty() : seg.text == parts.parts[i];
      }
      if (!match)
        continue;
      if (route.method != req.method) {
        path_matched = true;
        if (!allow.empty())
          allow += ", ";
        allow += to_string(route.method);
        continue;
      }
      for (std::size_t i = 0; i < parts.count; ++i) {
        if (route.segments[i].is_param) {
          req.path_params.emplace_back(route.segments[i].text, std::string(parts.parts[i]));
        }
      }
      route.handler(std::move(req), std::move(writer));
      return;
    }
  }
  std::string what = std::string(to_string(req.method)) + " " + req.path;
  if (path_matched) {
    Response r = status_error_response(405, "invalid_request_error", "method_not_allowed",
                                       "Method not allowed (" + what + ")");
    r.headers.push_back({"Allow", std::move(allow)});
    writer->respond(std::move(r));
    return;
  }
  writer->respond(render_(Error{ErrorCode::kNotFound, "Invalid URL (" + what + ")", {}}));
}

Handler Router::into_handler() && {
  auto shared = std::make_shared<const Router>(std::move(*this));
  return [shared](Request &&req, std::shared_ptr<ResponseWriter> writer) {
    shared->dispatch(std::move(req), std::move(writer));
  };
}

} // namespace gantry::http
