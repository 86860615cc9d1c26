#include "core/thread_guard.h"

#include <cstdio>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace gantry {
namespace {

struct Reporters {
  std::mutex mu;
  std::uint64_t next_id = 0;
  std::vector<std::pair<std::uint64_t, FailureReporter>> live; // oldest first
};

Reporters &reporters() {
  static Reporters r;
  return r;
}

} // namespace

ScopedFailureReporter::ScopedFailureReporter(FailureReporter reporter) {
  auto &r = reporters();
  std::lock_guard lk(r.mu);
  id_ = ++r.next_id;
  r.live.emplace_back(id_, std::move(reporter));
}

ScopedFailureReporter::~ScopedFailureReporter() {
  auto &r = reporters();
  std::lock_guard lk(r.mu);
  std::erase_if(r.live, [&](const auto &e) { return e.first == id_; });
}

void report_failure(std::string_view site, const std::exception &error) noexcept {
  try {
    auto &r = reporters();
    std::lock_guard lk(r.mu);
    if (!r.live.empty() && r.live.back().second) {
      r.live.back().second(site, error);
      return;
    }
  } catch (...) {
    // A reporter that fails (say, out of memory) must not turn a recorded failure into a
    // terminate; fall through to stderr.
  }
  const std::string s(site);
  std::fprintf(stderr, "gantry: unexpected exception in %s: %s\n", s.c_str(), error.what());
}

void report_unknown_failure(std::string_view site) noexcept {
  try {
    report_failure(site, std::runtime_error("an exception that is not a std::exception"));
  } catch (...) {
    std::fputs("gantry: unexpected exception of an unknown type\n", stderr);
  }
}

} // namespace gantry
