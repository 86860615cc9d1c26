#include "backend/remote/sse_parser.h"

#include <cstring>

namespace gantry::backend::remote {
namespace {

// The first CR or LF at or after `i`. Two memchr scans rather than string_view::find_first_of,
// which tests every byte against the set one by one (a fifth of a streamed call's parsing).
std::size_t find_eol(std::string_view b, std::size_t i) {
  const char *p = b.data() + i;
  const std::size_t n = b.size() - i;
  const auto *lf = static_cast<const char *>(std::memchr(p, '\n', n));
  const std::size_t before_lf = lf ? static_cast<std::size_t>(lf - p) : n;
  if (const auto *cr = static_cast<const char *>(std::memchr(p, '\r', before_lf)))
    return static_cast<std::size_t>(cr - b.data());
  return lf ? static_cast<std::size_t>(lf - b.data()) : std::string_view::npos;
}

} // namespace

Status SseParser::feed(std::string_view bytes, std::vector<SseEvent> &out) {
  if (failed_)
    return Err(Error::io("upstream event stream already failed"));
  std::size_t i = 0;
  while (i < bytes.size()) {
    if (skip_lf_) {
      skip_lf_ = false;
      if (bytes[i] == '\n') {
        ++i;
        continue;
      }
    }
    const std::size_t end = find_eol(bytes, i);
    const std::size_t stop = end == std::string_view::npos ? bytes.size() : end;
    if (line_.size() + (stop - i) > limits_.max_line) {
      failed_ = true;
      return Err(Error::io("upstream event stream: a line longer than " +
                           std::to_string(limits_.max_line) + " bytes"));
    }
    if (end == std::string_view::npos) {
      line_.append(bytes.substr(i));
      return Ok();
    }
    std::string_view l;
    if (line_.empty()) {
      l = bytes.substr(i, end - i);
    } else {
      line_.append(bytes.substr(i, end - i));
      l = line_;
    }
    if (bytes[end] == '\r')
      skip_lf_ = true;
    i = end + 1;
    Status st = line(l, out);
    line_.clear();
    if (!st) {
      failed_ = true;
      return st;
    }
  }
  return Ok();
}

Status SseParser::line(std::string_view l, std::vector<SseEvent> &out) {
  if (l.empty()) { // dispatch
    if (has_data_)
      out.push_back({std::move(event_), std::move(data_)});
    data_.clear();
    event_.clear();
    has_data_ = false;
    return Ok();
  }
  if (l.front() == ':')
    return Ok(); // comment (keep-alive pings)
  const std::size_t colon = l.find(':');
  std::string_view field = l.substr(0, colon);
  std::string_view value =
      colon == std::string_view::npos ? std::string_view() : l.substr(colon + 1);
  if (!value.empty() && value.front() == ' ')
    value.remove_prefix(1);
  if (field == "data") {
    if (data_.size() + value.size() + 1 > limits_.max_event)
      return Err(Error::io("upstream event stream: an event larger than " +
                           std::to_string(limits_.max_event) + " bytes"));
    if (has_data_)
      data_ += '\n';
    data_.append(value);
    has_data_ = true;
  } else if (field == "event") {
    event_.assign(value.substr(0, 64)); // names are short; bounded anyway
  } // id:, retry: and unknown fields are ignored (as the spec says)
  return Ok();
}

} // namespace gantry::backend::remote
