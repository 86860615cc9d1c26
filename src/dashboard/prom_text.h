// A reader of the Prometheus text exposition format, for the dashboard's sampler: it samples the
// very text /metrics serves, so the dashboard shows exactly what Prometheus would scrape and adds
// nothing to the request path (the registry is read once a second, off the I/O threads).
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace gantry::dashboard {

struct PromSample {
  std::string name; // with its "gantry:" prefix, and _bucket/_sum/_count suffixes as written
  std::vector<std::pair<std::string, std::string>> labels;
  double value = 0;

  // The value of label `key`, or "" when absent.
  std::string_view label(std::string_view key) const;
};

// Every sample line of `text`; comments, blank lines and lines that do not parse are skipped
// (the text is our own, so a skipped line is a bug upstream, not an input to reject).
std::vector<PromSample> parse_prom_text(std::string_view text);

} // namespace gantry::dashboard
