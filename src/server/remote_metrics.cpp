#include "server/remote_metrics.h"

#include "backend/remote/remote_backend.h"
#include "server/metrics_text.h"

namespace gantry::server {

using backend::remote::ErrorKind;

void render_remote_metrics(const std::vector<RemoteModelRef> &models, std::ostream &o) {
  if (models.empty())
    return;
  std::vector<backend::remote::PoolStats> stats;
  for (const auto &m : models)
    stats.push_back(m.backend->pool_stats());
  auto family = [&](const char *name, const char *type, const char *help) {
    o << "# HELP gantry:" << name << ' ' << help << "\n# TYPE gantry:" << name << ' ' << type
      << '\n';
  };
  auto each = [&](auto &&f) {
    for (std::size_t i = 0; i < models.size(); ++i)
      for (const auto &e : stats[i].endpoints)
        if (!e.removed) // a worker that left (its slot awaits reuse)
          f(label("model_name", models[i].model) + "," + label("backend", e.name), e);
  };
  family("backend_requests_total", "counter", "Attempts sent to each remote backend.");
  each([&](const std::string &l, const auto &e) {
    o << "gantry:backend_requests_total{" << l << "} " << e.requests << '\n';
  });
  family("backend_errors_total", "counter", "Failed attempts per remote backend, by kind.");
  each([&](const std::string &l, const auto &e) {
    for (int k = 0; k < static_cast<int>(ErrorKind::kCount); ++k)
      o << "gantry:backend_errors_total{" << l << ",kind=\""
        << backend::remote::error_kind_name(static_cast<ErrorKind>(k)) << "\"} " << e.errors[k]
        << '\n';
  });
  family("backend_latency_seconds", "summary", "Successful attempts, request to last byte.");
  each([&](const std::string &l, const auto &e) {
    o << "gantry:backend_latency_seconds_sum{" << l << "} " << e.latency_seconds_sum << '\n';
    o << "gantry:backend_latency_seconds_count{" << l << "} " << e.latency_count << '\n';
  });
  family("backend_in_flight", "gauge", "Attempts in flight per remote backend.");
  each([&](const std::string &l, const auto &e) {
    o << "gantry:backend_in_flight{" << l << "} " << e.in_flight << '\n';
  });
  family("backend_ejected", "gauge", "1 while the backend is ejected (outlier detection).");
  each([&](const std::string &l, const auto &e) {
    o << "gantry:backend_ejected{" << l << "} " << (e.ejected ? 1 : 0) << '\n';
  });
  family("backend_ejections_total", "counter", "Times each backend was ejected.");
  each([&](const std::string &l, const auto &e) {
    o << "gantry:backend_ejections_total{" << l << "} " << e.ejections << '\n';
  });
  family("backend_retries_total", "counter", "Retries on another backend, per remote model.");
  for (std::size_t i = 0; i < models.size(); ++i)
    o << "gantry:backend_retries_total{" << label("model_name", models[i].model) << "} "
      << stats[i].retries << '\n';
  family("backend_retries_refused_total", "counter", "Retries the retry budget refused.");
  for (std::size_t i = 0; i < models.size(); ++i)
    o << "gantry:backend_retries_refused_total{" << label("model_name", models[i].model) << "} "
      << stats[i].retries_refused << '\n';
}

boost::json::array remote_readiness(const backend::remote::RemoteBackend &b) {
  boost::json::array out;
  for (const auto &e : b.pool_stats().endpoints)
    if (!e.removed)
      out.push_back(boost::json::object{{"backend", e.name},
                                        {"ready", !e.ejected && e.healthy},
                                        {"ejected", e.ejected},
                                        {"in_flight", e.in_flight}});
  return out;
}

} // namespace gantry::server
