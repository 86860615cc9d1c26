// Fuzzes the streaming multipart parser of large uploads (server/multipart_stream.h): the first
// byte seeds the piece sizes, the first line is the Content-Type value (with its boundary), the
// rest is the body. The body is parsed twice — fed whole, and fed in pseudo-random pieces of 1
// byte to a few KiB — and both must agree exactly: the same parts (names, filenames, content),
// the same acceptance. Parts must be well nested (data and end only inside a begun part) and no
// more content handed out than was fed. Where the one-shot parser's grammar overlaps (the body
// opens with its first delimiter and the stream accepts it), it must find the same parts.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "server/jobs_wire.h"
#include "server/multipart_stream.h"

using namespace gantry;

namespace {

struct Part {
  std::string name, filename, content;
  bool ended = false;
};

struct Outcome {
  bool ok = false;
  std::vector<Part> parts;
};

Outcome parse(std::string_view content_type, std::string_view body, uint64_t seed) {
  Outcome out;
  bool open = false;
  server::MultipartStream::Events ev;
  ev.begin = [&](const std::string &name, const std::string &filename) -> Status {
    if (open)
      std::abort(); // a part began inside another
    open = true;
    Part p;
    p.name = name;
    p.filename = filename;
    out.parts.push_back(std::move(p));
    return Ok();
  };
  ev.data = [&](std::string_view bytes) -> Status {
    if (!open || bytes.empty())
      std::abort(); // content outside a part, or an empty piece
    out.parts.back().content.append(bytes);
    return Ok();
  };
  ev.end = [&]() -> Status {
    if (!open)
      std::abort();
    open = false;
    out.parts.back().ended = true;
    return Ok();
  };
  auto s = server::MultipartStream::open(content_type, std::move(ev));
  if (!s)
    return out;
  while (!body.empty()) {
    size_t n = body.size();
    if (seed != 0) {
      seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
      const uint64_t r = seed >> 33;
      n = (r & 3) == 0 ? 1 + (r >> 2) % 4096 : 1 + (r >> 2) % 16;
    }
    n = std::min(n, body.size());
    if (!s->feed(body.substr(0, n)))
      return out;
    body.remove_prefix(n);
  }
  out.ok = static_cast<bool>(s->finish());
  if (out.ok && open)
    std::abort(); // accepted with a part still open
  return out;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size == 0)
    return 0;
  const uint64_t seed = data[0] | 0x100u; // never 0: 0 means "whole"
  std::string_view in(reinterpret_cast<const char *>(data) + 1, size - 1);
  const size_t nl = in.find('\n');
  if (nl == std::string_view::npos)
    return 0;
  const std::string_view content_type = in.substr(0, nl);
  const std::string_view body = in.substr(nl + 1);

  const Outcome whole = parse(content_type, body, 0);
  const Outcome pieces = parse(content_type, body, seed);
  if (whole.ok != pieces.ok)
    std::abort(); // acceptance depends on how the bytes arrived
  if (!whole.ok)
    return 0;
  if (whole.parts.size() != pieces.parts.size())
    std::abort();
  size_t total = 0;
  for (size_t i = 0; i < whole.parts.size(); ++i) {
    const Part &a = whole.parts[i], &b = pieces.parts[i];
    if (a.name != b.name || a.filename != b.filename || a.content != b.content || !a.ended ||
        !b.ended)
      std::abort();
    total += a.content.size();
  }
  if (total > body.size())
    std::abort();

  // The one-shot parser (small uploads) shares the stream's grammar when the body opens with
  // its first delimiter; on such a body the stream accepted, it must see the same parts.
  auto at = content_type.find("boundary=");
  std::string boundary(content_type.substr(at + 9));
  if (auto semi = boundary.find(';'); semi != std::string::npos)
    boundary.resize(semi);
  if (boundary.size() >= 2 && boundary.front() == '"')
    boundary = boundary.substr(1, boundary.size() - 2);
  if (!body.starts_with("--" + boundary))
    return 0;
  auto one = server::parse_multipart(content_type, body);
  if (!one || one->size() != whole.parts.size())
    std::abort();
  for (size_t i = 0; i < one->size(); ++i)
    if ((*one)[i].content != whole.parts[i].content)
      std::abort();
  return 0;
}
