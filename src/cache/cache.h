// A byte-oriented key/value cache with per-entry time-to-live: the port that response and
// embedding caching are written against. MemoryCache implements it in-process; a shared
// implementation (Redis) can implement it later without touching the callers, which is why
// values are opaque bytes and every call can fail.
//
// Threading: implementations are thread-safe (called from I/O and engine threads).
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "core/result.h"

namespace gantry::cache {

struct CacheStats {
  uint64_t hits = 0;        // get() found a live entry
  uint64_t misses = 0;      // get() found nothing, or only an expired entry
  uint64_t puts = 0;        // entries stored
  uint64_t rejected = 0;    // put() refused (larger than the whole budget, or ttl <= 0)
  uint64_t evictions = 0;   // live entries dropped to make room
  uint64_t expirations = 0; // entries dropped because their ttl had passed
  uint64_t entries = 0;
  uint64_t bytes = 0;     // accounted bytes (keys + values + per-entry overhead)
  uint64_t max_bytes = 0; // the bound `bytes` never exceeds
};

class Cache {
public:
  virtual ~Cache() = default;

  // The value stored under `key`, or std::nullopt when absent or expired. An error means the
  // cache itself failed (a network store); callers treat it as a miss.
  virtual Result<std::optional<std::string>> get(std::string_view key) = 0;
  // Stores `value` under `key` for `ttl`, replacing any previous value. A ttl <= 0 stores
  // nothing. Succeeding does not promise the entry survives: it may be evicted at any time.
  virtual Status put(std::string_view key, std::string value, std::chrono::seconds ttl) = 0;
  // True when an entry was removed.
  virtual Result<bool> erase(std::string_view key) = 0;
  virtual CacheStats stats() const = 0;
};

} // namespace gantry::cache
