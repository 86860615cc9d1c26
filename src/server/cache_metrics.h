// The response and embedding cache families of GET /metrics (Prometheus text), each series
// labelled cache="response" or cache="embedding".
#pragma once

#include <ostream>

#include "server/embedding_service.h"
#include "server/response_cache.h"

namespace gantry::server {

void render_cache_metrics(std::ostream &o, const ResponseCache &response,
                          const EmbeddingService &embeddings);

} // namespace gantry::server
