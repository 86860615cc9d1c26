#include "server/response_cache.h"

#include "core/byte_codec.h"

#include <cctype>

#include "backend/local/local_backend.h"
#include "cache/cache_key.h"

namespace gantry::server {
namespace {

constexpr std::string_view kMagic = "GRC1";

std::string lower(std::string_view s) {
  std::string out(s);
  for (char &c : out)
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

} // namespace

std::string encode_completion(const CachedCompletion &c) {
  std::string out(kMagic);
  put_u32(out, static_cast<uint32_t>(c.prompt_tokens));
  put_u32(out, static_cast<uint32_t>(c.choices.size()));
  for (const auto &ch : c.choices) {
    put_u32(out, static_cast<uint32_t>(ch.completion_tokens));
    put_str(out, ch.finish_reason);
    put_u32(out, static_cast<uint32_t>(ch.pieces.size()));
    for (const auto &p : ch.pieces)
      put_str(out, p);
  }
  return out;
}

Result<CachedCompletion> decode_completion(std::string_view bytes) {
  const Error corrupt = Error::corrupt("malformed cached completion");
  ByteReader r{bytes};
  CachedCompletion c;
  uint32_t prompt = 0, n = 0;
  if (!r.take(kMagic) || !r.u32(prompt) || !r.u32(n))
    return corrupt;
  // Each choice takes at least 12 bytes, so a corrupt count cannot make us allocate much.
  if (n == 0 || n > r.left() / 12)
    return corrupt;
  c.prompt_tokens = static_cast<int>(prompt);
  c.choices.resize(n);
  for (auto &ch : c.choices) {
    uint32_t gen = 0, pieces = 0;
    if (!r.u32(gen) || !r.str(ch.finish_reason) || !r.u32(pieces))
      return corrupt;
    if (pieces > r.left() / 4)
      return corrupt;
    if (ch.finish_reason != "stop" && ch.finish_reason != "length")
      return corrupt;
    ch.completion_tokens = static_cast<int>(gen);
    ch.pieces.resize(pieces);
    for (auto &p : ch.pieces) {
      if (!r.str(p))
        return corrupt;
    }
  }
  if (r.left() != 0)
    return corrupt;
  return c;
}

std::string_view cache_outcome_name(CacheOutcome o) {
  switch (o) {
  case CacheOutcome::kHit: return "hit";
  case CacheOutcome::kMiss: return "miss";
  case CacheOutcome::kBypass: return "bypass";
  }
  return "bypass";
}

CachePolicy cache_policy(std::optional<std::string_view> cache_control,
                         const api::CacheOption &option) {
  CachePolicy p;
  if (cache_control) {
    // A comma-separated list of directives (RFC 9111 5.2); only the two request directives that
    // matter here are honoured, case-insensitively.
    std::string_view rest = *cache_control;
    while (!rest.empty()) {
      const size_t comma = rest.find(',');
      std::string_view d = rest.substr(0, comma);
      rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
      while (!d.empty() && (d.front() == ' ' || d.front() == '\t'))
        d.remove_prefix(1);
      while (!d.empty() && (d.back() == ' ' || d.back() == '\t'))
        d.remove_suffix(1);
      const std::string dl = lower(d);
      if (dl == "no-store") {
        p.read = false;
        p.write = false;
      } else if (dl == "no-cache") {
        p.read = false;
      }
    }
  }
  if (!option.enabled) {
    p.read = false;
    p.write = false;
  }
  if (option.ttl_s) {
    p.ttl = std::chrono::seconds(*option.ttl_s);
    if (*option.ttl_s == 0)
      p.write = false;
  }
  return p;
}

std::string cache_scope(const std::optional<control::Principal> &principal,
                        bool share_across_projects) {
  if (!principal || share_across_projects)
    return {};
  // A project name can never be empty for a key, but an explicit prefix keeps "" (shared)
  // apart from every project anyway.
  return "project:" + principal->project;
}

std::string completion_key(const ModelIdentity &model, api::Endpoint endpoint, int n,
                           const engine::GenerationRequest &req) {
  return backend::completion_material(model.name, model.digest, endpoint, n, req);
}

ResponseCache::ResponseCache(std::unique_ptr<cache::Cache> store, ResponseCacheConfig config)
    : store_(std::move(store)), config_(config) {}

ResponseCache::~ResponseCache() { writes_.stop(); }

ResponseCache::Decision ResponseCache::lookup(const ModelIdentity &model, api::Endpoint endpoint,
                                              int n, const engine::GenerationRequest &request,
                                              const CachePolicy &policy) {
  Decision d;
  if (!config_.enabled || !request.sampling.deterministic() || (!policy.read && !policy.write)) {
    ++bypass_;
    return d;
  }
  return decide(completion_key(model, endpoint, n, request), n, policy);
}

ResponseCache::Decision ResponseCache::lookup_material(std::string_view material, int n,
                                                       const CachePolicy &policy,
                                                       std::string_view scope) {
  if (!config_.enabled || material.empty() || (!policy.read && !policy.write)) {
    ++bypass_;
    return {};
  }
  // The material is any bytes a backend chose; the key is always a fixed-size hash of it.
  return decide(cache::KeyBuilder("resp.v2").add("scope", scope).add("material", material).finish(),
                n, policy);
}

ResponseCache::Decision ResponseCache::decide(std::string key, int n, const CachePolicy &policy) {
  Decision d;
  if (policy.read) {
    writes_.barrier();
    auto got = store_->get(key);
    if (got.ok() && got->has_value()) {
      auto decoded = decode_completion(**got);
      if (decoded.ok() && static_cast<int>(decoded->choices.size()) == n) {
        ++hits_;
        d.outcome = CacheOutcome::kHit;
        d.hit = std::move(decoded).value();
        return d;
      }
      ++errors_;
    } else if (!got.ok()) {
      ++errors_;
    }
  }
  ++misses_;
  d.outcome = CacheOutcome::kMiss;
  if (policy.write) {
    d.store_key = std::move(key);
    d.ttl = policy.ttl.value_or(config_.default_ttl);
  }
  return d;
}

void ResponseCache::store(const std::string &key, std::chrono::seconds ttl,
                          const CachedCompletion &result) {
  writes_.run([this, key, ttl, bytes = encode_completion(result)]() mutable {
    if (store_->put(key, std::move(bytes), ttl).ok()) {
      ++stored_;
    } else {
      ++errors_;
    }
  });
}

ResponseCacheCounters ResponseCache::counters() const {
  writes_.barrier();
  return {hits_.load(), misses_.load(), bypass_.load(), stored_.load(), errors_.load()};
}

} // namespace gantry::server
