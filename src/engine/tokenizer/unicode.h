// Unicode helpers for the tokenizers: lossy UTF-8 decoding, code point classes (the general
// category's major class, as llama.cpp's unicode_cpt_flags has it) and GPT-2's byte-level
// mapping between raw bytes and printable code points.
//
// Thread safety: everything here is pure or reads immutable tables.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace gantry::engine::unicode {

// Major general category. Values are fixed by gen_unicode_tables.py.
enum class Class : uint8_t {
  kUndefined = 0, // Cn (unassigned) and anything past U+10FFFF
  kNumber = 1,
  kLetter = 2,
  kSeparator = 3,
  kMark = 4,
  kPunctuation = 5,
  kSymbol = 6,
  kControl = 7,
};

struct CategoryRange {
  uint32_t first;
  uint8_t cls;
};
struct CodePointMap {
  uint32_t from, to;
};
struct NfdRange {
  uint32_t first, last, nfd;
};
extern const CategoryRange kCategoryRanges[];
extern const size_t kCategoryRangeCount;
extern const uint32_t kWhitespace[];
extern const size_t kWhitespaceCount;
extern const CodePointMap kLowercase[];
extern const size_t kLowercaseCount;
extern const NfdRange kNfd[];
extern const size_t kNfdCount;

Class class_of(uint32_t cp);
// Unicode White_Space (not Python's isspace, which adds U+001C..U+001F).
bool is_whitespace(uint32_t cp);

// One-to-one lowercase (first code point of the full mapping), for WordPiece.
uint32_t to_lower(uint32_t cp);
// First code point of the canonical decomposition (NFD), for WordPiece accent stripping.
uint32_t nfd_first(uint32_t cp);

// Length of the UTF-8 sequence a lead byte announces (1 for stray continuation bytes), judged
// from the lead byte alone as llama.cpp does.
size_t utf8_len(uint8_t lead);

// Decodes UTF-8 the way llama.cpp does: a malformed sequence yields U+FFFD and consumes one byte.
std::vector<uint32_t> decode_utf8(std::string_view text);
void append_utf8(uint32_t cp, std::string &out);

// GPT-2 byte-level encoding: each byte maps to one printable code point (UTF-8 encoded).
const std::string &byte_to_unicode(uint8_t byte);
// Inverse; returns -1 when the code point is not one of the 256 byte stand-ins.
int unicode_to_byte(uint32_t cp);

} // namespace gantry::engine::unicode
