// The kind-independent parts of the wire: kind names, model lists, message scrubbing and
// Retry-After.
#include "backend/remote/wire.h"

#include <boost/json.hpp>

#include <algorithm>
#include <cctype>
#include <charconv>

#include "core/utf8.h"

namespace gantry::backend::remote {
namespace json = boost::json;

std::unique_ptr<WireCodec> make_openai_codec(BackendKind kind); // openai_wire.cpp
std::unique_ptr<WireCodec> make_anthropic_codec();              // anthropic_wire.cpp

Result<BackendKind> backend_kind_from_name(std::string_view name) {
  if (name.empty() || name == "openai-compatible")
    return BackendKind::kOpenAICompatible;
  if (name == "openai")
    return BackendKind::kOpenAI;
  if (name == "anthropic")
    return BackendKind::kAnthropic;
  return Err(Error::invalid("unknown backend kind '" + echoed(name) +
                            "' (openai-compatible, openai, anthropic)"));
}

std::string_view backend_kind_name(BackendKind kind) {
  switch (kind) {
  case BackendKind::kOpenAICompatible: return "openai-compatible";
  case BackendKind::kOpenAI: return "openai";
  case BackendKind::kAnthropic: return "anthropic";
  }
  return "openai-compatible";
}

std::unique_ptr<WireCodec> make_codec(BackendKind kind) {
  if (kind == BackendKind::kAnthropic)
    return make_anthropic_codec();
  return make_openai_codec(kind);
}

Result<std::vector<std::string>> parse_model_list(std::string_view body) {
  json::parse_options po;
  po.allow_invalid_utf8 = true;
  json::error_code ec;
  json::value v = json::parse(body, ec, {}, po);
  if (ec || !v.is_object())
    return Err(Error::io("upstream /models: not a JSON object"));
  const json::value *data = v.as_object().if_contains("data");
  if (!data || !data->is_array())
    return Err(Error::io("upstream /models: no \"data\" list"));
  std::vector<std::string> out;
  for (const json::value &m : data->as_array()) {
    if (out.size() >= 1000)
      break; // bounded; a choice among more is named in the config anyway
    if (!m.is_object())
      continue;
    if (const json::value *id = m.as_object().if_contains("id"); id && id->is_string())
      out.push_back(utf8_sanitize(std::string_view(id->as_string())));
  }
  return out;
}

Result<std::string> choose_upstream_model(std::string_view configured,
                                          const std::vector<std::string> &listed,
                                          std::string_view backend_label) {
  if (!configured.empty())
    return std::string(configured);
  if (listed.size() == 1)
    return listed.front();
  if (listed.empty())
    return Err(Error::invalid("backend " + std::string(backend_label) +
                              " lists no model at /v1/models; name one with `model = \"...\"`"));
  std::string names;
  for (std::size_t i = 0; i < listed.size() && i < 8; ++i)
    names += (i ? ", " : "") + echoed(listed[i]);
  if (listed.size() > 8)
    names += ", ...";
  return Err(Error::invalid("backend " + std::string(backend_label) + " serves " +
                            std::to_string(listed.size()) + " models (" + names +
                            "); name the one to use with `model = \"...\"`"));
}

std::optional<double> plausible_cost(double usd) {
  if (!(usd >= 0 && usd <= 1e6)) // also false for NaN
    return std::nullopt;
  return usd;
}

std::optional<double> parse_cost(std::string_view text) {
  double d = -1;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), d);
  if (ec != std::errc() || end != text.data() + text.size())
    return std::nullopt;
  return plausible_cost(d);
}

namespace {

bool key_char(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.';
}

// Replaces every occurrence of `needle` (case-sensitive) by "***".
void redact(std::string &s, std::string_view needle) {
  if (needle.size() < 4)
    return; // too short to be a secret; redacting it would garble the message
  for (std::size_t p = s.find(needle); p != std::string::npos; p = s.find(needle, p + 3))
    s.replace(p, needle.size(), "***");
}

} // namespace

std::string scrub_upstream_message(std::string_view text, const std::vector<std::string> &secrets,
                                   std::size_t max_bytes) {
  // Work on a bounded prefix: the scrubbing below is linear, the input may be huge.
  std::string s(text.substr(0, std::min<std::size_t>(text.size(), 4 * max_bytes + 64)));
  for (const auto &secret : secrets)
    redact(s, secret);
  // URL user-info: "scheme://user:pass@" → "scheme://***@".
  for (std::size_t p = s.find("://"); p != std::string::npos; p = s.find("://", p + 3)) {
    const std::size_t start = p + 3;
    std::size_t end = start;
    while (end < s.size() && s[end] != '@' && s[end] != '/' && s[end] != ' ' && s[end] != '"')
      ++end;
    if (end < s.size() && s[end] == '@')
      s.replace(start, end - start, "***");
  }
  // Bearer tokens and provider-style keys ("sk-...", "sk-ant-...", Gantry's "gsk_...").
  struct Marker {
    std::string_view text;
    bool keep; // keep the marker itself ("Bearer ***")
  };
  for (const Marker m : {Marker{"Bearer ", true}, Marker{"bearer ", true}, Marker{"sk-", false},
                         Marker{"gsk_", false}}) {
    for (std::size_t p = s.find(m.text); p != std::string::npos; p = s.find(m.text, p + 1)) {
      std::size_t end = p + m.text.size();
      while (end < s.size() && key_char(s[end]))
        ++end;
      if (end - (p + m.text.size()) < 8)
        continue;
      const std::size_t from = m.keep ? p + m.text.size() : p;
      s.replace(from, end - from, "***");
    }
  }
  return utf8_truncate(s, max_bytes);
}

int64_t retry_after_ms(std::optional<std::string_view> retry_after,
                       std::optional<std::string_view> retry_after_ms_header) {
  auto number = [](std::string_view v, double &out) {
    while (!v.empty() && v.front() == ' ')
      v.remove_prefix(1);
    while (!v.empty() && v.back() == ' ')
      v.remove_suffix(1);
    if (v.empty())
      return false;
    auto [ptr, ec] = std::from_chars(v.data(), v.data() + v.size(), out);
    return ec == std::errc() && ptr == v.data() + v.size() && out >= 0 && out < 1e9;
  };
  double v = 0;
  if (retry_after_ms_header && number(*retry_after_ms_header, v))
    return static_cast<int64_t>(v);
  if (retry_after && number(*retry_after, v))
    return static_cast<int64_t>(v * 1000);
  return 0;
}

} // namespace gantry::backend::remote
