// Hand-written HTTP/1.1 response heads (and the header check outbound requests share), internal
// to src/http. Serializing by hand into one flat buffer per write is cheaper than Beast's
// serializer for our small, fixed set of headers.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "http/request.h"

namespace gantry::http::detail {

enum class Framing { kLength, kChunked, kUntilClose };

std::string_view reason_phrase(int status);

// The Date header text for `unix_seconds`, formatted at most once per second per thread.
const std::string &http_date(std::int64_t unix_seconds);

void append_number(std::string &out, std::uint64_t v, int base = 10);

// False when `s` holds a CR or LF: such a header name or value is dropped, never sent.
bool safe_header_text(std::string_view s);

// Appends a status line and headers up to the blank line. `length` is used with
// Framing::kLength. Extra headers containing CR or LF are dropped.
void append_head(std::string &out, int status, std::string_view content_type, const Headers &extra,
                 Framing framing, std::size_t length, bool keep_alive, bool http10,
                 std::string_view request_id);

} // namespace gantry::http::detail
