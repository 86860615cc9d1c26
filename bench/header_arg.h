// The load generators' `--header 'Name: value'` argument (fixed_rate, stream_load).
#pragma once

#include <optional>
#include <string>

#include "http/request.h"

namespace gantry::bench {

// "Name: value" → {Name, value}, spaces after the colon dropped; nullopt without a colon.
inline std::optional<http::Header> header_arg(const std::string &arg) {
  const auto colon = arg.find(':');
  if (colon == std::string::npos)
    return std::nullopt;
  const auto value = arg.find_first_not_of(' ', colon + 1);
  return http::Header{arg.substr(0, colon),
                      value == std::string::npos ? std::string() : arg.substr(value)};
}

} // namespace gantry::bench
