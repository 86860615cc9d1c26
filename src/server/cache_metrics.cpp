#include "server/cache_metrics.h"

#include <string_view>
#include <vector>

#include "server/metrics_text.h"

namespace gantry::server {
namespace {

struct Row {
  std::string_view cache;
  ResponseCacheCounters counters;
  cache::CacheStats store;
};

void family(std::ostream &o, const std::vector<Row> &rows, std::string_view name,
            std::string_view type, std::string_view help, uint64_t (*value)(const Row &)) {
  o << "# HELP gantry:" << name << ' ' << help << "\n# TYPE gantry:" << name << ' ' << type << '\n';
  for (const auto &r : rows) {
    o << "gantry:" << name << '{' << label("cache", r.cache) << "} " << value(r) << '\n';
  }
}

} // namespace

void render_cache_metrics(std::ostream &o, const ResponseCache &response,
                          const EmbeddingService &embeddings) {
  std::vector<Row> rows;
  rows.push_back({"response", response.counters(), response.store_stats()});
  rows.push_back({"embedding", embeddings.counters(), embeddings.store_stats()});
  family(o, rows, "cache_hits_total", "counter",
         "Requests (or embedding inputs) served from cache.",
         [](const Row &r) { return r.counters.hits; });
  family(o, rows, "cache_misses_total", "counter",
         "Cacheable requests (or embedding inputs) computed because no entry was usable.",
         [](const Row &r) { return r.counters.misses; });
  family(o, rows, "cache_bypass_total", "counter",
         "Requests that skipped the cache (not deterministic, no-store, cache disabled).",
         [](const Row &r) { return r.counters.bypass; });
  family(o, rows, "cache_stores_total", "counter", "Results written to the cache.",
         [](const Row &r) { return r.counters.stored; });
  family(o, rows, "cache_errors_total", "counter",
         "Cache reads or writes that failed or returned undecodable entries.",
         [](const Row &r) { return r.counters.errors; });
  family(o, rows, "cache_evictions_total", "counter", "Live entries evicted to stay in budget.",
         [](const Row &r) { return r.store.evictions; });
  family(o, rows, "cache_expirations_total", "counter", "Entries dropped after their TTL.",
         [](const Row &r) { return r.store.expirations; });
  family(o, rows, "cache_entries", "gauge", "Entries held.",
         [](const Row &r) { return r.store.entries; });
  family(o, rows, "cache_bytes", "gauge", "Bytes held (keys, values and per-entry overhead).",
         [](const Row &r) { return r.store.bytes; });
  family(o, rows, "cache_max_bytes", "gauge", "The cache's byte budget.",
         [](const Row &r) { return r.store.max_bytes; });
}

} // namespace gantry::server
