// The port's own helpers, shared by every JobQueue adapter.
#include "jobs/job_queue.h"

namespace gantry::jobs {
namespace {

constexpr const char *kStatusNames[] = {"queued", "running",  "succeeded",
                                        "failed", "canceled", "expired"};

} // namespace

std::string_view job_status_name(JobStatus s) { return kStatusNames[static_cast<int>(s)]; }

std::optional<JobStatus> parse_job_status(std::string_view s) {
  for (int i = 0; i < 6; ++i) {
    if (s == kStatusNames[i])
      return static_cast<JobStatus>(i);
  }
  return std::nullopt;
}

} // namespace gantry::jobs
