// Ids for jobs, files and batches: prefix + 16 hex digits of (unix ms << 12 | counter), so they
// are unique, sort in creation order (the list APIs page by id) and keep increasing across
// restarts without reading the store.
//
// Threading: next() may be called from any thread.
#pragma once

#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>

#include "core/clock.h"

namespace gantry::jobs {

class JobIds {
public:
  explicit JobIds(const Clock &clock) : clock_(clock) {}
  std::string next(std::string_view prefix);

private:
  const Clock &clock_;
  std::mutex mu_;
  uint64_t last_ = 0;
};

} // namespace gantry::jobs
