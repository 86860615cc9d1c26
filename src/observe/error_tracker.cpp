#include "observe/error_tracker.h"

#include <cxxabi.h>
#include <openssl/evp.h>

#include <algorithm>
#include <cstdlib>
#include <memory>
#include <typeinfo>

#include <boost/json.hpp>

namespace gantry::observe {

namespace {

// Bounds per event, so that one pathological message cannot make the tracker large: at most
// max_groups × (these) bytes are ever held.
constexpr std::size_t kMaxMessageBytes = 2048;
constexpr std::size_t kMaxTemplateBytes = 512;
constexpr std::size_t kMaxFieldBytes = 256; // type, location, tag keys and values
constexpr std::size_t kMaxTags = 16;

constexpr std::size_t kKeyIdLength = 12;

// ASCII-only classes: std::isalnum depends on the locale and on the sign of char.
bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool is_alnum(char c) { return is_digit(c) || is_alpha(c); }
bool is_hex(char c) { return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }

// Cuts at a code point boundary so that a truncated message still renders as valid UTF-8.
void truncate_utf8(std::string &s, std::size_t max) {
  if (s.size() <= max)
    return;
  std::size_t cut = max;
  while (cut > 0 && (static_cast<unsigned char>(s[cut]) & 0xC0) == 0x80)
    --cut;
  s.resize(cut);
}

bool all_alnum(std::string_view s, std::size_t from, std::size_t count) {
  if (from + count > s.size())
    return false;
  for (std::size_t k = from; k < from + count; ++k)
    if (!is_alnum(s[k]))
      return false;
  return true;
}

// 8-4-4-4-12 hex digits, not followed by more word characters.
bool uuid_at(std::string_view s, std::size_t i) {
  constexpr std::size_t kLen = 36;
  if (i + kLen > s.size())
    return false;
  for (std::size_t k = 0; k < kLen; ++k) {
    const char c = s[i + k];
    const bool dash = k == 8 || k == 13 || k == 18 || k == 23;
    if (dash ? c != '-' : !is_hex(c))
      return false;
  }
  return i + kLen == s.size() || !is_alnum(s[i + kLen]);
}

// Keys whose values are credentials; such tags are never stored.
bool secret_tag(std::string_view key) {
  std::string k(key);
  std::transform(k.begin(), k.end(), k.begin(),
                 [](char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c + 32) : c; });
  return k == "authorization" || k == "proxy-authorization" || k == "api_key" || k == "apikey" ||
         k == "x-api-key" || k == "cookie";
}

void sanitize(ErrorEvent &event) {
  truncate_utf8(event.type, kMaxFieldBytes);
  truncate_utf8(event.location, kMaxFieldBytes);
  truncate_utf8(event.message, kMaxMessageBytes);
  event.message = redact_secrets(event.message);
  std::map<std::string, std::string> tags;
  for (auto &[key, value] : event.tags) {
    if (tags.size() == kMaxTags)
      break;
    if (secret_tag(key) || key.size() > kMaxFieldBytes)
      continue;
    std::string v = redact_secrets(value);
    truncate_utf8(v, kMaxFieldBytes);
    tags.emplace(key, std::move(v));
  }
  event.tags = std::move(tags);
}

std::vector<TagCounts> sorted_tag_counts(std::vector<TagCounts> counts) {
  for (TagCounts &t : counts) {
    std::stable_sort(t.values.begin(), t.values.end(),
                     [](const TagCount &a, const TagCount &b) { return a.count > b.count; });
  }
  return counts;
}

boost::json::object tags_json(const std::map<std::string, std::string> &tags) {
  boost::json::object o;
  for (const auto &[k, v] : tags)
    o[k] = v;
  return o;
}

} // namespace

ErrorEvent error_event(const Error &error, std::string location) {
  ErrorEvent e;
  e.type = std::string(error_code_name(error.code));
  e.message = error.message;
  e.location = std::move(location);
  e.status = http_status(error.code);
  return e;
}

ErrorEvent exception_event(const std::exception &ex, std::string location) {
  ErrorEvent e;
  const char *mangled = typeid(ex).name();
  int status = 0;
  std::unique_ptr<char, void (*)(void *)> demangled(
      abi::__cxa_demangle(mangled, nullptr, nullptr, &status), std::free);
  e.type = status == 0 && demangled ? demangled.get() : mangled;
  e.message = ex.what();
  e.location = std::move(location);
  e.status = 500;
  return e;
}

std::string message_template(std::string_view m) {
  std::string out;
  out.reserve(std::min(m.size(), kMaxTemplateBytes));
  const std::size_t n = m.size();
  std::size_t i = 0;
  while (i < n && out.size() < kMaxTemplateBytes) {
    const char c = m[i];
    const bool word_start = i == 0 || !is_alnum(m[i - 1]);
    // An apostrophe inside a word ("can't") does not open a quoted string.
    if (c == '"' || (c == '\'' && word_start)) {
      const std::size_t close = m.find(c, i + 1);
      if (close != std::string_view::npos) {
        out += "<s>";
        i = close + 1;
      } else {
        out += c;
        ++i;
      }
      continue;
    }
    if (!is_alnum(c) || !word_start) {
      out += c;
      ++i;
      continue;
    }
    if (m.substr(i, 4) == "gsk_" && all_alnum(m, i + 4, kKeyIdLength)) {
      out += "gsk_<id>";
      i += 4 + kKeyIdLength;
      continue;
    }
    if (uuid_at(m, i)) {
      out += "<id>";
      i += 36;
      continue;
    }
    std::size_t end = i;
    bool digits = false, letters = false, hex = true;
    while (end < n && is_alnum(m[end])) {
      digits |= is_digit(m[end]);
      letters |= is_alpha(m[end]);
      hex &= is_hex(m[end]);
      ++end;
    }
    const std::string_view token = m.substr(i, end - i);
    const bool prefixed_hex = token.size() > 2 && token[0] == '0' &&
                              (token[1] == 'x' || token[1] == 'X') &&
                              std::all_of(token.begin() + 2, token.end(), is_hex);
    // Letters and digits mixed over a long run are random ids (request ids, hashes), while short
    // ones are names ("utf8", "H100", "layer12") that belong in the template.
    if (prefixed_hex || (hex && digits && letters && token.size() >= 8) ||
        (digits && letters && token.size() >= 16)) {
      out += "<id>";
      i = end;
    } else if (is_digit(c)) {
      std::size_t k = i;
      while (k < n && is_digit(m[k]))
        ++k;
      if (k + 1 < n && m[k] == '.' && is_digit(m[k + 1])) {
        ++k;
        while (k < n && is_digit(m[k]))
          ++k;
      }
      out += "<n>"; // a unit that follows ("12ms") stays
      i = k;
    } else {
      out.append(token);
      i = end;
    }
  }
  truncate_utf8(out, kMaxTemplateBytes);
  return out;
}

std::string redact_secrets(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  std::size_t i = 0;
  while (i < text.size()) {
    const std::size_t at = text.find("gsk_", i);
    if (at == std::string_view::npos)
      break;
    const std::size_t sep = at + 4 + kKeyIdLength;
    if (all_alnum(text, at + 4, kKeyIdLength) && sep + 1 < text.size() && text[sep] == '_' &&
        is_alnum(text[sep + 1])) {
      // Deliberately wider than the exact 43-character secret: a mistyped or truncated secret
      // is still most of a secret, and '_' is included so that a second key glued onto the
      // first ("gsk_<id>_<secret>gsk_<id>_<secret>") cannot leave its secret behind.
      std::size_t end = sep + 1;
      while (end < text.size() && (is_alnum(text[end]) || text[end] == '_'))
        ++end;
      out.append(text.substr(i, sep + 1 - i));
      out += "***";
      i = end;
    } else {
      out.append(text.substr(i, at + 4 - i));
      i = at + 4;
    }
  }
  out.append(text.substr(i));
  return out;
}

std::string error_fingerprint(std::string_view type, std::string_view tmpl,
                              std::string_view location) {
  std::string input;
  input.reserve(type.size() + tmpl.size() + location.size() + 2);
  input.append(type).push_back('\0');
  input.append(tmpl).push_back('\0');
  input.append(location);
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_Digest(input.data(), input.size(), md, &len, EVP_sha256(), nullptr) != 1)
    throw std::runtime_error("EVP_Digest(sha256) failed");
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (int k = 0; k < 8; ++k) {
    out += kHex[md[k] >> 4];
    out += kHex[md[k] & 0xF];
  }
  return out;
}

ErrorTracker::ErrorTracker(const Clock &clock, ErrorTrackerOptions options, ErrorSink *sink)
    : clock_(clock), options_(std::move(options)), sink_(sink) {}

CaptureResult ErrorTracker::capture(ErrorEvent event) {
  sanitize(event);
  std::string tmpl = message_template(event.message);
  CaptureResult result{error_fingerprint(event.type, tmpl, event.location), false, 0};
  ErrorEvent sample = event; // copied outside the lock; `event` still goes to the sink
  const std::int64_t now = clock_.unix_seconds();
  {
    std::lock_guard<std::mutex> lk(mu_);
    ++stats_.captured;
    auto found = by_fingerprint_.find(result.fingerprint);
    if (found == by_fingerprint_.end()) {
      if (lru_.size() >= std::max<std::size_t>(options_.max_groups, 1)) {
        by_fingerprint_.erase(lru_.back().fingerprint);
        lru_.pop_back();
        ++stats_.groups_evicted;
      }
      lru_.emplace_front();
      ErrorGroup &g = lru_.front();
      g.fingerprint = result.fingerprint;
      g.type = event.type;
      g.message_template = std::move(tmpl);
      g.location = event.location;
      g.first_seen = now;
      by_fingerprint_.emplace(result.fingerprint, lru_.begin());
      result.new_group = true;
    } else {
      lru_.splice(lru_.begin(), lru_, found->second);
    }
    ErrorGroup &g = lru_.front();
    ++g.count;
    g.last_seen = now;
    count_tags(g, sample.tags);
    g.sample = std::move(sample);
    result.count = g.count;
    stats_.groups = lru_.size();
  }
  if (sink_)
    sink_->on_error(event, result);
  return result;
}

// Space-saving top-k: a new value displaces the rarest one and inherits its count plus one, so
// frequent values stay and a value's count is exact until it has displaced another.
void ErrorTracker::count_tags(ErrorGroup &group, const std::map<std::string, std::string> &tags) {
  for (const std::string &key : options_.counted_tags) {
    auto tag = tags.find(key);
    if (tag == tags.end())
      continue;
    auto counts = std::find_if(group.tag_counts.begin(), group.tag_counts.end(),
                               [&](const TagCounts &t) { return t.key == key; });
    if (counts == group.tag_counts.end()) {
      group.tag_counts.push_back(TagCounts{key, {}});
      counts = group.tag_counts.end() - 1;
    }
    auto &values = counts->values;
    auto same = std::find_if(values.begin(), values.end(),
                             [&](const TagCount &v) { return v.value == tag->second; });
    if (same != values.end()) {
      ++same->count;
    } else if (values.size() < std::max<std::size_t>(options_.max_tag_values, 1)) {
      values.push_back(TagCount{tag->second, 1});
    } else {
      auto rarest =
          std::min_element(values.begin(), values.end(),
                           [](const TagCount &a, const TagCount &b) { return a.count < b.count; });
      rarest->value = tag->second;
      ++rarest->count;
      ++stats_.tag_values_replaced;
    }
  }
}

std::vector<ErrorGroup> ErrorTracker::groups(std::size_t limit) const {
  std::vector<ErrorGroup> out;
  {
    std::lock_guard<std::mutex> lk(mu_);
    out.reserve(std::min(limit, lru_.size()));
    for (const ErrorGroup &g : lru_) {
      if (out.size() == limit)
        break;
      out.push_back(g);
    }
  }
  for (ErrorGroup &g : out)
    g.tag_counts = sorted_tag_counts(std::move(g.tag_counts));
  return out;
}

std::string ErrorTracker::render_json(std::size_t limit) const {
  std::vector<ErrorGroup> snapshot = groups(limit == SIZE_MAX ? limit : limit + 1);
  const bool has_more = snapshot.size() > limit;
  if (has_more)
    snapshot.pop_back();
  boost::json::array data;
  for (const ErrorGroup &g : snapshot) {
    boost::json::object tag_counts;
    for (const TagCounts &t : g.tag_counts) {
      boost::json::array values;
      for (const TagCount &v : t.values)
        values.push_back(boost::json::object{{"value", v.value}, {"count", v.count}});
      tag_counts[t.key] = std::move(values);
    }
    data.push_back(boost::json::object{
        {"id", g.fingerprint},
        {"object", "error_group"},
        {"fingerprint", g.fingerprint},
        {"type", g.type},
        {"message_template", g.message_template},
        {"location", g.location},
        {"count", g.count},
        {"first_seen", g.first_seen},
        {"last_seen", g.last_seen},
        {"sample", boost::json::object{{"message", g.sample.message},
                                       {"status", g.sample.status},
                                       {"tags", tags_json(g.sample.tags)}}},
        {"tag_counts", std::move(tag_counts)},
    });
  }
  return boost::json::serialize(
      boost::json::object{{"object", "list"}, {"data", std::move(data)}, {"has_more", has_more}});
}

ErrorTrackerStats ErrorTracker::stats() const {
  std::lock_guard<std::mutex> lk(mu_);
  return stats_;
}

} // namespace gantry::observe
