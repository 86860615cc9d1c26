// Constrained decoding, part 4: compiled grammars kept per key (the GBNF text, or a schema's
// canonical text), so a schema reused by many requests is compiled once. LRU, bounded both by
// entry count and by the grammars' memory; errors are not cached (compiling is bounded anyway).
//
// Thread safety: every method may be called from any thread. Compilation runs outside the lock,
// so two threads missing the same key at once may both compile it; the first result is kept.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

#include "core/result.h"
#include "engine/grammar/grammar.h"

namespace gantry::engine {

struct GrammarCacheStats {
  uint64_t hits = 0;
  uint64_t misses = 0;
  uint64_t evictions = 0;
  size_t entries = 0;
  size_t bytes = 0;
};

class GrammarCache {
public:
  using Compile = std::function<Result<std::shared_ptr<const Grammar>>()>;

  GrammarCache(size_t max_entries, size_t max_bytes);

  // The cached grammar for `key`, or compile() stored under it.
  Result<std::shared_ptr<const Grammar>> get_or_compile(std::string_view key,
                                                        const Compile &compile);
  GrammarCacheStats stats() const;

private:
  struct Entry {
    std::string key;
    std::shared_ptr<const Grammar> grammar;
    size_t bytes = 0;
  };
  void evict_locked();

  const size_t max_entries_;
  const size_t max_bytes_;
  mutable std::mutex mu_;
  std::list<Entry> lru_; // most recent first
  std::unordered_map<std::string_view, std::list<Entry>::iterator> index_;
  GrammarCacheStats stats_;
};

} // namespace gantry::engine
