#include "server/cache_replay.h"

namespace gantry::server {

void replay_cached(api::Endpoint endpoint, const api::ResponseMeta &meta, bool stream,
                   bool include_usage, const std::string &echo_prefix,
                   const CachedCompletion &cached, http::Headers headers,
                   http::ResponseWriter &writer) {
  api::Usage usage;
  usage.prompt_tokens = cached.prompt_tokens;
  usage.cached_tokens = cached.prompt_tokens;
  for (const auto &c : cached.choices)
    usage.completion_tokens += c.completion_tokens;
  const bool chat = endpoint == api::Endpoint::kChatCompletions;
  const int n = static_cast<int>(cached.choices.size());

  if (!stream) {
    std::vector<api::Choice> out;
    out.reserve(n);
    for (int i = 0; i < n; ++i) {
      std::string text = echo_prefix;
      for (const auto &p : cached.choices[i].pieces)
        text += p;
      out.push_back({i, std::move(text), cached.choices[i].finish_reason});
    }
    http::Response r = http::Response::json(200, api::render_response(endpoint, meta, out, usage));
    r.headers = std::move(headers);
    writer.respond(std::move(r));
    return;
  }

  writer.start_sse(std::move(headers));
  if (chat || !echo_prefix.empty()) {
    for (int i = 0; i < n; ++i) {
      writer.send_event(api::render_chunk(endpoint, meta, i, echo_prefix, chat, "", include_usage));
    }
  }
  for (int i = 0; i < n; ++i) {
    const auto &c = cached.choices[i];
    for (const auto &p : c.pieces) {
      if (p.empty())
        continue;
      if (!writer.send_event(api::render_chunk(endpoint, meta, i, p, false, "", include_usage))) {
        writer.end(); // the client went away; nothing more can be written
        return;
      }
    }
    writer.send_event(
        api::render_chunk(endpoint, meta, i, "", false, c.finish_reason, include_usage));
  }
  if (include_usage)
    writer.send_event(api::render_usage_chunk(endpoint, meta, usage));
  writer.send_event("[DONE]");
  writer.end();
}

} // namespace gantry::server
