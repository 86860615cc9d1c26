#include "server/multipart_stream.h"

namespace gantry::server {
namespace {

constexpr std::size_t kMaxPartHead = 16 * 1024;

Error malformed(const std::string &why) {
  return Error::invalid("malformed multipart body: " + why, "file");
}

// A Content-Disposition parameter (name="x") of a part's head.
std::string head_param(std::string_view head, std::string_view key) {
  for (const char *sep : {" ", ";"}) {
    const std::string k = std::string(sep) + std::string(key) + "=\"";
    auto a = head.find(k);
    if (a == std::string_view::npos)
      continue;
    auto e = head.find('"', a + k.size());
    if (e == std::string_view::npos)
      return {};
    return std::string(head.substr(a + k.size(), e - a - k.size()));
  }
  return {};
}

} // namespace

Result<MultipartStream> MultipartStream::open(std::string_view content_type, Events events) {
  auto at = content_type.find("boundary=");
  if (at == std::string_view::npos)
    return Error::invalid("expected multipart/form-data with a boundary", "file");
  std::string boundary(content_type.substr(at + 9));
  if (auto semi = boundary.find(';'); semi != std::string::npos)
    boundary.resize(semi);
  if (boundary.size() >= 2 && boundary.front() == '"')
    boundary = boundary.substr(1, boundary.size() - 2);
  if (boundary.empty() || boundary.size() > 70) // RFC 2046: 1..70 characters
    return Error::invalid("the multipart boundary must have 1 to 70 characters", "file");
  return MultipartStream("\r\n--" + boundary, std::move(events));
}

Status MultipartStream::feed(std::string_view bytes) {
  if (state_ == State::kDone)
    return Ok(); // the epilogue is ignored
  buf_.append(bytes);
  bool progressed = true;
  while (progressed && state_ != State::kDone) {
    progressed = false;
    GANTRY_TRY(step(progressed));
  }
  return Ok();
}

Status MultipartStream::step(bool &progressed) {
  switch (state_) {
  case State::kPreamble: {
    // The first delimiter may open the body without the CRLF before it.
    const std::string_view first = std::string_view(delimiter_).substr(2);
    auto at = buf_.starts_with(first) ? 0 : buf_.find(delimiter_);
    // The bound is on where the delimiter starts, not on what is buffered, so the verdict does
    // not depend on how the bytes arrived: a delimiter found past it in one big piece is refused
    // like one that would arrive after the buffer outgrew it.
    if (at == std::string::npos) {
      if (buf_.size() > kMaxPartHead + delimiter_.size() - 1)
        return malformed("no boundary");
      return Ok();
    }
    if (at > kMaxPartHead)
      return malformed("no boundary");
    buf_.erase(0, at + (at == 0 && buf_.starts_with(first) ? first.size() : delimiter_.size()));
    state_ = State::kAfterDelimiter;
    progressed = true;
    return Ok();
  }
  case State::kAfterDelimiter:
    if (buf_.size() < 2)
      return Ok();
    if (buf_.starts_with("--")) {
      state_ = State::kDone;
      buf_.clear();
    } else if (buf_.starts_with("\r\n")) {
      buf_.erase(0, 2);
      state_ = State::kHead;
    } else {
      return malformed("bad delimiter line");
    }
    progressed = true;
    return Ok();
  case State::kHead: {
    // As above, the bound is on the head's length (where its blank line starts).
    auto end = buf_.find("\r\n\r\n");
    if ((end == std::string::npos && buf_.size() > kMaxPartHead + 3) ||
        (end != std::string::npos && end > kMaxPartHead))
      return malformed("a part's head exceeds " + std::to_string(kMaxPartHead) + " bytes");
    if (end == std::string::npos)
      return Ok();
    const std::string_view head = std::string_view(buf_).substr(0, end);
    GANTRY_TRY(events_.begin(head_param(head, "name"), head_param(head, "filename")));
    buf_.erase(0, end + 4);
    state_ = State::kContent;
    progressed = true;
    return Ok();
  }
  case State::kContent: {
    auto at = buf_.find(delimiter_);
    if (at != std::string::npos) {
      if (at > 0)
        GANTRY_TRY(events_.data(std::string_view(buf_).substr(0, at)));
      GANTRY_TRY(events_.end());
      buf_.erase(0, at + delimiter_.size());
      state_ = State::kAfterDelimiter;
      progressed = true;
      return Ok();
    }
    // Everything but a tail that could be the start of the delimiter is content.
    if (buf_.size() >= delimiter_.size()) {
      const std::size_t safe = buf_.size() - (delimiter_.size() - 1);
      GANTRY_TRY(events_.data(std::string_view(buf_).substr(0, safe)));
      buf_.erase(0, safe);
    }
    return Ok();
  }
  case State::kDone: return Ok();
  }
  return Ok();
}

Status MultipartStream::finish() const {
  if (state_ != State::kDone)
    return malformed("the body ended before the closing boundary");
  return Ok();
}

} // namespace gantry::server
