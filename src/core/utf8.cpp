#include "core/utf8.h"

namespace gantry {
namespace {

// Length of the well-formed sequence starting at s[i], or 0 when the bytes there are not one.
// `bad` receives how many bytes form the maximal ill-formed subpart (at least 1) in that case.
std::size_t sequence_at(std::string_view s, std::size_t i, std::size_t &bad) {
  const auto b = [&](std::size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char c = b(i);
  bad = 1;
  if (c < 0x80)
    return 1;
  std::size_t need;
  unsigned char lo = 0x80, hi = 0xBF; // allowed range of the second byte
  if (c >= 0xC2 && c <= 0xDF) {
    need = 1;
  } else if (c >= 0xE0 && c <= 0xEF) {
    need = 2;
    if (c == 0xE0)
      lo = 0xA0; // no overlongs
    else if (c == 0xED)
      hi = 0x9F; // no surrogates
  } else if (c >= 0xF0 && c <= 0xF4) {
    need = 3;
    if (c == 0xF0)
      lo = 0x90;
    else if (c == 0xF4)
      hi = 0x8F; // at most U+10FFFF
  } else {
    return 0; // continuation byte or invalid lead
  }
  for (std::size_t k = 1; k <= need; ++k) {
    if (i + k >= s.size())
      return 0; // incomplete: the bytes so far are one ill-formed subpart
    const unsigned char x = b(i + k);
    const bool ok = k == 1 ? (x >= lo && x <= hi) : (x >= 0x80 && x <= 0xBF);
    if (!ok)
      return 0;
    bad = k + 1;
  }
  return need + 1;
}

} // namespace

bool utf8_valid(std::string_view s) {
  for (std::size_t i = 0; i < s.size();) {
    std::size_t bad;
    const std::size_t n = sequence_at(s, i, bad);
    if (n == 0)
      return false;
    i += n;
  }
  return true;
}

std::string utf8_sanitize(std::string_view s) {
  if (utf8_valid(s))
    return std::string(s);
  std::string out;
  out.reserve(s.size() + 8);
  for (std::size_t i = 0; i < s.size();) {
    std::size_t bad;
    const std::size_t n = sequence_at(s, i, bad);
    if (n == 0) {
      out += "\xEF\xBF\xBD"; // U+FFFD
      i += bad;
    } else {
      out.append(s.substr(i, n));
      i += n;
    }
  }
  return out;
}

std::string utf8_truncate(std::string_view s, std::size_t max_bytes) {
  if (s.size() <= max_bytes)
    return utf8_sanitize(s);
  std::size_t cut = max_bytes;
  // Step back over continuation bytes so the cut falls on a character boundary.
  while (cut > 0 && (static_cast<unsigned char>(s[cut]) & 0xC0) == 0x80)
    --cut;
  return utf8_sanitize(s.substr(0, cut)) + "...";
}

} // namespace gantry
