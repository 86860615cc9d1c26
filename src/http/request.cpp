#include "http/request.h"

#include <strings.h>

namespace gantry::http {

std::string_view to_string(Method method) {
  switch (method) {
  case Method::kGet: return "GET";
  case Method::kHead: return "HEAD";
  case Method::kPost: return "POST";
  case Method::kPut: return "PUT";
  case Method::kDelete: return "DELETE";
  case Method::kPatch: return "PATCH";
  case Method::kOptions: return "OPTIONS";
  case Method::kOther: return "OTHER";
  }
  return "OTHER";
}

static bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && ::strncasecmp(a.data(), b.data(), a.size()) == 0;
}

std::optional<std::string_view> find_header(const Headers &headers, std::string_view name) {
  for (const Header &h : headers) {
    if (iequals(h.name, name))
      return std::string_view(h.value);
  }
  return std::nullopt;
}

std::optional<std::string_view> Request::query_param(std::string_view name) const {
  for (const auto &[k, v] : query) {
    if (k == name)
      return std::string_view(v);
  }
  return std::nullopt;
}

std::string_view Request::path_param(std::string_view name) const {
  for (const auto &[k, v] : path_params) {
    if (k == name)
      return v;
  }
  return {};
}

} // namespace gantry::http
