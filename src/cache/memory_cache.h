// An in-process Cache bounded in bytes, with least-recently-used eviction and per-entry TTL read
// from an injected Clock (tests drive a FakeClock and never sleep).
//
// Every entry is accounted as key + value + kEntryOverhead bytes (the list node, the index slot
// and two string headers), so the bound holds for real memory, not only for payload bytes.
// Expired entries are dropped when they are read, or first whenever room is needed (an index by
// expiry time finds them in O(log n)), so live entries are never evicted while dead ones hold
// memory.
//
// Threading: thread-safe; one mutex around the index (operations are O(1) and short).
#pragma once

#include <list>
#include <map>
#include <mutex>
#include <string>
#include <unordered_map>

#include "cache/cache.h"
#include "core/clock.h"

namespace gantry::cache {

class MemoryCache final : public Cache {
public:
  static constexpr uint64_t kEntryOverhead = 128;

  MemoryCache(uint64_t max_bytes, const Clock &clock);

  Result<std::optional<std::string>> get(std::string_view key) override;
  Status put(std::string_view key, std::string value, std::chrono::seconds ttl) override;
  Result<bool> erase(std::string_view key) override;
  CacheStats stats() const override;

  static uint64_t entry_bytes(std::string_view key, std::string_view value) {
    return key.size() + value.size() + kEntryOverhead;
  }

private:
  using TimePoint = std::chrono::steady_clock::time_point;
  struct Entry;
  using List = std::list<Entry>; // front = most recently used
  struct Entry {
    std::string key;
    std::string value;
    std::multimap<TimePoint, List::iterator>::iterator expiry;
  };
  struct Hash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };

  void drop(List::iterator it);     // requires mu_
  void drop_expired(TimePoint now); // requires mu_

  const uint64_t max_bytes_;
  const Clock &clock_;
  mutable std::mutex mu_;
  List lru_;
  std::unordered_map<std::string, List::iterator, Hash, std::equal_to<>> index_;
  std::multimap<TimePoint, List::iterator> by_expiry_;
  CacheStats stats_;
};

} // namespace gantry::cache
