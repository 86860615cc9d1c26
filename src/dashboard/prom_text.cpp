#include "dashboard/prom_text.h"

#include <charconv>
#include <cmath>
#include <cstdlib>
#include <limits>

namespace gantry::dashboard {

std::string_view PromSample::label(std::string_view key) const {
  for (const auto &[k, v] : labels)
    if (k == key)
      return v;
  return {};
}

namespace {

bool parse_value(std::string_view s, double &out) {
  if (s == "+Inf" || s == "Inf") {
    out = std::numeric_limits<double>::infinity();
    return true;
  }
  if (s == "-Inf") {
    out = -std::numeric_limits<double>::infinity();
    return true;
  }
  if (s == "NaN") {
    out = std::nan("");
    return true;
  }
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && p == s.data() + s.size();
}

// Parses `{k="v",...}` starting at line[i] == '{'; leaves i after the '}'.
bool parse_labels(std::string_view line, size_t &i, PromSample &s) {
  ++i;
  while (i < line.size() && line[i] != '}') {
    const size_t eq = line.find('=', i);
    if (eq == std::string_view::npos || eq + 1 >= line.size() || line[eq + 1] != '"')
      return false;
    std::string key(line.substr(i, eq - i));
    std::string value;
    size_t j = eq + 2;
    for (; j < line.size() && line[j] != '"'; ++j) {
      if (line[j] == '\\' && j + 1 < line.size()) {
        ++j;
        value.push_back(line[j] == 'n' ? '\n' : line[j]);
      } else {
        value.push_back(line[j]);
      }
    }
    if (j >= line.size())
      return false;
    s.labels.emplace_back(std::move(key), std::move(value));
    i = j + 1;
    if (i < line.size() && line[i] == ',')
      ++i;
  }
  if (i >= line.size())
    return false;
  ++i;
  return true;
}

} // namespace

std::vector<PromSample> parse_prom_text(std::string_view text) {
  std::vector<PromSample> out;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string_view::npos)
      end = text.size();
    std::string_view line = text.substr(pos, end - pos);
    pos = end + 1;
    if (line.empty() || line[0] == '#')
      continue;
    PromSample s;
    size_t i = 0;
    while (i < line.size() && line[i] != '{' && line[i] != ' ')
      ++i;
    s.name = std::string(line.substr(0, i));
    if (i < line.size() && line[i] == '{' && !parse_labels(line, i, s))
      continue;
    while (i < line.size() && line[i] == ' ')
      ++i;
    std::string_view value = line.substr(i);
    if (auto sp = value.find(' '); sp != std::string_view::npos)
      value = value.substr(0, sp); // an optional timestamp follows
    if (s.name.empty() || !parse_value(value, s.value))
      continue;
    out.push_back(std::move(s));
  }
  return out;
}

} // namespace gantry::dashboard
