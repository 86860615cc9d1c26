#include "engine/grammar/grammar_cache.h"

namespace gantry::engine {

GrammarCache::GrammarCache(size_t max_entries, size_t max_bytes)
    : max_entries_(max_entries), max_bytes_(max_bytes) {}

Result<std::shared_ptr<const Grammar>> GrammarCache::get_or_compile(std::string_view key,
                                                                    const Compile &compile) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = index_.find(key);
    if (it != index_.end()) {
      ++stats_.hits;
      lru_.splice(lru_.begin(), lru_, it->second);
      return it->second->grammar;
    }
    ++stats_.misses;
  }
  GANTRY_ASSIGN_OR_RETURN(std::shared_ptr<const Grammar> grammar, compile());
  const size_t bytes = grammar->bytes() + key.size() + sizeof(Entry);
  std::lock_guard<std::mutex> lock(mu_);
  auto it = index_.find(key);
  if (it != index_.end()) // another thread compiled it meanwhile
    return it->second->grammar;
  if (bytes > max_bytes_ || max_entries_ == 0)
    return grammar; // too large to keep: the caller still gets it
  Entry e;
  e.key = std::string(key);
  e.grammar = grammar;
  e.bytes = bytes;
  lru_.push_front(std::move(e));
  index_.emplace(lru_.front().key, lru_.begin());
  stats_.bytes += bytes;
  evict_locked();
  return grammar;
}

void GrammarCache::evict_locked() {
  while (!lru_.empty() && (lru_.size() > max_entries_ || stats_.bytes > max_bytes_)) {
    Entry &last = lru_.back();
    stats_.bytes -= last.bytes;
    index_.erase(last.key);
    lru_.pop_back();
    ++stats_.evictions;
  }
}

GrammarCacheStats GrammarCache::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  GrammarCacheStats s = stats_;
  s.entries = lru_.size();
  return s;
}

} // namespace gantry::engine
