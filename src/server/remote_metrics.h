// Per-backend metrics and readiness of remote models (issue 12): one series per backend of each
// pool — requests, errors by kind, latency, in-flight, ejected — and the /readyz detail (each
// backend; a model is ready while any of its backends is). The composition root finds the
// RemoteBackends among the served models and calls these.
#pragma once

#include <boost/json.hpp>

#include <ostream>
#include <string>
#include <vector>

namespace gantry::backend::remote {
class RemoteBackend;
}

namespace gantry::server {

struct RemoteModelRef {
  std::string model;
  const backend::remote::RemoteBackend *backend = nullptr;
};

// Prometheus text (HELP/TYPE once per family), appended to `o`.
void render_remote_metrics(const std::vector<RemoteModelRef> &models, std::ostream &o);

// {"backend": "host:port", "ready": bool, "ejected": bool, "in_flight": n} per backend.
boost::json::array remote_readiness(const backend::remote::RemoteBackend &backend);

} // namespace gantry::server
