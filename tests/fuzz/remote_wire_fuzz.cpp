// Fuzzes what Gantry reads from a remote engine (backend/remote/): the SSE event splitting, the
// OpenAI chunk decoder, the Anthropic Messages event translation, whole response bodies, error
// bodies, /v1/models lists, credential scrubbing and Retry-After. The first byte picks the codec
// (OpenAI-compatible, OpenAI, Anthropic) and the upstream status; the second seeds the piece
// sizes; the rest is the upstream's bytes, read as an event stream and as a body.
//
// Invariants: the SSE parser yields the same events and the same verdict whether the stream
// arrives whole or in pseudo-random pieces (with small limits, so the bounds are reached);
// everything a decoder hands on (text, finish reasons, tool-call ids, names and arguments,
// logprob tokens, model ids, error messages) is valid UTF-8, error messages are bounded, and a
// scrubbed message never contains the secret it was given. Chunked transfer decoding of upstream
// bodies is Beast's (http/upstream.cpp), not covered here.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "backend/remote/sse_parser.h"
#include "backend/remote/wire.h"
#include "core/utf8.h"

using namespace gantry;
using namespace gantry::backend::remote;

namespace {

void require(bool ok) {
  if (!ok)
    std::abort();
}

void check_text(std::string_view s) { require(utf8_valid(s)); }

void check_error(const Error &e) {
  check_text(e.message);
  require(e.message.size() <= 4096);
}

void check_choices(const std::vector<UpstreamChoice> &choices) {
  for (const auto &c : choices) {
    check_text(c.text);
    check_text(c.finish_reason);
    for (const auto &t : c.tool_calls) {
      check_text(t.id);
      check_text(t.name);
      check_text(t.arguments);
    }
    for (const auto &l : c.logprobs) {
      check_text(l.token);
      for (const auto &top : l.top)
        check_text(top.token);
    }
  }
}

struct Split {
  bool ok = true;
  bool at_boundary = false;
  std::vector<SseEvent> events;
};

Split split(std::string_view bytes, uint64_t seed) {
  SseParser p({/*max_line=*/4096, /*max_event=*/16384});
  Split out;
  while (!bytes.empty()) {
    size_t n = bytes.size();
    if (seed != 0) {
      seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
      const uint64_t r = seed >> 33;
      n = (r & 3) == 0 ? 1 + (r >> 2) % 2048 : 1 + (r >> 2) % 8;
    }
    n = std::min(n, bytes.size());
    if (!p.feed(bytes.substr(0, n), out.events)) {
      out.ok = false;
      // A failed parser stays failed.
      std::vector<SseEvent> more;
      require(!p.feed("\n\n", more) && more.empty());
      return out;
    }
    bytes.remove_prefix(n);
  }
  out.at_boundary = p.at_boundary();
  return out;
}

bool key_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '_' || c == '.';
}

// The stream chunk decoder's document-free path, where it accepts a chunk, gives the DOM
// decoder's result exactly.
void check_fast_path(std::string_view chunk) {
  const auto fast = detail::decode_common_chunk(chunk);
  if (!fast)
    return;
  const auto dom = detail::decode_chunk_dom(chunk);
  require(dom.ok() && dom->done == fast->done && dom->deltas.size() == fast->deltas.size());
  for (size_t i = 0; i < dom->deltas.size(); ++i) {
    const auto &a = dom->deltas[i], &b = fast->deltas[i];
    require(a.index == b.index && a.text == b.text && a.finish_reason == b.finish_reason &&
            a.tool_calls.empty() && b.tool_calls.empty() && a.logprobs.empty() &&
            b.logprobs.empty());
  }
  require(dom->usage.has_value() == fast->usage.has_value());
  if (dom->usage) {
    const auto &a = *dom->usage, &b = *fast->usage;
    require(a.prompt_tokens == b.prompt_tokens && a.completion_tokens == b.completion_tokens &&
            a.cached_tokens == b.cached_tokens && a.cost_usd == b.cost_usd);
  }
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 2)
    return 0;
  static const int kStatus[] = {400, 401, 403, 404, 408, 413, 422, 429,
                                500, 502, 503, 504, 529, 200, 302, 418};
  const BackendKind kind = static_cast<BackendKind>(data[0] % 3);
  const int status = kStatus[(data[0] >> 2) % 16];
  const uint64_t seed = data[1] | 0x100u; // never 0: 0 means "whole"
  const std::string_view in(reinterpret_cast<const char *>(data) + 2, size - 2);

  // Event splitting: whole and in pieces agree.
  const Split whole = split(in, 0);
  const Split pieces = split(in, seed);
  require(whole.ok == pieces.ok && whole.events.size() == pieces.events.size());
  if (whole.ok)
    require(whole.at_boundary == pieces.at_boundary);
  for (size_t i = 0; i < whole.events.size(); ++i)
    require(whole.events[i].event == pieces.events[i].event &&
            whole.events[i].data == pieces.events[i].data && whole.events[i].data.size() <= 16384 &&
            whole.events[i].event.size() <= 64);

  // The stream's events through the codec's decoder. A real reader stops at an error or the end
  // marker; the decoder must survive any sequence, so every event is fed.
  const auto codec = make_codec(kind);
  auto decoder = codec->stream_decoder();
  check_fast_path(in);
  for (const SseEvent &e : whole.events) {
    check_fast_path(e.data);
    auto step = decoder->on_event(e);
    if (!step) {
      check_error(step.error());
      continue;
    }
    check_choices(step->deltas);
  }

  // The same bytes as a whole response body, an error body and a model list.
  if (auto r = codec->parse_response(in))
    check_choices(r->choices);
  else
    check_error(r.error());
  check_error(codec->error_from(status, in));
  if (auto ids = parse_model_list(in)) {
    for (const auto &id : *ids)
      check_text(id);
  }

  // Scrubbing: the secret is the text between the first two '|' when it looks like a key.
  const size_t a = in.find('|');
  const size_t b = a == std::string_view::npos ? a : in.find('|', a + 1);
  std::vector<std::string> secrets;
  if (b != std::string_view::npos && b - a - 1 >= 8) {
    const std::string_view s = in.substr(a + 1, b - a - 1);
    bool all = true;
    for (char c : s)
      all = all && key_char(c);
    if (all)
      secrets.emplace_back(s);
  }
  const std::size_t max_bytes = 16 + data[1] * 4;
  const std::string scrubbed = scrub_upstream_message(in, secrets, max_bytes);
  // At most max_bytes of the input, "..." when cut; each invalid byte became U+FFFD (3 bytes).
  require(scrubbed.size() <= 3 * max_bytes + 3);
  check_text(scrubbed);
  for (const auto &s : secrets)
    require(scrubbed.find(s) == std::string::npos);

  // Retry-After headers: the first line and the second.
  const size_t nl = in.find('\n');
  const std::string_view h1 = in.substr(0, nl);
  const std::string_view h2 = nl == std::string_view::npos ? std::string_view() : in.substr(nl + 1);
  const int64_t ms = retry_after_ms(h1, h2.substr(0, h2.find('\n')));
  require(ms >= 0 && ms < int64_t{1000} * 1000 * 1000 * 1000);
  return 0;
}
