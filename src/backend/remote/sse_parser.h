// Incremental Server-Sent Events parser for upstream streams: bytes go in as they arrive from
// the socket, complete events come out. Nothing is buffered beyond one line and one event, and
// both are bounded: a line or event longer than its limit is an error (a hostile or broken
// upstream sending a 10 MB line costs at most the limit, never the whole line).
//
// Owned by the one thread that reads the upstream response.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.h"

namespace gantry::backend::remote {

struct SseEvent {
  std::string event; // the "event:" field; empty = "message"
  std::string data;  // data lines joined with '\n'
};

struct SseLimits {
  std::size_t max_line = 1 << 20;  // bytes of one line, CR/LF excluded
  std::size_t max_event = 4 << 20; // bytes of one event's data
};

class SseParser {
public:
  explicit SseParser(SseLimits limits = {}) : limits_(limits) {}

  // Consumes `bytes`, appending each event it completes to `out`. After an error the parser
  // stays failed (the stream is unusable).
  Status feed(std::string_view bytes, std::vector<SseEvent> &out);
  // The stream ended: true when it ended between events (a partial event is "cut mid-event").
  bool at_boundary() const { return line_.empty() && !has_data_ && event_.empty(); }

private:
  Status line(std::string_view l, std::vector<SseEvent> &out);

  SseLimits limits_;
  std::string line_;     // the incomplete line so far
  bool skip_lf_ = false; // a CR ended the last line; a following LF belongs to it
  std::string data_;
  std::string event_;
  bool has_data_ = false;
  bool failed_ = false;
};

} // namespace gantry::backend::remote
