// The response and embedding cache families of GET /metrics (Prometheus text), each series
// labelled cache="response" or cache="embedding".
#pragma once

#include <ostream>

namespace gantry::server {

class Gateway;

void render_cache_metrics(std::ostream &o, const Gateway &g);

} // namespace gantry::server
