#include "engine/kv/prefix_cache.h"

#include <algorithm>

namespace gantry::engine {

uint64_t PrefixCache::chain_hash(uint64_t parent, std::span<const int32_t> block_tokens) {
  // splitmix64-style mixing of the parent hash and each token: collisions are also guarded by
  // comparing the stored tokens on lookup.
  uint64_t h = parent ^ 0x9E3779B97F4A7C15ull;
  for (int32_t t : block_tokens) {
    h ^= static_cast<uint32_t>(t) + 0x9E3779B97F4A7C15ull + (h << 6) + (h >> 2);
    h ^= h >> 30;
    h *= 0xBF58476D1CE4E5B9ull;
    h ^= h >> 27;
    h *= 0x94D049BB133111EBull;
    h ^= h >> 31;
  }
  return h;
}

std::vector<int32_t> PrefixCache::acquire(std::span<const int32_t> tokens, int max_blocks) {
  std::vector<int32_t> out;
  const int n_full =
      std::min<int>(max_blocks, static_cast<int>(tokens.size()) / KvCache::kBlockSize);
  queried_tokens_ += static_cast<uint64_t>(std::max(n_full, 0)) * KvCache::kBlockSize;
  uint64_t h = 0;
  for (int b = 0; b < n_full; ++b) {
    auto blk = tokens.subspan(static_cast<size_t>(b) * KvCache::kBlockSize, KvCache::kBlockSize);
    h = chain_hash(h, blk);
    auto it = entries_.find(h);
    if (it == entries_.end() || !std::equal(blk.begin(), blk.end(), it->second.tokens.begin())) {
      break;
    }
    kv_.retain(it->second.block);
    lru_.splice(lru_.begin(), lru_, it->second.lru);
    out.push_back(it->second.block);
  }
  hit_tokens_ += out.size() * KvCache::kBlockSize;
  return out;
}

void PrefixCache::insert(uint64_t hash, std::span<const int32_t> block_tokens, int32_t block) {
  auto it = entries_.find(hash);
  if (it != entries_.end()) {
    lru_.splice(lru_.begin(), lru_, it->second.lru);
    return;
  }
  Entry e;
  e.block = block;
  std::copy(block_tokens.begin(), block_tokens.end(), e.tokens.begin());
  lru_.push_front(hash);
  e.lru = lru_.begin();
  kv_.retain(block);
  kv_.set_cached(block, true);
  entries_.emplace(hash, e);
}

bool PrefixCache::evict_one() {
  for (auto it = lru_.rbegin(); it != lru_.rend(); ++it) {
    auto e = entries_.find(*it);
    if (kv_.refcount(e->second.block) != 1)
      continue; // a sequence still reads it
    kv_.set_cached(e->second.block, false);
    kv_.release(e->second.block);
    lru_.erase(std::next(it).base());
    entries_.erase(e);
    return true;
  }
  return false;
}

int PrefixCache::evictable() const { return kv_.n_idle_cached(); }

} // namespace gantry::engine
