// UTC calendar time as text, in one place: gmtime_r + strftime stood in nine files, each with its
// own buffer size. `format` is strftime's; the result is at most 127 bytes.
#pragma once

#include <cstdint>
#include <string>

namespace gantry {

std::string format_utc(int64_t unix_seconds, const char *format);

// The first second of the UTC calendar month that holds `unix_seconds`.
int64_t utc_month_start(int64_t unix_seconds);

} // namespace gantry
