// Prefix reuse: full KV blocks are indexed by a hash of every token up to and including the
// block, so a new sequence whose prompt starts with the same tokens (a shared system prompt, a
// growing chat) adopts those blocks instead of recomputing them. A block stays cached after its
// sequences finish, holding one reference of its own, and is evicted least-recently-used first
// when the KV budget needs room. Cached blocks are only ever read: a sequence writes only to
// positions after its reused prefix, so no copy-on-write is needed.
//
// Isolation (audit M2, L7): every chain starts at a root derived from a scope (the project, or
// "" where projects share caches), so one tenant's blocks are never found from another's prompt
// and `cached_tokens` cannot be used as an oracle across projects. The chain hash is SipHash
// under a random per-cache key, so nobody can craft colliding prefixes offline; an entry also
// keeps its parent's hash and its tokens, and both must match on lookup.
//
// Thread ownership: the engine thread.
#pragma once

#include <array>
#include <cstdint>
#include <list>
#include <span>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "engine/kv/kv_cache.h"
#include "engine/kv/siphash.h"

namespace gantry::engine {

class PrefixCache {
public:
  using Tokens = std::array<int32_t, KvCache::kBlockSize>;

  explicit PrefixCache(KvCache &kv, SipKey key = random_sip_key()) : kv_(kv), key_(key) {}

  // The parent hash of a scope's first block.
  uint64_t root(std::string_view scope) const;
  // Hash of a full block given the hash of the block before it (root() for the first).
  uint64_t chain_hash(uint64_t parent, std::span<const int32_t> block_tokens) const;

  // Longest run of cached blocks matching `tokens` from the start of the chain at `root`, at
  // most max_blocks. Each returned block carries a new reference for the caller.
  std::vector<int32_t> acquire(uint64_t root, std::span<const int32_t> tokens, int max_blocks);
  // Offers a block whose K/V for tokens [i*16, i*16+16) are complete; `hash` is
  // chain_hash(parent, block_tokens). No-op when a block with the same hash is already cached.
  void insert(uint64_t parent, uint64_t hash, std::span<const int32_t> block_tokens, int32_t block);
  // Frees one cached block that no sequence uses; false when there is none.
  bool evict_one();
  // Cached blocks that only the cache holds (reclaimable on demand).
  int evictable() const;
  int size() const { return static_cast<int>(entries_.size()); }

  uint64_t queried_tokens() const { return queried_tokens_; }
  uint64_t hit_tokens() const { return hit_tokens_; }

private:
  struct Entry {
    int32_t block;
    uint64_t parent; // compared on lookup: a hash collision alone never matches
    Tokens tokens;
    std::list<uint64_t>::iterator lru; // position in lru_ (front = most recent)
  };
  std::unordered_map<uint64_t, Entry> entries_;
  std::list<uint64_t> lru_;
  KvCache &kv_;
  const SipKey key_;
  uint64_t queried_tokens_ = 0;
  uint64_t hit_tokens_ = 0;
};

} // namespace gantry::engine
