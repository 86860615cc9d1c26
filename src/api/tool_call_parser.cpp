#include "api/tool_call_parser.h"

#include <boost/json.hpp>

#include <optional>

namespace gantry::api {
namespace json = boost::json;
namespace {

constexpr std::string_view kHermesOpen = "<tool_call>";
constexpr std::string_view kHermesClose = "</tool_call>";
constexpr std::string_view kMistralMarker = "[TOOL_CALLS]";
constexpr std::string_view kPythonTag = "<|python_tag|>";

bool is_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

std::size_t skip_ws(std::string_view s, std::size_t i) {
  while (i < s.size() && is_ws(s[i]))
    ++i;
  return i;
}

std::string_view trim(std::string_view s) {
  const std::size_t b = skip_ws(s, 0);
  std::size_t e = s.size();
  while (e > b && is_ws(s[e - 1]))
    --e;
  return s.substr(b, e - b);
}

// The length of the longest suffix of `s` that is a proper prefix of `marker`: the bytes that
// must wait for the next piece before they can be released as content.
std::size_t partial_marker(std::string_view s, std::string_view marker) {
  for (std::size_t n = std::min(s.size(), marker.size() - 1); n > 0; --n) {
    if (s.substr(s.size() - n) == marker.substr(0, n))
      return n;
  }
  return 0;
}

// The end of the JSON value starting at s[i] (strings, nesting and scalars; not a validator —
// what it delimits is parsed by Boost.JSON afterwards); npos when it does not end within s.
std::size_t value_end(std::string_view s, std::size_t i) {
  if (i >= s.size())
    return std::string_view::npos;
  if (s[i] == '"') {
    for (std::size_t j = i + 1; j < s.size(); ++j) {
      if (s[j] == '\\')
        ++j;
      else if (s[j] == '"')
        return j + 1;
    }
    return std::string_view::npos;
  }
  if (s[i] == '{' || s[i] == '[') {
    int depth = 0;
    for (std::size_t j = i; j < s.size(); ++j) {
      const char c = s[j];
      if (c == '"') {
        const std::size_t e = value_end(s, j);
        if (e == std::string_view::npos)
          return e;
        j = e - 1;
      } else if (c == '{' || c == '[') {
        ++depth;
      } else if (c == '}' || c == ']') {
        if (--depth == 0)
          return j + 1;
      }
    }
    return std::string_view::npos;
  }
  std::size_t j = i;
  while (j < s.size() && !is_ws(s[j]) && s[j] != ',' && s[j] != '}' && s[j] != ']' && s[j] != ';')
    ++j;
  return j;
}

// The raw text of the top-level member `key` of the object text `obj` (already validated).
std::optional<std::string_view> member_text(std::string_view obj, std::string_view key) {
  std::size_t i = skip_ws(obj, 0);
  if (i >= obj.size() || obj[i] != '{')
    return std::nullopt;
  i = skip_ws(obj, i + 1);
  while (i < obj.size() && obj[i] == '"') {
    const std::size_t kend = value_end(obj, i);
    if (kend == std::string_view::npos)
      return std::nullopt;
    const std::string_view k = obj.substr(i + 1, kend - i - 2);
    i = skip_ws(obj, kend);
    if (i >= obj.size() || obj[i] != ':')
      return std::nullopt;
    i = skip_ws(obj, i + 1);
    const std::size_t vend = value_end(obj, i);
    if (vend == std::string_view::npos)
      return std::nullopt;
    if (k == key)
      return obj.substr(i, vend - i);
    i = skip_ws(obj, vend);
    if (i < obj.size() && obj[i] == ',')
      i = skip_ws(obj, i + 1);
  }
  return std::nullopt;
}

struct ParsedCall {
  std::string name;
  std::string arguments;
};

// One call object: {"name": "...", "arguments"|"parameters": {...} or "<json text>"}.
std::optional<ParsedCall> parse_call(std::string_view text, const json::value &v) {
  if (!v.is_object())
    return std::nullopt;
  const json::object &o = v.as_object();
  const json::value *name = o.if_contains("name");
  if (!name || !name->is_string() || name->as_string().empty())
    return std::nullopt;
  ParsedCall c;
  c.name = std::string(name->as_string());
  const char *key = o.contains("arguments") ? "arguments" : "parameters";
  const json::value *args = o.if_contains(key);
  if (!args) {
    c.arguments = "{}";
  } else if (args->is_string()) {
    // Some models write the arguments as JSON text inside a string: accepted only when that
    // text is an object, so every released call's arguments parse (found by the fuzzer: a
    // string like "f" was released as the arguments f).
    json::error_code ec;
    const json::value inner = json::parse(args->as_string(), ec);
    if (ec || !inner.is_object())
      return std::nullopt;
    c.arguments = std::string(args->as_string());
  } else if (args->is_object()) {
    const auto raw = member_text(text, key);
    c.arguments = raw ? std::string(*raw) : json::serialize(*args);
  } else {
    return std::nullopt;
  }
  return c;
}

std::optional<json::value> parse_json(std::string_view text) {
  json::error_code ec;
  json::value v = json::parse(text, ec);
  if (ec)
    return std::nullopt;
  return v;
}

// Calls in `text`: an array of call objects, {"tool_calls": [...]}, or call objects one after
// another (separated by whitespace or ';', Llama 3's habit).
std::optional<std::vector<ParsedCall>> parse_calls(std::string_view text) {
  std::vector<ParsedCall> calls;
  auto add_array = [&](std::string_view arr) -> bool {
    std::size_t i = skip_ws(arr, 1);
    while (i < arr.size() && arr[i] != ']') {
      const std::size_t e = value_end(arr, i);
      if (e == std::string_view::npos)
        return false;
      auto v = parse_json(arr.substr(i, e - i));
      auto c = v ? parse_call(arr.substr(i, e - i), *v) : std::nullopt;
      if (!c)
        return false;
      calls.push_back(std::move(*c));
      i = skip_ws(arr, e);
      if (i < arr.size() && arr[i] == ',')
        i = skip_ws(arr, i + 1);
    }
    return true;
  };
  std::size_t i = skip_ws(text, 0);
  while (i < text.size()) {
    const std::size_t e = value_end(text, i);
    if (e == std::string_view::npos)
      return std::nullopt;
    const std::string_view one = text.substr(i, e - i);
    auto v = parse_json(one);
    if (!v)
      return std::nullopt;
    if (v->is_array()) {
      if (!add_array(one))
        return std::nullopt;
    } else if (v->is_object() && v->as_object().contains("tool_calls")) {
      const auto raw = member_text(one, "tool_calls");
      if (!raw || !v->as_object().at("tool_calls").is_array() || !add_array(*raw))
        return std::nullopt;
    } else if (auto c = parse_call(one, *v)) {
      calls.push_back(std::move(*c));
    } else {
      return std::nullopt;
    }
    i = skip_ws(text, e);
    while (i < text.size() && (text[i] == ';' || is_ws(text[i])))
      ++i;
  }
  if (calls.empty())
    return std::nullopt;
  return calls;
}

enum class Verdict { kNo, kMaybe, kYes };

// Whether a reply beginning with `s` (whitespace trimmed) is a call object of the whole-reply
// formats: "{" then one of `keys` as its first member name.
Verdict starts_like_call(std::string_view s, std::initializer_list<std::string_view> keys) {
  if (s.empty())
    return Verdict::kMaybe;
  if (s[0] != '{')
    return Verdict::kNo;
  const std::string_view r = s.substr(skip_ws(s, 1));
  if (r.empty())
    return Verdict::kMaybe;
  for (std::string_view k : keys) {
    if (r.starts_with(k))
      return Verdict::kYes;
    if (k.starts_with(r))
      return Verdict::kMaybe;
  }
  return Verdict::kNo;
}

} // namespace

ToolCallParser::ToolCallParser(ToolStyle style, bool parallel, uint64_t seed)
    : style_(style), parallel_(parallel), rng_(seed),
      mode_(style == ToolStyle::kHermes || style == ToolStyle::kMistral ? Mode::kText
                                                                        : Mode::kStart) {}

ToolParse ToolCallParser::push(std::string_view text) {
  ToolParse out;
  held_ += text;
  process(out);
  return out;
}

void ToolCallParser::process(ToolParse &out) {
  switch (mode_) {
  case Mode::kStart: process_start(out); break;
  case Mode::kText: process_text(out); break;
  case Mode::kInCall: process_in_call(out); break;
  case Mode::kToEnd:
    if (held_.size() > kMaxHeldBytes) {
      release_all_as_content(out);
      mode_ = Mode::kPassThrough;
    }
    break;
  case Mode::kPassThrough:
    out.content += held_;
    held_.clear();
    break;
  }
}

void ToolCallParser::process_start(ToolParse &out) {
  const std::string_view t = trim(held_);
  if (style_ == ToolStyle::kLlama3) {
    if (t.starts_with(kPythonTag)) {
      marker_ = held_.substr(0, held_.find(kPythonTag) + kPythonTag.size());
      held_.erase(0, marker_.size());
      mode_ = Mode::kToEnd;
      process(out);
      return;
    }
    if (!t.empty() && kPythonTag.starts_with(t))
      return;
  }
  const Verdict v = style_ == ToolStyle::kLlama3
                        ? starts_like_call(t, {"\"name\""})
                        : starts_like_call(t, {"\"tool_calls\"", "\"name\""});
  if (v == Verdict::kMaybe)
    return;
  mode_ = v == Verdict::kYes ? Mode::kToEnd : Mode::kPassThrough;
  process(out);
}

void ToolCallParser::process_text(ToolParse &out) {
  if (after_call_) { // the line breaks between calls are not content
    held_.erase(0, skip_ws(held_, 0));
    if (held_.empty())
      return;
    after_call_ = false;
  }
  const std::string_view marker = style_ == ToolStyle::kHermes ? kHermesOpen : kMistralMarker;
  const std::size_t p = held_.find(marker);
  if (p == std::string::npos) {
    const std::size_t keep = partial_marker(held_, marker);
    out.content.append(held_, 0, held_.size() - keep);
    held_.erase(0, held_.size() - keep);
    return;
  }
  out.content.append(held_, 0, p);
  marker_ = std::string(marker);
  held_.erase(0, p + marker.size());
  mode_ = style_ == ToolStyle::kHermes ? Mode::kInCall : Mode::kToEnd;
  process(out);
}

void ToolCallParser::process_in_call(ToolParse &out) {
  const std::size_t p = held_.find(kHermesClose);
  if (p == std::string::npos) {
    if (held_.size() > kMaxHeldBytes) {
      release_all_as_content(out);
      mode_ = Mode::kPassThrough;
    }
    return;
  }
  const std::string body = held_.substr(0, p);
  if (emit_calls(body, false, out))
    after_call_ = true;
  else
    out.content += marker_ + body + std::string(kHermesClose);
  held_.erase(0, p + kHermesClose.size());
  marker_.clear();
  mode_ = Mode::kText;
  process(out);
}

ToolParse ToolCallParser::finish() {
  ToolParse out;
  if (after_call_ && mode_ == Mode::kText)
    held_.erase(0, skip_ws(held_, 0));
  switch (mode_) {
  case Mode::kInCall:
  case Mode::kToEnd:
    if (!emit_calls(held_, mode_ == Mode::kToEnd, out))
      release_all_as_content(out);
    break;
  default: release_all_as_content(out); break;
  }
  held_.clear();
  marker_.clear();
  mode_ = Mode::kPassThrough;
  return out;
}

void ToolCallParser::release_all_as_content(ToolParse &out) {
  out.content += marker_;
  out.content += held_;
  marker_.clear();
  held_.clear();
}

bool ToolCallParser::emit_calls(std::string_view body, bool whole_reply, ToolParse &out) {
  auto calls = parse_calls(body);
  if (!calls)
    return false;
  // A Hermes block holds one call; a whole reply may hold several.
  if (!whole_reply && calls->size() != 1)
    return false;
  for (auto &c : *calls)
    emit_call(std::move(c.name), std::move(c.arguments), out);
  return true;
}

void ToolCallParser::emit_call(std::string name, std::string arguments, ToolParse &out) {
  if (!parallel_ && calls_ >= 1)
    return;
  ToolCallDelta head;
  head.index = calls_;
  head.id = new_id();
  head.name = std::move(name);
  out.calls.push_back(std::move(head));
  ToolCallDelta args;
  args.index = calls_;
  args.arguments = std::move(arguments);
  out.calls.push_back(std::move(args));
  ++calls_;
}

std::string ToolCallParser::new_id() {
  static constexpr std::string_view kAlphabet =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  std::string id = "call_";
  for (int i = 0; i < 24; ++i)
    id += kAlphabet[rng_() % kAlphabet.size()];
  return id;
}

} // namespace gantry::api
