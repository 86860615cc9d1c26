// UTF-8 hygiene for text that leaves the server. Every JSON body and SSE event must be valid
// UTF-8 (audit L2): byte-fallback tokens and a generation cut inside a character produce lone or
// truncated sequences, and Boost.JSON serialises such bytes verbatim.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace gantry {

// True when `s` is well-formed UTF-8 (RFC 3629: no overlongs, no surrogates, at most U+10FFFF).
bool utf8_valid(std::string_view s);

// Returns `s` with every ill-formed or incomplete sequence replaced by U+FFFD (one replacement
// per maximal ill-formed subpart, as the Unicode standard recommends). Valid text is unchanged.
std::string utf8_sanitize(std::string_view s);

// At most `max_bytes` of `s`, cut on a character boundary, with "..." appended when it was cut;
// the result is sanitised. For echoing client text (field names, model names) in messages and
// logs without letting one request grow them without bound (audit L6).
std::string utf8_truncate(std::string_view s, std::size_t max_bytes);

// Client text echoed in an error message (a field name, a model name) is capped at this many
// bytes, so a 4 MB field name cannot produce an 8 MB reply and a 4 MB log line (audit L6).
inline constexpr std::size_t kMaxEchoedField = 64;
inline std::string echoed(std::string_view client_text) {
  return utf8_truncate(client_text, kMaxEchoedField);
}

} // namespace gantry
