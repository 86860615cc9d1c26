#include "engine/kv/prefix_cache.h"

#include <algorithm>

namespace gantry::engine {

uint64_t PrefixCache::root(std::string_view scope) const {
  // A tag byte keeps roots apart from chain hashes, whose input is always 8 + 64 bytes.
  std::vector<uint8_t> bytes;
  bytes.reserve(scope.size() + 1);
  bytes.push_back('S');
  bytes.insert(bytes.end(), scope.begin(), scope.end());
  return siphash24(key_, bytes);
}

uint64_t PrefixCache::chain_hash(uint64_t parent, std::span<const int32_t> block_tokens) const {
  std::array<uint8_t, 8 + 4 * KvCache::kBlockSize> bytes{};
  size_t n = 0;
  for (int i = 0; i < 8; ++i)
    bytes[n++] = static_cast<uint8_t>(parent >> (8 * i));
  for (size_t t = 0; t < block_tokens.size() && n + 4 <= bytes.size(); ++t) {
    const auto u = static_cast<uint32_t>(block_tokens[t]);
    for (int i = 0; i < 4; ++i)
      bytes[n++] = static_cast<uint8_t>(u >> (8 * i));
  }
  return siphash24(key_, std::span<const uint8_t>(bytes.data(), n));
}

std::vector<int32_t> PrefixCache::acquire(uint64_t root, std::span<const int32_t> tokens,
                                          int max_blocks) {
  std::vector<int32_t> out;
  const int n_full =
      std::min<int>(max_blocks, static_cast<int>(tokens.size()) / KvCache::kBlockSize);
  queried_tokens_ += static_cast<uint64_t>(std::max(n_full, 0)) * KvCache::kBlockSize;
  uint64_t h = root;
  for (int b = 0; b < n_full; ++b) {
    auto blk = tokens.subspan(static_cast<size_t>(b) * KvCache::kBlockSize, KvCache::kBlockSize);
    const uint64_t parent = h;
    h = chain_hash(parent, blk);
    auto it = entries_.find(h);
    if (it == entries_.end() || it->second.parent != parent ||
        !std::equal(blk.begin(), blk.end(), it->second.tokens.begin())) {
      break;
    }
    kv_.retain(it->second.block);
    lru_.splice(lru_.begin(), lru_, it->second.lru);
    out.push_back(it->second.block);
  }
  hit_tokens_ += out.size() * KvCache::kBlockSize;
  return out;
}

void PrefixCache::insert(uint64_t parent, uint64_t hash, std::span<const int32_t> block_tokens,
                         int32_t block) {
  auto it = entries_.find(hash);
  if (it != entries_.end()) {
    lru_.splice(lru_.begin(), lru_, it->second.lru);
    return;
  }
  Entry e;
  e.block = block;
  e.parent = parent;
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
