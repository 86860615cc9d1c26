#include "http/wire.h"

#include <charconv>
#include <cstring>
#include <ctime>

#include "core/clock.h"
#include "core/time_format.h"

namespace gantry::http::detail {

std::string_view reason_phrase(int status) {
  switch (status) {
  case 100: return "Continue";
  case 200: return "OK";
  case 201: return "Created";
  case 202: return "Accepted";
  case 204: return "No Content";
  case 301: return "Moved Permanently";
  case 302: return "Found";
  case 304: return "Not Modified";
  case 400: return "Bad Request";
  case 401: return "Unauthorized";
  case 402: return "Payment Required";
  case 403: return "Forbidden";
  case 404: return "Not Found";
  case 405: return "Method Not Allowed";
  case 408: return "Request Timeout";
  case 409: return "Conflict";
  case 410: return "Gone";
  case 411: return "Length Required";
  case 413: return "Payload Too Large";
  case 415: return "Unsupported Media Type";
  case 422: return "Unprocessable Entity";
  case 429: return "Too Many Requests";
  case 431: return "Request Header Fields Too Large";
  case 499: return "Client Closed Request";
  case 500: return "Internal Server Error";
  case 501: return "Not Implemented";
  case 502: return "Bad Gateway";
  case 503: return "Service Unavailable";
  case 504: return "Gateway Timeout";
  default: return "Unknown";
  }
}

const std::string &http_date(std::int64_t unix_seconds) {
  thread_local std::time_t cached = -1;
  thread_local std::string text;
  const auto now = static_cast<std::time_t>(unix_seconds);
  if (now != cached) {
    cached = now;
    text = format_utc(now, "%a, %d %b %Y %H:%M:%S GMT");
  }
  return text;
}

void append_number(std::string &out, std::uint64_t v, int base) {
  char buf[24];
  auto r = std::to_chars(buf, buf + sizeof buf, v, base);
  out.append(buf, r.ptr);
}

// Two memchr scans: find_first_of("\r\n") tests each byte against the set one at a time, and
// every header of every request and response passes here.
bool safe_header_text(std::string_view s) {
  return s.empty() ||
         (!std::memchr(s.data(), '\r', s.size()) && !std::memchr(s.data(), '\n', s.size()));
}

void append_head(std::string &out, int status, std::string_view content_type, const Headers &extra,
                 Framing framing, std::size_t length, bool keep_alive, bool http10,
                 std::string_view request_id) {
  out += "HTTP/1.1 ";
  append_number(out, static_cast<unsigned>(status));
  out += ' ';
  out += reason_phrase(status);
  out += "\r\nServer: gantry\r\nDate: ";
  // The Date header informs the client and decides nothing, so it reads the system clock
  // (through Clock, the one place that does) instead of a clock injected down every writer.
  static const SystemClock clock;
  out += http_date(clock.unix_seconds());
  out += "\r\n";
  if (!content_type.empty() && safe_header_text(content_type)) {
    out += "Content-Type: ";
    out += content_type;
    out += "\r\n";
  }
  switch (framing) {
  case Framing::kLength:
    if (status != 204 && status != 304) {
      out += "Content-Length: ";
      append_number(out, length);
      out += "\r\n";
    }
    break;
  case Framing::kChunked: out += "Transfer-Encoding: chunked\r\n"; break;
  case Framing::kUntilClose: break;
  }
  out += "x-request-id: ";
  out += request_id;
  out += "\r\n";
  if (!keep_alive) {
    out += "Connection: close\r\n";
  } else if (http10) {
    out += "Connection: keep-alive\r\n";
  }
  for (const Header &h : extra) {
    // Dropping rather than escaping: a CR/LF here is a bug or an injection attempt.
    if (!safe_header_text(h.name) || !safe_header_text(h.value) || h.name.empty())
      continue;
    out += h.name;
    out += ": ";
    out += h.value;
    out += "\r\n";
  }
  out += "\r\n";
}

} // namespace gantry::http::detail
