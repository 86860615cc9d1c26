// How a handler answers: one complete response, or a Server-Sent Events stream.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>

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

  // Starts a 200 text/event-stream response (chunked; no length). `headers` are added.
  virtual void start_sse(Headers headers = {}) = 0;
  // Queues "data: <data>\n\n" (one "data:" line per line of `data`). Returns false when the
  // stream is closed (client gone, slow client over the buffer cap, server shutdown): the
  // producer should stop and cancel its work.
  virtual bool send_event(std::string data) = 0;
  // The same with an "event: <name>" line first: the typed streams of the Responses and
  // Anthropic Messages APIs, whose clients dispatch on the event name.
  virtual bool send_named_event(std::string_view name, std::string data) = 0;
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
