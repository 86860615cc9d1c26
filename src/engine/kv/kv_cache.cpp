#include "engine/kv/kv_cache.h"

#include <cassert>

namespace gantry::engine {

KvCache::KvCache(int n_layer, int kv_dim, int n_blocks)
    : kv_dim_(kv_dim), n_blocks_(n_blocks),
      size_(static_cast<size_t>(n_layer) * 2 * n_blocks * kBlockSize * kv_dim),
      data_(new uint16_t[size_]), refs_(n_blocks, 0), cached_(n_blocks, 0) {
  free_.reserve(n_blocks);
  // Lowest ids on top so that allocation order is predictable in tests.
  for (int b = n_blocks - 1; b >= 0; --b)
    free_.push_back(b);
}

size_t KvCache::bytes_per_block(int n_layer, int kv_dim) {
  return static_cast<size_t>(n_layer) * 2 * kBlockSize * kv_dim * sizeof(uint16_t);
}

int KvCache::blocks_for_budget(int n_layer, int kv_dim, size_t budget_bytes) {
  size_t per = bytes_per_block(n_layer, kv_dim);
  size_t n = budget_bytes / per;
  return n < 1 ? 1 : static_cast<int>(n > (1u << 30) ? (1u << 30) : n);
}

std::optional<int32_t> KvCache::allocate() {
  if (free_.empty())
    return std::nullopt;
  int32_t b = free_.back();
  free_.pop_back();
  refs_[b] = 1;
  return b;
}

void KvCache::retain(int32_t block) {
  assert(refs_[block] > 0);
  if (cached_[block] && refs_[block] == 1)
    --idle_cached_;
  ++refs_[block];
}

void KvCache::release(int32_t block) {
  assert(refs_[block] > 0);
  --refs_[block];
  if (cached_[block] && refs_[block] == 1)
    ++idle_cached_;
  if (refs_[block] == 0)
    free_.push_back(block);
}

void KvCache::set_cached(int32_t block, bool cached) {
  assert(refs_[block] > 0);
  if (cached_[block] == cached)
    return;
  cached_[block] = cached;
  if (refs_[block] == 1)
    idle_cached_ += cached ? 1 : -1;
}

} // namespace gantry::engine
