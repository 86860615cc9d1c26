#include "cache/memory_cache.h"

namespace gantry::cache {

MemoryCache::MemoryCache(uint64_t max_bytes, const Clock &clock)
    : max_bytes_(max_bytes), clock_(clock) {
  stats_.max_bytes = max_bytes;
}

void MemoryCache::drop(List::iterator it) {
  stats_.bytes -= entry_bytes(it->key, it->value);
  --stats_.entries;
  by_expiry_.erase(it->expiry);
  index_.erase(it->key);
  lru_.erase(it);
}

void MemoryCache::drop_expired(TimePoint now) {
  while (!by_expiry_.empty() && by_expiry_.begin()->first <= now) {
    drop(by_expiry_.begin()->second);
    ++stats_.expirations;
  }
}

Result<std::optional<std::string>> MemoryCache::get(std::string_view key) {
  std::lock_guard<std::mutex> lk(mu_);
  auto found = index_.find(key);
  if (found == index_.end()) {
    ++stats_.misses;
    return std::optional<std::string>();
  }
  auto it = found->second;
  if (it->expiry->first <= clock_.now()) {
    drop(it);
    ++stats_.expirations;
    ++stats_.misses;
    return std::optional<std::string>();
  }
  lru_.splice(lru_.begin(), lru_, it);
  ++stats_.hits;
  return std::optional<std::string>(it->value);
}

Status MemoryCache::put(std::string_view key, std::string value, std::chrono::seconds ttl) {
  const uint64_t need = entry_bytes(key, value);
  std::lock_guard<std::mutex> lk(mu_);
  if (auto found = index_.find(key); found != index_.end())
    drop(found->second);
  if (ttl.count() <= 0 || need > max_bytes_) {
    ++stats_.rejected;
    return Ok();
  }
  const TimePoint now = clock_.now();
  if (stats_.bytes + need > max_bytes_) {
    drop_expired(now);
    while (stats_.bytes + need > max_bytes_) {
      drop(std::prev(lru_.end()));
      ++stats_.evictions;
    }
  }
  lru_.push_front(Entry{std::string(key), std::move(value), {}});
  lru_.front().expiry = by_expiry_.emplace(now + ttl, lru_.begin());
  index_.emplace(lru_.front().key, lru_.begin());
  stats_.bytes += need;
  ++stats_.entries;
  ++stats_.puts;
  return Ok();
}

Result<bool> MemoryCache::erase(std::string_view key) {
  std::lock_guard<std::mutex> lk(mu_);
  auto found = index_.find(key);
  if (found == index_.end())
    return false;
  drop(found->second);
  return true;
}

CacheStats MemoryCache::stats() const {
  std::lock_guard<std::mutex> lk(mu_);
  return stats_;
}

} // namespace gantry::cache
