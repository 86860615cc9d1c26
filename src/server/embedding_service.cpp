#include "server/embedding_service.h"

#include <bit>
#include <cstring>

#include "cache/cache_key.h"
#include "server/gateway.h"

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

std::string embedding_key(const ServedModel &m, std::span<const int32_t> tokens) {
  return cache::KeyBuilder("emb.v1")
      .add("model", m.spec.name)
      .add("digest", m.digest)
      .add("pooling", static_cast<int>(m.worker->model().config().pooling))
      .add("tokens", tokens)
      .finish();
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

void EmbeddingService::handle(ServedModel &m, api::EmbeddingRequest req,
                              std::optional<std::string_view> cache_control, EmbeddingHooks hooks,
                              std::shared_ptr<http::ResponseWriter> w) {
  const auto &tok = m.worker->model().tokenizer();
  const size_t n = req.size();
  const bool many = n > 1;
  auto param = [&](size_t i) { return many ? "input[" + std::to_string(i) + "]" : "input"; };

  std::vector<std::vector<int32_t>> inputs(n);
  int64_t prompt_tokens = 0;
  for (size_t i = 0; i < n; ++i) {
    if (!req.texts.empty()) {
      inputs[i] = tok.encode(req.texts[i], true, true);
    } else {
      inputs[i] = std::move(req.token_inputs[i]);
      for (int32_t t : inputs[i]) {
        if (t >= tok.n_vocab()) {
          w->respond(http::error_response(Error::invalid(
              "token id " + std::to_string(t) + " is outside the vocabulary", param(i))));
          return;
        }
      }
    }
    if (static_cast<int>(inputs[i].size()) > m.worker->n_ctx()) {
      w->respond(http::error_response(
          {ErrorCode::kContextLengthExceeded,
           "This model's maximum context length is " + std::to_string(m.worker->n_ctx()) +
               " tokens, however you requested " + std::to_string(inputs[i].size()) +
               " tokens in the input. Please reduce the length of the input.",
           param(i)}));
      return;
    }
    prompt_tokens += static_cast<int64_t>(inputs[i].size());
  }
  // Admitted with the real token count, before any cache read or engine work (H5).
  if (hooks.admit && !hooks.admit(prompt_tokens))
    return;

  const CachePolicy policy = cache_policy(cache_control, req.cache);
  const bool use_cache = enabled_ && (policy.read || policy.write);
  if (!use_cache)
    ++bypass_;
  const size_t dims = static_cast<size_t>(m.worker->model().config().n_embd);
  std::vector<std::vector<float>> vectors(n);
  std::vector<std::string> keys(use_cache ? n : 0);
  std::vector<size_t> missing; // indices of inputs to compute
  int64_t cached_tokens = 0;
  for (size_t i = 0; i < n; ++i) {
    if (use_cache)
      keys[i] = embedding_key(m, inputs[i]);
    if (use_cache && policy.read) {
      auto got = store_->get(keys[i]);
      if (!got.ok())
        ++errors_;
      if (got.ok() && got->has_value()) {
        if (auto v = decode_vector(**got, dims)) {
          vectors[i] = std::move(*v);
          cached_tokens += static_cast<int64_t>(inputs[i].size());
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
  const std::string model_name = m.spec.name;
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
  std::vector<std::vector<int32_t>> work;
  work.reserve(missing.size());
  for (size_t i : missing)
    work.push_back(std::move(inputs[i]));
  const bool store = use_cache && policy.write;
  const auto ttl = policy.ttl.value_or(default_ttl_);
  // The engine names inputs by their position in `work`; errors are renamed to the request's.
  auto done = [this, w, vectors = std::move(vectors), keys = std::move(keys), missing, store, ttl,
               model_name, base64, prompt_tokens, cached_tokens, outcome, many,
               report =
                   std::move(report)](Result<std::vector<std::vector<float>>> computed) mutable {
    if (!computed) {
      Error e = computed.take_error();
      if (e.param.starts_with("input[")) {
        const size_t j = std::stoul(e.param.substr(6));
        if (j < missing.size())
          e.param = "input[" + std::to_string(missing[j]) + "]";
      } else if (e.param == "input" && many) {
        e.param = "input[" + std::to_string(missing[0]) + "]";
      }
      w->respond(error_reply(e, outcome));
      return;
    }
    for (size_t j = 0; j < missing.size(); ++j) {
      vectors[missing[j]] = std::move((*computed)[j]);
      if (store) {
        if (store_->put(keys[missing[j]], encode_vector(vectors[missing[j]]), ttl).ok()) {
          ++stored_;
        } else {
          ++errors_;
        }
      }
    }
    if (report)
      report({prompt_tokens, cached_tokens});
    w->respond(with_header(http::Response::json(200, api::render_embeddings(model_name, vectors,
                                                                            base64, prompt_tokens)),
                           outcome));
  };
  if (auto st = m.worker->embed(std::move(work), std::move(done)); !st) {
    w->respond(error_reply(st.error(), outcome));
  }
}

} // namespace gantry::server
