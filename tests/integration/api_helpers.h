// Helpers shared by the integration tests: OpenAI request bodies, reading a whole SSE stream
// into per-choice text, error-body checks, a raw TCP connection for misbehaving clients, and
// polling /metrics with a deadline.
#pragma once

#include <boost/json.hpp>

#include <chrono>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "http/client.h"

namespace gantry::testing {

namespace json = boost::json;

inline constexpr const char *kModel = "stories260K";

// JSON bodies: {"model":kModel,"prompt":prompt,...extra} and the chat equivalent with one user
// message. `extra` is an object whose fields are merged in.
std::string completion_body(const std::string &prompt, json::object extra = {});
std::string chat_body(const std::string &content, json::object extra = {});

// Parses a body that must be a JSON object; an empty object (and a gtest failure) otherwise.
json::object parse_object(const std::string &body);

// The text of choice `index` of a non-streamed chat or completion response.
std::string choice_text(const json::object &response, size_t index = 0);

struct StreamResult {
  int status = 0;
  std::map<int, std::string> text;          // per choice index
  std::map<int, std::string> finish_reason; // per choice index, from the closing chunk
  std::optional<json::object> usage;        // the include_usage chunk's usage
  std::optional<json::object> error;        // an {"error":...} event
  std::vector<std::string> events;          // raw event data, "[DONE]" included
  bool done = false;                        // saw "[DONE]" as the last event
  std::string transport_error;              // set when reading failed before the end
  std::string id;                           // the chunks' "id"
  bool consistent_ids = true;               // every chunk carried the same id
};

// Reads events until the end of the stream (or `max_events`, then returns with done=false).
StreamResult read_stream(http::SseStream &stream, size_t max_events = SIZE_MAX);

// Opens a stream with `body` on `path` and reads it to the end.
StreamResult stream_request(const http::ClientOptions &options, const std::string &path,
                            const std::string &body, http::Headers headers = {});

// Checks an OpenAI error body: {"error":{"message":...,"type":type,"param":param,"code":...}}.
// `param` empty means JSON null. Returns the error object.
json::object expect_error(const http::ClientResponse &response, int status, const std::string &type,
                          const std::string &param);

// Polls GET /metrics until `predicate(metrics_text)` holds or `timeout` passes; returns the last
// text seen and whether the predicate held.
std::pair<bool, std::string>
wait_for_metrics(const http::ClientOptions &options,
                 const std::function<bool(const std::string &)> &predicate,
                 std::chrono::milliseconds timeout);
double metric_or_zero(const std::string &metrics_text, const std::string &series);
std::string model_series(const std::string &name); // name{model_name="stories260K"}

// A plain blocking TCP connection for clients that break the protocol (slowloris, half
// requests, resets). Owned by one thread.
class RawConnection {
public:
  explicit RawConnection(std::uint16_t port);
  ~RawConnection();
  RawConnection(const RawConnection &) = delete;
  RawConnection &operator=(const RawConnection &) = delete;

  bool ok() const { return fd_ >= 0; }
  bool send(std::string_view bytes); // false once the peer closed
  // Reads until the peer closes or `timeout` passes; returns what arrived and whether the peer
  // closed (EOF or reset) within the timeout.
  std::pair<std::string, bool> read_until_closed(std::chrono::milliseconds timeout);
  // Closes with SO_LINGER 0, so the peer sees a reset rather than an orderly FIN.
  void reset();
  void close();

private:
  int fd_ = -1;
};

} // namespace gantry::testing
