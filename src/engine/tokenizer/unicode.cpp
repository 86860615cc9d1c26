#include "engine/tokenizer/unicode.h"

#include <algorithm>
#include <array>

namespace gantry::engine::unicode {
namespace {

constexpr uint32_t kMaxCodePoint = 0x10FFFF;
constexpr uint32_t kBmpSize = 0x10000;

// The BMP holds nearly every code point real text uses, so it gets a flat table; the rest of
// the range is binary-searched.
const std::vector<uint8_t> &bmp_classes() {
  static const std::vector<uint8_t> table = [] {
    std::vector<uint8_t> t(kBmpSize);
    for (size_t i = 0; i < kCategoryRangeCount; ++i) {
      uint32_t end = i + 1 < kCategoryRangeCount ? kCategoryRanges[i + 1].first : kBmpSize;
      for (uint32_t cp = kCategoryRanges[i].first; cp < std::min(end, kBmpSize); ++cp) {
        t[cp] = kCategoryRanges[i].cls;
      }
    }
    return t;
  }();
  return table;
}

struct ByteMaps {
  std::array<std::string, 256> to_unicode;
  std::array<int16_t, 512> from_unicode; // byte stand-ins all lie below U+0200
};

const ByteMaps &byte_maps() {
  static const ByteMaps maps = [] {
    ByteMaps m;
    m.from_unicode.fill(-1);
    // Printable Latin-1 bytes stand for themselves; the rest are shifted to U+0100 upwards in
    // byte order, as in GPT-2's bytes_to_unicode().
    auto printable = [](int b) {
      return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    };
    int next = 256;
    for (int b = 0; b < 256; ++b) {
      uint32_t cp = printable(b) ? b : next++;
      append_utf8(cp, m.to_unicode[b]);
      m.from_unicode[cp] = static_cast<int16_t>(b);
    }
    return m;
  }();
  return maps;
}

} // namespace

Class class_of(uint32_t cp) {
  if (cp < kBmpSize)
    return static_cast<Class>(bmp_classes()[cp]);
  if (cp > kMaxCodePoint)
    return Class::kUndefined;
  const CategoryRange *end = kCategoryRanges + kCategoryRangeCount;
  const CategoryRange *it = std::upper_bound(
      kCategoryRanges, end, cp, [](uint32_t v, const CategoryRange &r) { return v < r.first; });
  return static_cast<Class>((it - 1)->cls);
}

bool is_whitespace(uint32_t cp) {
  if (cp <= 0x20)
    return cp == 0x20 || (cp >= 0x09 && cp <= 0x0D);
  return std::binary_search(kWhitespace, kWhitespace + kWhitespaceCount, cp);
}

uint32_t to_lower(uint32_t cp) {
  const CodePointMap *end = kLowercase + kLowercaseCount;
  const CodePointMap *it = std::lower_bound(
      kLowercase, end, cp, [](const CodePointMap &m, uint32_t v) { return m.from < v; });
  return it != end && it->from == cp ? it->to : cp;
}

uint32_t nfd_first(uint32_t cp) {
  const NfdRange *end = kNfd + kNfdCount;
  const NfdRange *it =
      std::upper_bound(kNfd, end, cp, [](uint32_t v, const NfdRange &r) { return v < r.first; });
  if (it == kNfd)
    return cp;
  --it;
  return cp <= it->last ? it->nfd : cp;
}

size_t utf8_len(uint8_t lead) {
  static constexpr size_t kLen[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
  return kLen[lead >> 4];
}

std::vector<uint32_t> decode_utf8(std::string_view s) {
  std::vector<uint32_t> out;
  out.reserve(s.size());
  auto cont = [&](size_t i) { return i < s.size() && (uint8_t(s[i]) & 0xC0) == 0x80; };
  size_t i = 0;
  while (i < s.size()) {
    const uint8_t b = uint8_t(s[i]);
    if (b < 0x80) {
      out.push_back(b);
      i += 1;
    } else if ((b & 0xE0) == 0xC0 && cont(i + 1)) {
      out.push_back(((b & 0x1Fu) << 6) | (uint8_t(s[i + 1]) & 0x3Fu));
      i += 2;
    } else if ((b & 0xF0) == 0xE0 && cont(i + 1) && cont(i + 2)) {
      out.push_back(((b & 0x0Fu) << 12) | ((uint8_t(s[i + 1]) & 0x3Fu) << 6) |
                    (uint8_t(s[i + 2]) & 0x3Fu));
      i += 3;
    } else if ((b & 0xF8) == 0xF0 && cont(i + 1) && cont(i + 2) && cont(i + 3)) {
      out.push_back(((b & 0x07u) << 18) | ((uint8_t(s[i + 1]) & 0x3Fu) << 12) |
                    ((uint8_t(s[i + 2]) & 0x3Fu) << 6) | (uint8_t(s[i + 3]) & 0x3Fu));
      i += 4;
    } else {
      out.push_back(0xFFFD);
      i += 1;
    }
  }
  return out;
}

void append_utf8(uint32_t cp, std::string &out) {
  if (cp > kMaxCodePoint)
    cp = 0xFFFD;
  if (cp < 0x80) {
    out.push_back(char(cp));
  } else if (cp < 0x800) {
    out.push_back(char(0xC0 | (cp >> 6)));
    out.push_back(char(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(char(0xE0 | (cp >> 12)));
    out.push_back(char(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(char(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(char(0xF0 | (cp >> 18)));
    out.push_back(char(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(char(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(char(0x80 | (cp & 0x3F)));
  }
}

const std::string &byte_to_unicode(uint8_t byte) { return byte_maps().to_unicode[byte]; }

int unicode_to_byte(uint32_t cp) {
  return cp < byte_maps().from_unicode.size() ? byte_maps().from_unicode[cp] : -1;
}

} // namespace gantry::engine::unicode
