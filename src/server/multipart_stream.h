// multipart/form-data (RFC 7578) parsed as it arrives, for uploads too large to hold: the parts'
// heads are kept (bounded), their contents are handed out in order as they are found, so memory
// holds at most a boundary's length of unreleased bytes beyond what was fed.
//
// Threading: one thread at a time (an upload's connection thread).
#pragma once

#include <cstddef>
#include <functional>
#include <string>
#include <string_view>

#include "core/result.h"

namespace gantry::server {

class MultipartStream {
public:
  struct Events {
    // A part begins: its form field name and filename ("" when none). An error stops parsing.
    std::function<Status(const std::string &name, const std::string &filename)> begin;
    std::function<Status(std::string_view bytes)> data; // the current part's next bytes
    std::function<Status()> end;                        // the current part is complete
  };

  // `content_type` carries the boundary; kInvalidArgument (param "file") without one.
  static Result<MultipartStream> open(std::string_view content_type, Events events);

  Status feed(std::string_view bytes);
  // The body ended: an error unless the closing boundary was seen (a truncated upload).
  Status finish() const;

private:
  enum class State { kPreamble, kAfterDelimiter, kHead, kContent, kDone };
  MultipartStream(std::string delimiter, Events events)
      : delimiter_(std::move(delimiter)), events_(std::move(events)) {}
  Status step(bool &progressed);

  std::string delimiter_; // "\r\n--" + boundary
  Events events_;
  State state_ = State::kPreamble;
  std::string buf_; // fed and not yet consumed
};

} // namespace gantry::server
