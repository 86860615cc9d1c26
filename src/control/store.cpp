#include "control/store.h"

#include <charconv>

namespace gantry::control {

std::string_view to_string(OwnerKind kind) {
  switch (kind) {
  case OwnerKind::kKey: return "key";
  case OwnerKind::kProject: return "project";
  }
  return "project";
}

std::optional<OwnerKind> owner_kind_from(std::string_view s) {
  if (s == "key")
    return OwnerKind::kKey;
  if (s == "project")
    return OwnerKind::kProject;
  return std::nullopt;
}

std::string_view to_string(Period period) {
  switch (period) {
  case Period::kDay: return "day";
  case Period::kMonth: return "month";
  }
  return "month";
}

std::optional<Period> period_from(std::string_view s) {
  if (s == "day")
    return Period::kDay;
  if (s == "month")
    return Period::kMonth;
  return std::nullopt;
}

Status check_models(const std::vector<std::string> &models) {
  for (const auto &m : models) {
    if (m.empty())
      return Error::invalid("an allowed model name is empty", "models");
    for (unsigned char c : m) {
      if (c < 0x20)
        return Error::invalid("model name has a control character", "models");
    }
  }
  return Ok();
}

std::string join_list(const std::vector<std::string> &items, char sep) {
  std::string out;
  for (const auto &item : items) {
    if (!out.empty())
      out += sep;
    out += item;
  }
  return out;
}

std::vector<std::string> split_list(std::string_view text, char sep) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find(sep, start);
    if (end == std::string_view::npos)
      end = text.size();
    if (end > start)
      out.emplace_back(text.substr(start, end - start));
    start = end + 1;
  }
  return out;
}

std::string thresholds_text(const std::vector<int> &t) {
  std::string out;
  for (int v : t)
    out += (out.empty() ? "" : ",") + std::to_string(v);
  return out;
}

Result<std::vector<int>> parse_thresholds(const std::string &s) {
  std::vector<int> out;
  const char *p = s.data();
  const char *end = s.data() + s.size();
  while (p < end) {
    int v = 0;
    auto [next, ec] = std::from_chars(p, end, v);
    if (ec != std::errc() || (next != end && *next != ',')) {
      return Error::corrupt("database: bad alert_thresholds '" + s + "'");
    }
    out.push_back(v);
    p = next == end ? end : next + 1;
  }
  return out;
}

} // namespace gantry::control
