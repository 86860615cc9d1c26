// Prometheus text exposition of the gateway's live state (vLLM's metric names with the
// "gantry:" prefix). Labels are bounded: model names from the config, fixed reasons.
#pragma once

#include <string>
#include <string_view>

#include "control/control_plane.h"
#include "http/server.h"
#include "server/autoscale_monitor.h"
#include "server/embedding_service.h"
#include "server/jobs_api.h"
#include "server/model_registry.h"
#include "server/response_cache.h"
#include "telemetry/metrics.h"

namespace gantry::server {
// This process as one replica (issue 14): its configured hourly price, and whether it drains.
struct ReplicaState {
  double price_per_hour = 0;
  bool draining = false;
};

// What GET /metrics reads: the served models, the control plane, the HTTP server's counters,
// the caches, the jobs, the registry of request metrics and the autoscale decisions.
struct MetricsSources {
  const ModelRegistry &models;
  control::ControlPlane &control;
  http::ServerStats http;
  const ResponseCache &response_cache;
  const EmbeddingService &embeddings;
  const JobsService &jobs;
  const telemetry::Registry &metrics;
  const AutoscaleMonitor *autoscale; // nullptr when no model has an [autoscale.<model>] table
  ReplicaState replica;
};
std::string render_metrics(const MetricsSources &g);

// `name="value"` with the value escaped as the text format requires (\\, \", \n): model,
// project and budget-owner names come from operators and tenants, and an unescaped quote or
// newline would corrupt the exposition or forge series (audit L1).
std::string label(std::string_view name, std::string_view value);
} // namespace gantry::server
