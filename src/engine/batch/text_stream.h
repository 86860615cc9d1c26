// Turns generated tokens into text safe to send: complete UTF-8 only, and never a prefix of a
// stop string until we know whether the stop string completes (so a streamed response never
// shows text that the final response would have cut).
//
// Thread ownership: the engine thread, one per sequence.
#pragma once

#include <string>
#include <vector>

namespace gantry::engine {

class TextStream {
public:
  explicit TextStream(std::vector<std::string> stops) : stops_(std::move(stops)) {}

  // Appends the bytes of a token; returns the text that can be released now. Sets `stopped`
  // when a stop string appeared: the returned text is everything before it, and the stop
  // string itself and anything after it are dropped.
  std::string push(const std::string &piece, bool &stopped);
  // Releases what is held back at the end of generation (an incomplete stop-string prefix or
  // an incomplete UTF-8 sequence, which becomes U+FFFD). Everything push() and flush() return
  // is valid UTF-8.
  std::string flush();

private:
  std::vector<std::string> stops_;
  std::string pending_;
};

// Length of the longest prefix of s that ends on a UTF-8 character boundary.
size_t utf8_complete_prefix(const std::string &s);

} // namespace gantry::engine
