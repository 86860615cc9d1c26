// Paged KV cache with a fixed memory budget, holding K and V as fp16 (like llama.cpp's default
// cache type: half the memory of f32, and the same rounding). Memory is divided into blocks of
// kBlockSize token positions; each sequence owns a block table (vector of block ids) that maps its
// positions to blocks. Blocks are reference-counted so that a later prefix cache can share them.
//
// Thread ownership: the engine thread. The forward pass reads/writes K/V rows from pool workers
// while the engine thread waits, and never allocates blocks there.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

namespace gantry::engine {

class KvCache {
public:
  static constexpr int kBlockSize = 16;

  // n_blocks blocks of kBlockSize positions, each holding n_layer x (K, V) rows of kv_dim floats.
  KvCache(int n_layer, int kv_dim, int n_blocks);

  // Blocks that fit in a memory budget in bytes (at least 1).
  static int blocks_for_budget(int n_layer, int kv_dim, size_t budget_bytes);
  static size_t bytes_per_block(int n_layer, int kv_dim);
  static int blocks_for_tokens(int n_tokens) { return (n_tokens + kBlockSize - 1) / kBlockSize; }

  int n_blocks() const { return n_blocks_; }
  int n_free() const { return static_cast<int>(free_.size()); }
  int n_used() const { return n_blocks_ - n_free(); }
  size_t bytes() const { return size_ * sizeof(uint16_t); }

  std::optional<int32_t> allocate();
  // Adds a reference to an allocated block (prefix sharing).
  void retain(int32_t block);
  // Drops a reference; the block returns to the free list at zero.
  void release(int32_t block);
  int refcount(int32_t block) const { return refs_[block]; }
  // Marks a block as held by the prefix cache (which owns one of its references), so that the
  // number of blocks only that cache holds — reclaimable on demand — is kept without a scan.
  void set_cached(int32_t block, bool cached);
  int n_idle_cached() const { return idle_cached_; }

  uint16_t *k(int layer, int32_t block, int slot) { return row(layer, 0, block, slot); }
  uint16_t *v(int layer, int32_t block, int slot) { return row(layer, 1, block, slot); }
  const uint16_t *k(int layer, int32_t block, int slot) const {
    return const_cast<KvCache *>(this)->row(layer, 0, block, slot);
  }
  const uint16_t *v(int layer, int32_t block, int slot) const {
    return const_cast<KvCache *>(this)->row(layer, 1, block, slot);
  }
  int kv_dim() const { return kv_dim_; }

private:
  uint16_t *row(int layer, int kv, int32_t block, int slot) {
    size_t idx = ((static_cast<size_t>(layer) * 2 + kv) * n_blocks_ + block) * kBlockSize + slot;
    return data_.get() + idx * kv_dim_;
  }

  int kv_dim_;
  int n_blocks_;
  size_t size_;
  // Not zero-initialised: pages are only committed when a sequence first writes them, so a
  // large budget costs nothing until it is used.
  std::unique_ptr<uint16_t[]> data_;
  std::vector<int32_t> free_; // stack of free block ids
  std::vector<int32_t> refs_;
  std::vector<uint8_t> cached_;
  int idle_cached_ = 0; // cached blocks whose only reference is the cache's
};

} // namespace gantry::engine
