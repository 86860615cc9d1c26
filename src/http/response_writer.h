// How a handler answers: one complete response, or a Server-Sent Events stream.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "core/result.h"
#include "http/request.h"
#include "http/response.h"

namespace gantry::http {

// Thread-safe: every method may be called from any thread (an engine thread producing tokens,
// a timer, the I/O thread itself). Calls are queued in order and written by the connection's
// I/O thread, so nothing here blocks on the network.
//
// Exactly one of respond() or start_sse()...end() per request. Dropping the last reference
// without answering sends a 500 (or terminates the stream), so a buggy handler cannot hang
// a client.
class ResponseWriter {
public:
  virtual ~ResponseWriter() = default;

  // A complete response. Ignored if something was already sent or the client is gone.
  virtual void respond(Response response) = 0;

  // The next piece of a streamed body; std::nullopt once it is all written; an error cuts the
  // response short (the connection is closed: the client sees fewer bytes than announced).
  using BodySource = std::function<Result<std::optional<std::string>>()>;
  // A complete response of `length` bytes (Content-Length) produced piece by piece: the server
  // calls `next` on the connection's I/O thread each time the previous piece was written, so a
  // large body (a 200 MB file) never sits whole in memory. The default, for writers that wrap
  // another, collects the pieces and respond()s.
  virtual void respond_stream(int status, std::string content_type, Headers headers,
                              std::uint64_t length, BodySource next) {
    Response r{status, std::move(content_type), std::move(headers), {}};
    r.body.reserve(static_cast<std::size_t>(length));
    for (;;) {
      auto piece = next();
      if (!piece || !*piece)
        break;
      r.body += **piece;
    }
    respond(std::move(r));
  }

  // Starts a 200 text/event-stream response (chunked; no length). `headers` are added.
  virtual void start_sse(Headers headers = {}) = 0;
  // Queues "data: <data>\n\n" (one "data:" line per line of `data`). Returns false when the
  // stream is closed (client gone, slow client over the buffer cap, server shutdown): the
  // producer should stop and cancel its work.
  virtual bool send_event(std::string data) = 0;
  // The same with an "event: <name>" line first: the typed streams of the Responses and
  // Anthropic Messages APIs, whose clients dispatch on the event name.
  virtual bool send_named_event(std::string_view name, std::string data) = 0;
  // Queues an SSE comment line ": <text>\n\n" (clients ignore it; proxies and people see the
  // stream is alive). Line breaks in `text` become spaces. False as send_event; writers that
  // wrap another forward it, others drop it.
  virtual bool send_comment(std::string_view text) {
    (void)text;
    return !is_closed();
  }
  // Ends the stream (writes the final chunk); the connection then serves its next request.
  virtual void end() = 0;

  // True once the peer went away, the write buffer cap was exceeded, or the server closed the
  // connection. Also true after the response finished (nothing more can be written).
  virtual bool is_closed() const = 0;
  // `callback` runs once if the connection closes before the response finished; on the I/O
  // thread, or immediately on the caller's thread if that already happened. Keep it short
  // (e.g. set a cancel flag). Not called after a normal finish.
  virtual void on_close(std::function<void()> callback) = 0;

  virtual const std::string &request_id() const = 0;
};

// Handlers may answer inline or keep the writer and answer later from any thread.
using Handler = std::function<void(Request &&, std::shared_ptr<ResponseWriter>)>;

} // namespace gantry::http
