#include "server/health_routes.h"

#include <boost/json.hpp>

#include <algorithm>

#include "api/openai.h"
#include "core/utf8.h"
#include "server/remote_metrics.h"
#include "server/remote_models.h"

namespace gantry::server {
namespace json = boost::json;

void HealthRoutes::add_probe_routes(http::Router &r) {
  r.get("/healthz", [](http::Request &&, std::shared_ptr<http::ResponseWriter> w) {
    w->respond(http::Response::json(200, R"({"status":"ok"})"));
  });
  // The listener opens only after every model is loaded, so once this answers, start-up is over
  // (a Kubernetes startupProbe fails with "connection refused" until then).
  r.get("/startupz", [this](http::Request &&, std::shared_ptr<http::ResponseWriter> w) {
    json::array models;
    for (const auto &m : models_.models())
      models.push_back(json::value(m->name()));
    w->respond(http::Response::json(
        200, json::serialize(json::object{{"status", "started"}, {"models", std::move(models)}})));
  });
  r.get("/readyz",
        [this](http::Request &&, std::shared_ptr<http::ResponseWriter> w) { ready(std::move(w)); });
}

namespace {

api::ModelCard card(const ServedModel &m) {
  const auto &info = m.backend->info();
  api::ModelCard c;
  c.id = info.name;
  c.created = info.created;
  c.context_length = info.context_length;
  if (m.loaded) // placement: hosted here, or by workers (loaded on at least one)
    c.status = m.loaded() ? "loaded" : "unloaded";
  return c;
}

} // namespace

void HealthRoutes::add_model_routes(http::Router &r) {
  r.get("/v1/models", [this](http::Request &&req, std::shared_ptr<http::ResponseWriter> w) {
    auto principal = calls_.authenticate(req, *w, nullptr);
    if (!principal)
      return;
    std::vector<api::ModelCard> cards;
    for (const auto &m : models_.models()) {
      const auto &p = *principal;
      if (p && !p->models.empty() &&
          std::find(p->models.begin(), p->models.end(), m->name()) == p->models.end()) {
        continue; // a key limited to some models sees only those
      }
      if (m->live_workers && m->live_workers() == 0)
        continue; // a worker-hosted model while no live worker has it (roles, issue 13)
      cards.push_back(card(*m));
    }
    w->respond(http::Response::json(200, api::render_model_list(cards)));
  });
  r.get("/v1/models/{id}", [this](http::Request &&req, std::shared_ptr<http::ResponseWriter> w) {
    auto principal = calls_.authenticate(req, *w, nullptr);
    if (!principal)
      return;
    backend::ModelBackend *m = models_.find(req.path_param("id"));
    for (const auto &served : models_.models()) // a worker-hosted model with no live worker
      if (m && served->backend.get() == m && served->live_workers && served->live_workers() == 0)
        m = nullptr;
    const auto &p = *principal; // a key limited to some models knows of no others (audit I)
    if (m && p && !p->models.empty() &&
        std::find(p->models.begin(), p->models.end(), m->info().name) == p->models.end()) {
      m = nullptr;
    }
    if (!m) {
      w->respond(http::error_response(
          Error{ErrorCode::kNotFound,
                "The model '" + echoed(req.path_param("id")) + "' does not exist", "model"}));
      return;
    }
    for (const auto &served : models_.models())
      if (served->backend.get() == m) {
        w->respond(http::Response::json(200, api::render_model(card(*served))));
        return;
      }
    w->respond(http::error_response(Error{ErrorCode::kNotFound, "no such model", "model"}));
  });
}

void HealthRoutes::add_check(std::string name, DependencyCheck check) {
  checks_.emplace_back(std::move(name), std::move(check));
}

http::Response HealthRoutes::render_ready() {
  json::array checks;
  bool ok = true;
  for (const auto &m : models_.models()) {
    auto st = m->backend->stats();
    json::object c{{"name", "model:" + m->name()},
                   {"status", m->probe_ok ? "ok" : "failed"},
                   {"latency_ms", m->probe_ms},
                   {"running", st.running},
                   {"waiting", st.waiting}};
    if (!m->probe_ok)
      c["error"] = m->probe_error;
    if (const auto *remote = as_remote(*m->backend)) // each backend of a remote pool
      c["backends"] = remote_readiness(*remote);
    if (m->live_workers) { // served by worker nodes (roles, issue 13)
      const int workers = m->live_workers();
      c["workers"] = workers;
      if (workers == 0) {
        // Not this gateway's failure (and failing readiness would drain every gateway at once):
        // shown, and requests for it answer 503 until a worker brings it back.
        c["status"] = "no_workers";
        checks.push_back(std::move(c));
        continue;
      }
    }
    ok = ok && m->probe_ok;
    checks.push_back(std::move(c));
  }
  {
    // The store backs keys, limits and the ledger: a read and a write round trip.
    const auto t0 = clock_.now();
    auto st = control_.check_stores();
    const double ms = std::chrono::duration<double, std::milli>(clock_.now() - t0).count();
    json::object c{{"name", "store"}, {"status", st ? "ok" : "failed"}, {"latency_ms", ms}};
    if (!st)
      c["error"] = st.error().message;
    ok = ok && st.ok();
    checks.push_back(std::move(c));
  }
  for (const auto &[name, check] : checks_) {
    const auto t0 = clock_.now();
    auto r = check();
    const double ms = std::chrono::duration<double, std::milli>(clock_.now() - t0).count();
    json::object c{{"name", name}, {"status", r ? "ok" : "failed"}, {"latency_ms", ms}};
    if (r) {
      for (const auto &[k, v] : *r)
        c[k] = v;
      // A dependency the node can serve without (Redis under its fail policy) reports itself
      // degraded: shown, but not a reason to take this node out of a load balancer.
      if (auto d = r->find("degraded"); d != r->end() && d->second != 0)
        c["status"] = "degraded";
    } else {
      c["error"] = r.error().message;
    }
    ok = ok && r.ok();
    checks.push_back(std::move(c));
  }
  json::object body{{"status", ok ? "ok" : "unavailable"}, {"checks", std::move(checks)}};
  return http::Response::json(ok ? 200 : 503, json::serialize(body));
}

void HealthRoutes::ready(std::shared_ptr<http::ResponseWriter> w) {
  if (shutting_down_.load()) {
    w->respond(http::Response::json(503, R"({"status":"shutting_down","checks":[]})"));
    return;
  }
  // Shared by the probes of this request; responds when the last one reports.
  struct Pending {
    int remaining = 0;
    std::shared_ptr<http::ResponseWriter> writer;
  };
  auto pending = std::make_shared<Pending>();
  pending->writer = w;
  std::vector<ServedModel *> stale;
  {
    std::lock_guard<std::mutex> lk(models_.probe_mu());
    const auto now = clock_.now();
    for (auto &m : models_.models()) {
      if (m->probe_at == std::chrono::steady_clock::time_point{} ||
          now - m->probe_at > ready_cache_) {
        stale.push_back(m.get());
      }
    }
    if (stale.empty()) {
      w->respond(render_ready());
      return;
    }
    pending->remaining = static_cast<int>(stale.size());
  }
  for (ServedModel *m : stale) {
    m->backend->probe([this, m, pending](backend::ProbeResult r) {
      std::lock_guard<std::mutex> lk(models_.probe_mu());
      m->probe_ok = r.ok;
      m->probe_error = std::move(r.error);
      m->probe_at = clock_.now();
      m->probe_ms = r.latency_ms;
      if (--pending->remaining == 0)
        pending->writer->respond(render_ready());
    });
  }
}

} // namespace gantry::server
