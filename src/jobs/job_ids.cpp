#include "jobs/job_ids.h"

#include <algorithm>
#include <cstdio>

namespace gantry::jobs {

std::string JobIds::next(std::string_view prefix) {
  uint64_t v;
  {
    std::lock_guard<std::mutex> lk(mu_);
    last_ = std::max(last_ + 1, static_cast<uint64_t>(clock_.unix_millis()) << 12);
    v = last_;
  }
  char buf[24];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(v));
  return std::string(prefix) + buf;
}

} // namespace gantry::jobs
