// The OpenAI /v1/embeddings wire format: the request body parsed into native inputs, and vectors
// rendered back as {"object":"list","data":[{"object":"embedding",...}],...}.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "api/cache_option.h"
#include "core/result.h"

namespace gantry::api {

// OpenAI's own limit on inputs per request.
constexpr size_t kMaxEmbeddingInputs = 2048;

struct EmbeddingRequest {
  std::string model;
  // Exactly one is non-empty: the inputs as text, or as token ids (OpenAI's two input forms).
  std::vector<std::string> texts;
  std::vector<std::vector<int32_t>> token_inputs;
  bool base64 = false; // encoding_format "base64": little-endian float32 bytes
  CacheOption cache;

  size_t size() const { return texts.empty() ? token_inputs.size() : texts.size(); }
};

// Errors carry the offending field in `param`; `dimensions` is refused (the vector length is the
// model's width), unknown fields are rejected like OpenAI does.
Result<EmbeddingRequest> parse_embedding_request(std::string_view body);

// `vectors[i]` is input i's embedding; prompt_tokens counts every input's tokens.
std::string render_embeddings(std::string_view model,
                              const std::vector<std::vector<float>> &vectors, bool base64,
                              int64_t prompt_tokens);

// Standard base64 (RFC 4648, with padding), as OpenAI encodes embeddings.
std::string base64_encode(std::span<const uint8_t> bytes);

} // namespace gantry::api
