// Prometheus text exposition of the gateway's live state (vLLM's metric names with the
// "gantry:" prefix). Labels are bounded: model names from the config, fixed reasons.
#pragma once

#include <string>

namespace gantry::server {
class Gateway;
std::string render_metrics(const Gateway &gateway);
} // namespace gantry::server
