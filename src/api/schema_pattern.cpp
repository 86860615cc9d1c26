#include "api/schema_pattern.h"

#include <algorithm>
#include <utility>
#include <vector>

namespace gantry::api {

namespace {

using Ranges = std::vector<std::pair<uint32_t, uint32_t>>;

constexpr uint32_t kMaxCp = 0x10FFFF;
constexpr int kMaxGroupDepth = 32;
constexpr int kMaxRepeat = 1000;

Ranges normalize(Ranges r) {
  std::sort(r.begin(), r.end());
  Ranges out;
  for (const auto &[lo, hi] : r) {
    if (!out.empty() && lo <= out.back().second + 1)
      out.back().second = std::max(out.back().second, hi);
    else
      out.emplace_back(lo, hi);
  }
  return out;
}

Ranges complement(const Ranges &r) {
  Ranges out;
  uint32_t next = 0;
  for (const auto &[lo, hi] : normalize(r)) {
    if (lo > next)
      out.emplace_back(next, lo - 1);
    next = hi + 1;
  }
  if (next <= kMaxCp)
    out.emplace_back(next, kMaxCp);
  return out;
}

Ranges intersect(const Ranges &a, const Ranges &b) {
  Ranges out;
  for (const auto &[alo, ahi] : normalize(a))
    for (const auto &[blo, bhi] : normalize(b)) {
      const uint32_t lo = std::max(alo, blo), hi = std::min(ahi, bhi);
      if (lo <= hi)
        out.emplace_back(lo, hi);
    }
  return normalize(out);
}

// What an unescaped JSON string character may be.
const Ranges &safe() {
  static const Ranges s = {{0x20, 0x21}, {0x23, 0x5B}, {0x5D, 0x7E}, {0x80, kMaxCp}};
  return s;
}

std::string class_char(uint32_t c) {
  static const char *hex = "0123456789abcdef";
  if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
    return std::string(1, static_cast<char>(c));
  const int digits = c < 0x100 ? 2 : c < 0x10000 ? 4 : 8;
  std::string out = digits == 2 ? "\\x" : digits == 4 ? "\\u" : "\\U";
  for (int i = digits - 1; i >= 0; --i)
    out += hex[(c >> (4 * i)) & 15];
  return out;
}

std::string gbnf_class(const Ranges &r) {
  std::string out = "[";
  for (const auto &[lo, hi] : r) {
    out += class_char(lo);
    if (hi != lo)
      out += "-" + class_char(hi);
  }
  return out + "]";
}

std::string utf8(uint32_t c) {
  std::string s;
  if (c < 0x80) {
    s += static_cast<char>(c);
  } else if (c < 0x800) {
    s += static_cast<char>(0xC0 | (c >> 6));
    s += static_cast<char>(0x80 | (c & 0x3F));
  } else if (c < 0x10000) {
    s += static_cast<char>(0xE0 | (c >> 12));
    s += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (c & 0x3F));
  } else {
    s += static_cast<char>(0xF0 | (c >> 18));
    s += static_cast<char>(0x80 | ((c >> 12) & 0x3F));
    s += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (c & 0x3F));
  }
  return s;
}

// One character of the string value, as its JSON spelling.
std::string json_char(uint32_t c) {
  static const char *hex = "0123456789abcdef";
  switch (c) {
  case '"': return gbnf_literal("\\\"");
  case '\\': return gbnf_literal("\\\\");
  case '\n': return gbnf_literal("\\n");
  case '\r': return gbnf_literal("\\r");
  case '\t': return gbnf_literal("\\t");
  default:
    if (c < 0x20 || c == 0x7F)
      return gbnf_literal(std::string("\\u00") + hex[c >> 4] + hex[c & 15]);
    return gbnf_literal(utf8(c));
  }
}

class Regex {
public:
  Regex(std::string_view p, const std::string &any) : p_(p), any_(any) {}

  Result<std::string> run() {
    bool start = false, end = false;
    if (!p_.empty() && p_.front() == '^') {
      start = true;
      base_ = 1;
      p_.remove_prefix(1);
    }
    if (!p_.empty() && p_.back() == '$') {
      size_t slashes = 0;
      for (size_t k = p_.size() - 1; k > 0 && p_[k - 1] == '\\'; --k)
        ++slashes;
      if (slashes % 2 == 0) {
        end = true;
        p_.remove_suffix(1);
      }
    }
    int branches = 0;
    GANTRY_ASSIGN_OR_RETURN(std::string body, alternation(0, &branches));
    if (i_ < p_.size())
      return fail("unbalanced ')'");
    if (branches > 1 && (start || end))
      return fail("anchors around a top-level '|' (group the alternatives)");
    std::string out = "(" + body + ")";
    if (!start)
      out = any_ + "* " + out;
    if (!end)
      out += " " + any_ + "*";
    return out;
  }

private:
  Error fail(const std::string &what) const {
    return Error::invalid("pattern " + what + " at offset " + std::to_string(i_ + base_));
  }
  bool more() const { return i_ < p_.size(); }
  char peek() const { return more() ? p_[i_] : '\0'; }

  Result<uint32_t> code_point() {
    const auto c = static_cast<unsigned char>(p_[i_]);
    const int len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (len == 0 || i_ + len > p_.size())
      return fail("holds invalid UTF-8");
    uint32_t v = len == 1 ? c : c & (0x7F >> len);
    for (int k = 1; k < len; ++k)
      v = (v << 6) | (static_cast<unsigned char>(p_[i_ + k]) & 0x3F);
    i_ += len;
    return v;
  }

  Result<std::string> alternation(int depth, int *branches) {
    if (depth > kMaxGroupDepth)
      return fail("groups nested too deep");
    std::string out;
    GANTRY_ASSIGN_OR_RETURN(std::string seq, sequence(depth));
    out = seq;
    *branches = 1;
    while (peek() == '|') {
      ++i_;
      GANTRY_ASSIGN_OR_RETURN(std::string next, sequence(depth));
      out += " | " + next;
      ++*branches;
    }
    return out;
  }

  Result<std::string> sequence(int depth) {
    std::string out;
    while (more() && peek() != '|' && peek() != ')') {
      GANTRY_ASSIGN_OR_RETURN(std::string a, atom(depth));
      GANTRY_ASSIGN_OR_RETURN(std::string q, quantifier());
      out += (out.empty() ? "" : " ") + a + q;
    }
    return out.empty() ? std::string("\"\"") : out;
  }

  Result<std::string> quantifier() {
    std::string q;
    const char c = peek();
    if (c == '*' || c == '+' || c == '?') {
      ++i_;
      q = std::string(1, c);
    } else if (c == '{') {
      const size_t start = i_++;
      auto number = [&]() -> int {
        int v = -1;
        while (peek() >= '0' && peek() <= '9') {
          v = std::max(v, 0) * 10 + (peek() - '0');
          if (v > kMaxRepeat)
            return kMaxRepeat + 1;
          ++i_;
        }
        return v;
      };
      const int m = number();
      int n = m;
      if (peek() == ',') {
        ++i_;
        n = number();
      }
      if (m < 0 || peek() != '}') {
        i_ = start;
        return fail("repetition '{' is malformed");
      }
      ++i_;
      if (m > kMaxRepeat || n > kMaxRepeat)
        return fail("repetition above " + std::to_string(kMaxRepeat));
      if (n >= 0 && n < m)
        return fail("repetition maximum below its minimum");
      q = "{" + std::to_string(m) + (n == m ? "" : "," + (n < 0 ? "" : std::to_string(n))) + "}";
    } else {
      return q;
    }
    if (peek() == '?')
      ++i_; // lazy: the same strings match
    else if (peek() == '+')
      return fail("possessive quantifier");
    return q;
  }

  // \d \w \s and their negations, as ranges; false when `e` is not one.
  static bool class_escape(char e, Ranges &out) {
    Ranges r;
    switch (e) {
    case 'd':
    case 'D': r = {{'0', '9'}}; break;
    case 'w':
    case 'W': r = {{'0', '9'}, {'A', 'Z'}, {'_', '_'}, {'a', 'z'}}; break;
    case 's':
    case 'S': r = {{'\t', '\r'}, {' ', ' '}}; break;
    default: return false;
    }
    out = (e >= 'A' && e <= 'Z') ? complement(r) : r;
    return true;
  }

  // The character after a backslash (not a class escape).
  Result<uint32_t> escaped_char() {
    const char e = peek();
    ++i_;
    switch (e) {
    case 'n': return uint32_t{'\n'};
    case 't': return uint32_t{'\t'};
    case 'r': return uint32_t{'\r'};
    case 'f': return uint32_t{'\f'};
    case 'v': return uint32_t{'\v'};
    case '0': return uint32_t{0};
    case 'u':
    case 'x': {
      const int digits = e == 'u' ? 4 : 2;
      uint32_t v = 0;
      for (int k = 0; k < digits; ++k) {
        const char h = peek();
        const int d = (h >= '0' && h <= '9')   ? h - '0'
                      : (h >= 'a' && h <= 'f') ? h - 'a' + 10
                      : (h >= 'A' && h <= 'F') ? h - 'A' + 10
                                               : -1;
        if (d < 0)
          return fail(std::string("escape \\") + e + " needs hex digits");
        v = v * 16 + static_cast<uint32_t>(d);
        ++i_;
      }
      return v;
    }
    case 'b':
    case 'B': return fail("word boundary \\b");
    default:
      if (e >= '1' && e <= '9')
        return fail("backreference");
      if ((e >= 'a' && e <= 'z') || (e >= 'A' && e <= 'Z'))
        return fail(std::string("escape \\") + e);
      --i_;
      return code_point(); // \. \\ \/ \- \[ ...
    }
  }

  Result<std::string> atom(int depth) {
    const char c = peek();
    if (c == '(') {
      ++i_;
      if (peek() == '?') {
        if (p_.substr(i_, 2) != "?:")
          return fail("group kind (?" + std::string(1, i_ + 1 < p_.size() ? p_[i_ + 1] : ' ') +
                      " (lookaround and named groups)");
        i_ += 2;
      }
      int branches = 0;
      GANTRY_ASSIGN_OR_RETURN(std::string inner, alternation(depth + 1, &branches));
      if (peek() != ')')
        return fail("group without ')'");
      ++i_;
      return "(" + inner + ")";
    }
    if (c == '[') {
      ++i_;
      bool negate = false;
      if (peek() == '^') {
        negate = true;
        ++i_;
      }
      Ranges r;
      bool first = true;
      while (more() && (peek() != ']' || first)) {
        first = false;
        uint32_t lo;
        if (peek() == '\\') {
          ++i_;
          Ranges esc;
          if (class_escape(peek(), esc)) {
            ++i_;
            r.insert(r.end(), esc.begin(), esc.end());
            continue;
          }
          GANTRY_ASSIGN_OR_RETURN(lo, escaped_char());
        } else {
          GANTRY_ASSIGN_OR_RETURN(lo, code_point());
        }
        uint32_t hi = lo;
        if (peek() == '-' && i_ + 1 < p_.size() && p_[i_ + 1] != ']') {
          ++i_;
          if (peek() == '\\') {
            ++i_;
            GANTRY_ASSIGN_OR_RETURN(hi, escaped_char());
          } else {
            GANTRY_ASSIGN_OR_RETURN(hi, code_point());
          }
          if (hi < lo)
            return fail("class range out of order");
        }
        r.emplace_back(lo, hi);
      }
      if (peek() != ']')
        return fail("class without ']'");
      ++i_;
      return set(negate ? complement(r) : normalize(r));
    }
    if (c == '.') {
      ++i_;
      return set({{0, kMaxCp}});
    }
    if (c == '^' || c == '$')
      return fail("anchor inside the pattern");
    if (c == '*' || c == '+' || c == '?' || c == '{')
      return fail("quantifier without a preceding item");
    if (c == '\\') {
      ++i_;
      Ranges esc;
      if (class_escape(peek(), esc)) {
        ++i_;
        return set(esc);
      }
      GANTRY_ASSIGN_OR_RETURN(uint32_t v, escaped_char());
      return json_char(v);
    }
    GANTRY_ASSIGN_OR_RETURN(uint32_t v, code_point());
    return json_char(v);
  }

  // A class of string characters: only those needing no JSON escape (see the header).
  Result<std::string> set(const Ranges &r) {
    const Ranges allowed = intersect(r, safe());
    if (allowed.empty())
      return fail("class with no printable character other than '\"' and '\\'");
    return gbnf_class(allowed);
  }

  std::string_view p_;
  const std::string &any_;
  size_t i_ = 0;
  size_t base_ = 0; // offsets count from the pattern as written, '^' included
};

} // namespace

std::string gbnf_literal(std::string_view s) {
  static const char *hex = "0123456789abcdef";
  std::string out = "\"";
  for (char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    switch (c) {
    case '"': out += "\\\""; break;
    case '\\': out += "\\\\"; break;
    case '\n': out += "\\n"; break;
    case '\r': out += "\\r"; break;
    case '\t': out += "\\t"; break;
    default:
      if (c < 0x20 || c == 0x7F) {
        out += "\\x";
        out += hex[c >> 4];
        out += hex[c & 15];
      } else {
        out += ch;
      }
    }
  }
  return out + "\"";
}

namespace {

// Decimal integer strings in [lo, hi], both non-negative with the same number of digits.
std::string same_len_range(const std::string &lo, const std::string &hi) {
  if (lo == hi)
    return gbnf_literal(lo);
  size_t common = 0;
  while (lo[common] == hi[common])
    ++common;
  const std::string prefix = common ? gbnf_literal(lo.substr(0, common)) + " " : "";
  const size_t rest = lo.size() - common - 1;
  const char a = lo[common], b = hi[common];
  auto digit = [](char from, char to) {
    return from == to ? std::string("\"") + from + "\"" : std::string("[") + from + "-" + to + "]";
  };
  auto any = [](size_t n) { return n ? " [0-9]{" + std::to_string(n) + "}" : std::string(); };
  if (rest == 0)
    return prefix + digit(a, b);
  std::vector<std::string> alts;
  const std::string lo_rest = lo.substr(common + 1), hi_rest = hi.substr(common + 1);
  const bool lo_full = lo_rest == std::string(rest, '0');
  const bool hi_full = hi_rest == std::string(rest, '9');
  const char mid_from = lo_full ? a : static_cast<char>(a + 1);
  const char mid_to = hi_full ? b : static_cast<char>(b - 1);
  if (!lo_full)
    alts.push_back(digit(a, a) + " (" + same_len_range(lo_rest, std::string(rest, '9')) + ")");
  if (mid_from <= mid_to)
    alts.push_back(digit(mid_from, mid_to) + any(rest));
  if (!hi_full)
    alts.push_back(digit(b, b) + " (" + same_len_range(std::string(rest, '0'), hi_rest) + ")");
  std::string body;
  for (const auto &a2 : alts)
    body += (body.empty() ? "" : " | ") + a2;
  return prefix + "(" + body + ")";
}

// Non-negative integers in [lo, hi] (hi < 0: no upper bound, up to kMaxRangeDigits digits).
} // namespace

std::string uint_range_gbnf(int64_t lo, int64_t hi) {
  std::vector<std::string> alts;
  const std::string los = std::to_string(lo);
  const size_t max_len = hi < 0 ? kMaxRangeDigits : std::to_string(hi).size();
  for (size_t len = los.size(); len <= max_len; ++len) {
    const std::string first = len == 1 ? "0" : "1" + std::string(len - 1, '0');
    const std::string last = std::string(len, '9');
    const std::string from = len == los.size() ? los : first;
    std::string to = last;
    if (hi >= 0 && len == max_len)
      to = std::to_string(hi);
    if (hi < 0 && len > los.size()) { // every longer length at once
      alts.push_back("[1-9] [0-9]{" + std::to_string(len - 1) + "," +
                     std::to_string(kMaxRangeDigits - 1) + "}");
      break;
    }
    alts.push_back(same_len_range(from, to));
  }
  std::string body;
  for (const auto &a : alts)
    body += (body.empty() ? "" : " | ") + a;
  return "(" + body + ")";
}

Result<std::string> pattern_to_gbnf(std::string_view pattern, const std::string &any_char) {
  if (pattern.size() > 4096)
    return Error::invalid("pattern longer than 4096 bytes");
  return Regex(pattern, any_char).run();
}

Result<std::string> format_to_gbnf(std::string_view format) {
  static const std::string date =
      R"([0-9]{4} "-" (("0" [13578] | "1" [02]) "-" ("0" [1-9] | [12] [0-9] | "3" [01]) | )"
      R"(("0" [469] | "11") "-" ("0" [1-9] | [12] [0-9] | "30") | )"
      R"("02" "-" ("0" [1-9] | "1" [0-9] | "2" [0-8])))";
  static const std::string time =
      R"(([01] [0-9] | "2" [0-3]) ":" [0-5] [0-9] ":" [0-5] [0-9] ("." [0-9]{1,6})? )"
      R"(("Z" | [+-] ([01] [0-9] | "2" [0-3]) ":" [0-5] [0-9]))";
  if (format == "date")
    return "(" + date + ")";
  if (format == "time")
    return "(" + time + ")";
  if (format == "date-time")
    return "(" + date + ") \"T\" (" + time + ")";
  if (format == "uuid")
    return std::string(
        R"([0-9a-f]{8} "-" [0-9a-f]{4} "-" [0-9a-f]{4} "-" [0-9a-f]{4} "-" [0-9a-f]{12})");
  if (format == "email") {
    const std::string label = R"(([a-zA-Z0-9] ([a-zA-Z0-9-]{0,61} [a-zA-Z0-9])?))";
    return R"([a-zA-Z0-9_+-]+ ("." [a-zA-Z0-9_+-]+)* "@" )" + label + " (\".\" " + label + ")+";
  }
  return Error::invalid("unsupported format");
}

} // namespace gantry::api
