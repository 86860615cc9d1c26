// The request body's "cache" field, a Gantry extension accepted by the completion, chat and
// embedding endpoints (README, "Caching"): `false` neither reads nor writes the cache;
// {"ttl": seconds} keeps this result that long instead of the server's default (0: do not store
// it). Reads are not limited by it.
#pragma once

#include <boost/json/fwd.hpp>

#include <cstdint>
#include <optional>

#include "core/result.h"

namespace gantry::api {

struct CacheOption {
  bool enabled = true;
  std::optional<int64_t> ttl_s;
};

inline constexpr int64_t kMaxCacheTtlS = 30 * 24 * 3600;

// Errors name "cache" or "cache.ttl" in `param`.
Result<CacheOption> parse_cache_option(const boost::json::value &v);

} // namespace gantry::api
