#include "api/embeddings.h"

#include <boost/json.hpp>

#include <bit>
#include <cstring>

#include "api/json_body.h"
#include "core/utf8.h"

namespace gantry::api {
namespace json = boost::json;
namespace {

Error bad(std::string msg, std::string param) {
  return Error{ErrorCode::kInvalidArgument, std::move(msg), std::move(param)};
}

bool is_integer(const json::value &v) { return v.is_int64() || v.is_uint64(); }

Result<std::vector<int32_t>> token_ids(const json::array &a, const std::string &param) {
  if (a.empty())
    return bad("'" + param + "' must not be an empty array of token ids", param);
  std::vector<int32_t> ids;
  ids.reserve(a.size());
  for (const auto &t : a) {
    if (!is_integer(t))
      return bad("'" + param + "' token ids must be integers", param);
    const int64_t id = t.is_int64() ? t.as_int64() : static_cast<int64_t>(t.as_uint64());
    if (id < 0 || id > INT32_MAX)
      return bad("'" + param + "' token id out of range", param);
    ids.push_back(static_cast<int32_t>(id));
  }
  return ids;
}

Status parse_input(const json::value &v, EmbeddingRequest &r) {
  constexpr const char *kForms = "'input' must be a string, an array of strings, an array of "
                                 "token ids or an array of arrays of token ids";
  if (v.is_string()) {
    if (v.as_string().empty())
      return bad("'input' must not be an empty string", "input");
    r.texts.emplace_back(v.as_string());
    return Ok();
  }
  if (!v.is_array())
    return bad(kForms, "input");
  const auto &a = v.as_array();
  if (a.empty())
    return bad("'input' must not be an empty array", "input");
  if (a.size() > kMaxEmbeddingInputs) {
    return bad("'input' has " + std::to_string(a.size()) + " items; at most " +
                   std::to_string(kMaxEmbeddingInputs) + " are allowed per request",
               "input");
  }
  if (is_integer(a[0])) {
    GANTRY_ASSIGN_OR_RETURN(auto ids, token_ids(a, "input"));
    r.token_inputs.push_back(std::move(ids));
    return Ok();
  }
  for (size_t i = 0; i < a.size(); ++i) {
    const std::string p = "input[" + std::to_string(i) + "]";
    // One request holds one form: mixing text and token ids is refused rather than guessed.
    if (a[0].is_string()) {
      if (!a[i].is_string())
        return bad(kForms, p);
      if (a[i].as_string().empty())
        return bad("'" + p + "' must not be an empty string", p);
      r.texts.emplace_back(a[i].as_string());
    } else if (a[0].is_array()) {
      if (!a[i].is_array())
        return bad(kForms, p);
      GANTRY_ASSIGN_OR_RETURN(auto ids, token_ids(a[i].as_array(), p));
      r.token_inputs.push_back(std::move(ids));
    } else {
      return bad(kForms, p);
    }
  }
  return Ok();
}

} // namespace

Result<EmbeddingRequest> parse_embedding_request(std::string_view body) {
  GANTRY_ASSIGN_OR_RETURN(json::object doc, parse_object_body(body));
  EmbeddingRequest r;
  bool have_model = false, have_input = false;
  for (const auto &[key_sv, v] : doc) {
    const std::string key(key_sv);
    if (key == "model") {
      if (!v.is_string())
        return bad("'model' must be a string", key);
      r.model = std::string(v.as_string());
      have_model = true;
    } else if (key == "input") {
      GANTRY_TRY(parse_input(v, r));
      have_input = true;
    } else if (key == "encoding_format") {
      if (v.is_null())
        continue;
      if (!v.is_string() || (v.as_string() != "float" && v.as_string() != "base64")) {
        return bad("'encoding_format' must be 'float' or 'base64'", key);
      }
      r.base64 = v.as_string() == "base64";
    } else if (key == "dimensions") {
      if (v.is_null())
        continue;
      return bad("'dimensions' is not supported: embeddings have the model's hidden size", key);
    } else if (key == "user") {
      if (!v.is_null() && !v.is_string())
        return bad("'user' must be a string", key);
    } else if (key == "cache") {
      if (v.is_null())
        continue;
      GANTRY_ASSIGN_OR_RETURN(r.cache, parse_cache_option(v));
    } else {
      return bad("Unrecognized request argument supplied: " + echoed(key), echoed(key));
    }
  }
  if (!have_model)
    return bad("you must provide a model parameter", "model");
  if (!have_input)
    return bad("'input' is a required property", "input");
  return r;
}

std::string base64_encode(std::span<const uint8_t> in) {
  static const char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 3 <= in.size(); i += 3) {
    const uint32_t v = (uint32_t{in[i]} << 16) | (uint32_t{in[i + 1]} << 8) | in[i + 2];
    out.push_back(kAlphabet[(v >> 18) & 63]);
    out.push_back(kAlphabet[(v >> 12) & 63]);
    out.push_back(kAlphabet[(v >> 6) & 63]);
    out.push_back(kAlphabet[v & 63]);
  }
  const size_t rest = in.size() - i;
  if (rest > 0) {
    uint32_t v = uint32_t{in[i]} << 16;
    if (rest == 2)
      v |= uint32_t{in[i + 1]} << 8;
    out.push_back(kAlphabet[(v >> 18) & 63]);
    out.push_back(kAlphabet[(v >> 12) & 63]);
    out.push_back(rest == 2 ? kAlphabet[(v >> 6) & 63] : '=');
    out.push_back('=');
  }
  return out;
}

std::string render_embeddings(std::string_view model,
                              const std::vector<std::vector<float>> &vectors, bool base64,
                              int64_t prompt_tokens) {
  json::array data;
  data.reserve(vectors.size());
  for (size_t i = 0; i < vectors.size(); ++i) {
    json::object item{{"object", "embedding"}, {"index", i}};
    if (base64) {
      std::vector<uint8_t> bytes(vectors[i].size() * 4);
      for (size_t j = 0; j < vectors[i].size(); ++j) {
        const auto u = std::bit_cast<uint32_t>(vectors[i][j]);
        for (int b = 0; b < 4; ++b)
          bytes[j * 4 + b] = static_cast<uint8_t>(u >> (8 * b));
      }
      item["embedding"] = base64_encode(bytes);
    } else {
      json::array values;
      values.reserve(vectors[i].size());
      for (float f : vectors[i])
        values.emplace_back(static_cast<double>(f));
      item["embedding"] = std::move(values);
    }
    data.push_back(std::move(item));
  }
  json::object o{{"object", "list"},
                 {"data", std::move(data)},
                 {"model", model},
                 {"usage", {{"prompt_tokens", prompt_tokens}, {"total_tokens", prompt_tokens}}}};
  return json::serialize(o);
}

} // namespace gantry::api
