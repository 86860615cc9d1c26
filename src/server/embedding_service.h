// POST /v1/embeddings: has the model's backend prepare (tokenize) each input, answers what it can
// from the embedding cache and has the backend compute only the misses (ModelBackend::embed),
// then renders the OpenAI response. Vectors are cached per input, keyed by the model (name and file
// digest), its pooling and the input's token ids, so a text and the same text sent as token ids
// share one entry, and a batch mixing known and new inputs computes only the new ones.
//
// The x-gantry-cache header is "hit" when every input came from the cache, "miss" when any was
// computed, "bypass" when the request or the configuration turned the cache off.
//
// Metering: the inputs are tokenized first, then `hooks.admit` admits the request with its real
// token count (TPM, token quotas and spend budgets apply) before any cache read or engine work;
// `hooks.usage` reports the tokens to settle just before the response is written.
//
// Threading: handle() runs on the prepare pool (tokenizing is CPU work, audit M4); the completion
// runs on the backend's thread (the engine thread). Thread-safe.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "api/embeddings.h"
#include "backend/model_backend.h"
#include "cache/cache.h"
#include "http/response_writer.h"
#include "server/response_cache.h"

namespace gantry::server {

struct EmbeddingUsage {
  int64_t prompt_tokens = 0;
  int64_t cached_tokens = 0; // of inputs answered from the embedding cache (not charged)
  double engine_seconds = 0; // of the inputs computed now (per-hour pricing, audit H5)
};

struct EmbeddingHooks {
  // Called once, synchronously inside handle(), after tokenization. On refusal it has answered
  // the writer and returns false.
  std::function<bool(int64_t prompt_tokens)> admit;
  // Called (on any thread) right before a successful response is written.
  std::function<void(const EmbeddingUsage &)> usage;
  // Called before an error response is written, with the error (the call's typed record).
  std::function<void(const Error &)> error;
  // Entries are shared only within one scope: the caller's project, or "" where projects share
  // caches (audit M2).
  std::string cache_scope;
};

class EmbeddingService {
public:
  EmbeddingService(std::unique_ptr<cache::Cache> store, bool enabled,
                   std::chrono::seconds default_ttl);

  void handle(backend::ModelBackend &model, api::EmbeddingRequest request,
              std::optional<std::string_view> cache_control, EmbeddingHooks hooks,
              std::shared_ptr<http::ResponseWriter> writer);

  // hits / misses count inputs; bypass counts requests.
  ResponseCacheCounters counters() const;
  cache::CacheStats store_stats() const { return store_->stats(); }

private:
  std::unique_ptr<cache::Cache> store_;
  const bool enabled_;
  const std::chrono::seconds default_ttl_;
  std::atomic<uint64_t> hits_{0}, misses_{0}, bypass_{0}, stored_{0}, errors_{0};
};

} // namespace gantry::server
