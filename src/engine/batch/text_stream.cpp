#include "engine/batch/text_stream.h"

#include <algorithm>

#include "core/utf8.h"

namespace gantry::engine {

size_t utf8_complete_prefix(const std::string &s) {
  // Walk back over at most 3 continuation bytes to the last lead byte and check whether its
  // sequence is complete.
  size_t n = s.size();
  size_t i = n;
  int cont = 0;
  while (i > 0 && cont < 4) {
    unsigned char c = static_cast<unsigned char>(s[i - 1]);
    if ((c & 0xC0) != 0x80)
      break;
    --i;
    ++cont;
  }
  if (i == 0)
    return cont > 0 ? 0 : n;
  unsigned char lead = static_cast<unsigned char>(s[i - 1]);
  int need = (lead & 0x80) == 0      ? 0
             : (lead & 0xE0) == 0xC0 ? 1
             : (lead & 0xF0) == 0xE0 ? 2
             : (lead & 0xF8) == 0xF0 ? 3
                                     : -1;
  if (need < 0)
    return n; // invalid lead byte: nothing to wait for
  return cont >= need ? n : i - 1;
}

std::string TextStream::push(const std::string &piece, bool &stopped) {
  stopped = false;
  pending_ += piece;
  // A stop string can only lie within pending_, because earlier text was released only when no
  // suffix of it could start a stop string.
  size_t cut = std::string::npos;
  for (const auto &s : stops_) {
    if (s.empty())
      continue;
    size_t pos = pending_.find(s);
    if (pos != std::string::npos)
      cut = std::min(cut, pos);
  }
  if (cut != std::string::npos) {
    stopped = true;
    std::string out = utf8_sanitize(std::string_view(pending_).substr(0, cut));
    pending_.clear();
    return out;
  }
  size_t hold = 0; // longest suffix of pending_ that is a proper prefix of a stop string
  for (const auto &s : stops_) {
    size_t max_len = std::min(s.size() - (s.empty() ? 0 : 1), pending_.size());
    for (size_t len = max_len; len > hold; --len) {
      if (pending_.compare(pending_.size() - len, len, s, 0, len) == 0) {
        hold = len;
        break;
      }
    }
  }
  size_t release = utf8_complete_prefix(pending_.substr(0, pending_.size() - hold));
  // The released prefix ends on a boundary but may still hold ill-formed bytes (a byte-fallback
  // continuation byte, a lead byte followed by ASCII): they become U+FFFD so every piece is
  // valid UTF-8 on its own (audit L2).
  std::string out = utf8_sanitize(std::string_view(pending_).substr(0, release));
  pending_.erase(0, release);
  return out;
}

std::string TextStream::flush() {
  // A generation cut inside a character leaves an incomplete sequence here; it is reported as
  // U+FFFD rather than sent as raw bytes that strict JSON parsers reject (audit L2).
  std::string out = utf8_sanitize(pending_);
  pending_.clear();
  return out;
}

} // namespace gantry::engine
