// Response caching for /v1/completions and /v1/chat/completions (README, "Caching").
//
// The key is the SHA-256 of everything that decides the generated tokens: the model (name and
// weights digest), the endpoint, the rendered prompt's token ids, `n` and every field of the
// engine::GenerationRequest (all sampling parameters, seed, resolved max_tokens, stop strings,
// ignore_eos, and the cache scope: the caller's project unless `[cache] share_across_projects`,
// so one tenant's hit never reveals another tenant's prompt, audit M2). What only shapes the bytes
// of the answer — stream, include_usage, echo, user — is left out: the value is the generated
// result (per choice: the text pieces in the order the engine released them, the finish reason, the
// token count), and a hit is rendered by the same api/ renderers as a live response, streamed or
// not.
//
// Only requests whose output is reproducible are cached: greedy, or sampled with a fixed seed.
// Anything else is a bypass, whatever the client asks. So is a request that asks for logprobs:
// an entry keeps text only, and a replay without the log-probabilities would be a wrong answer.
//
// Threading: thread-safe. lookup() runs on I/O threads; store() is called on engine threads and
// posts the put to this cache's own SettlementWorker, so a shared (network) cache never stalls a
// decode step. lookup() waits for the puts posted before it, so a repeat sent after a response
// was read finds that response's entry.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "api/cache_option.h"
#include "api/openai.h"
#include "cache/cache.h"
#include "control/key_authenticator.h"
#include "control/settlement_worker.h"
#include "engine/batch/engine.h"

namespace gantry::server {

struct CachedChoice {
  std::vector<std::string> pieces; // the text of each engine event, in order (stream chunks)
  std::string finish_reason;       // "stop" | "length"
  int completion_tokens = 0;
};

struct CachedCompletion {
  int prompt_tokens = 0;
  std::vector<CachedChoice> choices;
};

// Compact length-prefixed binary form; decode() refuses anything malformed (a shared store may
// hold bytes written by another version or corrupted in transit).
std::string encode_completion(const CachedCompletion &c);
Result<CachedCompletion> decode_completion(std::string_view bytes);

enum class CacheOutcome { kHit, kMiss, kBypass };
std::string_view cache_outcome_name(CacheOutcome o); // "hit" | "miss" | "bypass"

// What the client asked for: the request's Cache-Control header (no-cache: do not read, but
// store the fresh result; no-store: neither) and its body's "cache" field.
struct CachePolicy {
  bool read = true;
  bool write = true;
  std::optional<std::chrono::seconds> ttl; // overrides the default for what is stored
};
CachePolicy cache_policy(std::optional<std::string_view> cache_control,
                         const api::CacheOption &option);

// Which model produced an entry: its served name and a digest of its file (model_digest.h), so
// that replacing the weights under the same name never serves the old model's answers.
struct ModelIdentity {
  std::string_view name;
  std::string_view digest;
};

// The scope of a call's cache entries and prefix-cache blocks (audit M2): its project, or "" when
// the deployment shares caches across projects or the server is open (no key, one tenant).
std::string cache_scope(const std::optional<control::Principal> &principal,
                        bool share_across_projects);

std::string completion_key(const ModelIdentity &model, api::Endpoint endpoint, int n,
                           const engine::GenerationRequest &request);

struct ResponseCacheConfig {
  bool enabled = true;
  std::chrono::seconds default_ttl{3600};
};

struct ResponseCacheCounters {
  uint64_t hits = 0;
  uint64_t misses = 0;
  uint64_t bypass = 0;
  uint64_t stored = 0;
  uint64_t errors = 0; // store failures and undecodable entries (served as misses)
};

class ResponseCache {
public:
  ResponseCache(std::unique_ptr<cache::Cache> store, ResponseCacheConfig config);
  ~ResponseCache();

  bool enabled() const { return config_.enabled; }

  struct Decision {
    CacheOutcome outcome = CacheOutcome::kBypass;
    std::optional<CachedCompletion> hit; // set when outcome is kHit
    // When set, the fresh result is to be stored under this key for `ttl`.
    std::optional<std::string> store_key;
    std::chrono::seconds ttl{0};
  };
  // `request` is choice 0's generation request (the others differ only by derived seeds).
  Decision lookup(const ModelIdentity &model, api::Endpoint endpoint, int n,
                  const engine::GenerationRequest &request, const CachePolicy &policy);
  // The same decision for a backend's cache material (ModelBackend::prepare: bytes that identify
  // the output; empty = not reproducible, a bypass). `scope` partitions the entries (e.g. per
  // project); empty = shared by every caller.
  Decision lookup_material(std::string_view material, int n, const CachePolicy &policy,
                           std::string_view scope);
  // Encodes the result here and posts the put (it has happened once lookup() or flush() returns).
  void store(const std::string &key, std::chrono::seconds ttl, const CachedCompletion &result);
  void flush() const { writes_.barrier(); }

  ResponseCacheCounters counters() const;
  cache::CacheStats store_stats() const {
    writes_.barrier();
    return store_->stats();
  }

private:
  Decision decide(std::string key, int n, const CachePolicy &policy);

  std::unique_ptr<cache::Cache> store_;
  const ResponseCacheConfig config_;
  std::atomic<uint64_t> hits_{0}, misses_{0}, bypass_{0}, stored_{0}, errors_{0};
  // Last member: stopped (its queue run) first, while store_ is still alive.
  mutable control::SettlementWorker writes_{256};
};

} // namespace gantry::server
