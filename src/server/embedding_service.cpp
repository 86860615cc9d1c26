#include "server/embedding_service.h"

#include <algorithm>
#include <bit>
#include <cstring>

#include "cache/cache_key.h"

namespace gantry::server {
namespace {

std::string encode_vector(const std::vector<float> &v) {
  std::string out(v.size() * 4, '\0');
  for (size_t i = 0; i < v.size(); ++i) {
    const auto u = std::bit_cast<uint32_t>(v[i]);
    for (int b = 0; b < 4; ++b)
      out[i * 4 + b] = static_cast<char>((u >> (8 * b)) & 0xff);
  }
  return out;
}

std::optional<std::vector<float>> decode_vector(std::string_view bytes, size_t dims) {
  if (bytes.size() != dims * 4)
    return std::nullopt;
  std::vector<float> v(dims);
  for (size_t i = 0; i < dims; ++i) {
    uint32_t u = 0;
    for (int b = 0; b < 4; ++b)
      u |= uint32_t{static_cast<uint8_t>(bytes[i * 4 + b])} << (8 * b);
    v[i] = std::bit_cast<float>(u);
  }
  return v;
}

http::Response with_header(http::Response r, std::string_view outcome) {
  r.headers.push_back({"x-gantry-cache", std::string(outcome)});
  return r;
}

http::Response error_reply(const Error &e, std::string_view outcome) {
  return with_header(http::error_response(e), outcome); // Retry-After: one wire policy
}

} // namespace

EmbeddingService::EmbeddingService(std::unique_ptr<cache::Cache> store, bool enabled,
                                   std::chrono::seconds default_ttl)
    : store_(std::move(store)), enabled_(enabled), default_ttl_(default_ttl) {}

ResponseCacheCounters EmbeddingService::counters() const {
  return {hits_.load(), misses_.load(), bypass_.load(), stored_.load(), errors_.load()};
}

void EmbeddingService::handle(backend::ModelBackend &m, api::EmbeddingRequest req,
                              std::optional<std::string_view> cache_control, EmbeddingHooks hooks,
                              std::shared_ptr<http::ResponseWriter> w) {
  auto fail = [&hooks, &w](const Error &e, std::string_view outcome) {
    if (hooks.error)
      hooks.error(e);
    w->respond(outcome.empty() ? http::error_response(e) : error_reply(e, outcome));
  };
  auto prepared = m.prepare_embeddings(req);
  if (!prepared) {
    fail(prepared.error(), "");
    return;
  }
  const size_t n = req.size();
  const int64_t prompt_tokens = prepared->total_tokens();
  // Admitted with the real token count, before any cache read or engine work (H5).
  if (hooks.admit && !hooks.admit(prompt_tokens))
    return;

  const CachePolicy policy = cache_policy(cache_control, req.cache);
  const bool use_cache = enabled_ && (policy.read || policy.write);
  if (!use_cache)
    ++bypass_;
  const size_t dims = static_cast<size_t>(std::max(0, m.info().embedding_dims));
  std::vector<std::vector<float>> vectors(n);
  std::vector<std::string> keys(use_cache ? n : 0);
  std::vector<size_t> missing; // indices of inputs to compute
  int64_t cached_tokens = 0;
  for (size_t i = 0; i < n; ++i) {
    const bool cacheable = use_cache && !prepared->cache_material[i].empty();
    if (cacheable)
      keys[i] = cache::KeyBuilder("emb.v2")
                    .add("scope", hooks.cache_scope) // per project unless shared (audit M2)
                    .add("material", prepared->cache_material[i])
                    .finish();
    if (cacheable && policy.read) {
      auto got = store_->get(keys[i]);
      if (!got.ok())
        ++errors_;
      if (got.ok() && got->has_value()) {
        if (auto v = decode_vector(**got, dims ? dims : (**got).size() / 4)) {
          vectors[i] = std::move(*v);
          cached_tokens += prepared->input_tokens[i];
          ++hits_;
          continue;
        }
        ++errors_;
      }
    }
    if (use_cache)
      ++misses_;
    missing.push_back(i);
  }
  const std::string model_name = m.info().name;
  const bool base64 = req.base64;
  auto report = std::move(hooks.usage);
  if (missing.empty()) {
    if (report)
      report({prompt_tokens, cached_tokens});
    w->respond(with_header(http::Response::json(200, api::render_embeddings(model_name, vectors,
                                                                            base64, prompt_tokens)),
                           "hit"));
    return;
  }
  const std::string_view outcome = use_cache ? "miss" : "bypass";
  const bool store = use_cache && policy.write;
  const auto ttl = policy.ttl.value_or(default_ttl_);
  auto done = [this, w, vectors = std::move(vectors), keys = std::move(keys), missing, store, ttl,
               model_name, base64, prompt_tokens, cached_tokens, outcome,
               report = std::move(report),
               on_error = hooks.error](Result<backend::EmbedResult> computed) mutable {
    if (!computed) {
      if (on_error)
        on_error(computed.error());
      w->respond(error_reply(computed.error(), outcome));
      return;
    }
    for (size_t j = 0; j < missing.size(); ++j) {
      vectors[missing[j]] = std::move(computed->vectors[j]);
      if (store && !keys[missing[j]].empty()) {
        if (store_->put(keys[missing[j]], encode_vector(vectors[missing[j]]), ttl).ok()) {
          ++stored_;
        } else {
          ++errors_;
        }
      }
    }
    if (report)
      report({prompt_tokens, cached_tokens, computed->engine_seconds});
    w->respond(with_header(http::Response::json(200, api::render_embeddings(model_name, vectors,
                                                                            base64, prompt_tokens)),
                           outcome));
  };
  if (auto st = m.embed(*prepared, std::move(missing), std::move(done)); !st)
    fail(st.error(), outcome);
}

} // namespace gantry::server
