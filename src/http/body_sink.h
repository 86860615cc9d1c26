// A request body consumed as it arrives instead of being buffered whole: the Batch API's file
// uploads (200 MB), which neither fit max_body_bytes nor belong in memory. The server hands the
// body over in pieces of at most kBodyPieceBytes on the connection's I/O thread; a sink writes
// each piece on (to a store) before the next bytes are read from the socket, so a fast client
// cannot outrun it and memory stays bounded.
//
// Threading: created, written and finished or aborted on the connection's I/O thread.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <string_view>

#include "core/result.h"
#include "http/request.h"
#include "http/response.h"
#include "http/response_writer.h"

namespace gantry::http {

constexpr std::size_t kBodyPieceBytes = std::size_t{1} << 20;

class BodySink {
public:
  virtual ~BodySink() = default;
  // The next bytes of the body, in order. An error stops the upload: the server answers it
  // (status and OpenAI-shaped body from the error's code) and closes the connection; abort()
  // follows.
  virtual Status write(std::string_view bytes) = 0;
  // The whole body arrived: answer through `writer` (now or later, from any thread). `head` is
  // the request without its body. The sink is destroyed when this returns, before the answer
  // is written.
  virtual void finish(Request &&head, std::shared_ptr<ResponseWriter> writer) = 0;
  // The body will not complete (the client left or stalled, the framing broke, it grew past the
  // limit, write() failed): drop whatever was stored. Called at most once, never after finish().
  virtual void abort() = 0;
};

// Decides, from a request's head, whether its body streams to a sink. Called after
// ServerOptions::on_headers passed. Returns the sink, or nullptr with `refusal` set to the
// response to send instead (401, 429: nothing of the body is read).
using BodySinkFactory =
    std::function<std::unique_ptr<BodySink>(const Request &head, std::optional<Response> &refusal)>;

} // namespace gantry::http
