#include "core/time_format.h"

#include <chrono>
#include <ctime>

namespace gantry {

std::string format_utc(int64_t unix_seconds, const char *format) {
  const auto t = static_cast<std::time_t>(unix_seconds);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[128];
  const size_t n = std::strftime(buf, sizeof buf, format, &tm);
  return std::string(buf, n);
}

int64_t utc_month_start(int64_t unix_seconds) {
  // <chrono>'s civil calendar is arithmetic: gmtime_r + timegm took ≈ 2,000 instructions (the
  // time zone lock and mktime's search), and budgets ask for it twice per request.
  using namespace std::chrono;
  const year_month_day day{floor<days>(sys_seconds{seconds{unix_seconds}})};
  const sys_days first{day.year() / day.month() / 1};
  return duration_cast<seconds>(first.time_since_epoch()).count();
}

} // namespace gantry
