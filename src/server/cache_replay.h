// Answers a completion or chat request from a cached result, in the shape a live InferenceCall
// produces: one JSON body, or an SSE stream chunked like a live one (role/echo chunk, one chunk
// per stored text piece, the finish chunk, the usage chunk when asked, [DONE]).
#pragma once

#include <string>

#include "api/openai.h"
#include "http/response_writer.h"
#include "server/response_cache.h"

namespace gantry::server {

// `meta` carries a fresh id and creation time: a replayed answer is a new response whose
// content happens to come from the cache. Usage is the original's, with every prompt token
// reported as cached. `headers` are added to the response (x-gantry-cache).
void replay_cached(api::Endpoint endpoint, const api::ResponseMeta &meta, bool stream,
                   bool include_usage, const std::string &echo_prefix,
                   const CachedCompletion &cached, http::Headers headers,
                   http::ResponseWriter &writer);

} // namespace gantry::server
