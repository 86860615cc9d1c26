#include "server/metrics_text.h"

#include <sstream>

#include "server/cache_metrics.h"
#include "server/remote_metrics.h"
#include "server/remote_models.h"
#include "telemetry/metrics.h"

namespace gantry::server {
namespace {

void family(std::ostringstream &o, const char *name, const char *type, const char *help) {
  o << "# HELP gantry:" << name << ' ' << help << "\n# TYPE gantry:" << name << ' ' << type << '\n';
}

} // namespace

std::string label(std::string_view name, std::string_view value) {
  return std::string(name) + "=\"" + telemetry::escape_label(std::string(value)) + "\"";
}

std::string render_metrics(const MetricsSources &g) {
  std::ostringstream o;
  struct Row {
    std::string model;
    backend::BackendStats s;
    bool loaded; // placement (issue 14): a hosted model may be unloaded now
  };
  std::vector<Row> rows;
  for (const auto &m : g.models.models())
    rows.push_back({m->name(), m->backend->stats(), !m->loaded || m->loaded()});
  auto per_model = [&](const char *name, const char *type, const char *help, auto value) {
    family(o, name, type, help);
    for (const auto &r : rows) {
      o << "gantry:" << name << '{' << label("model_name", r.model) << "} " << value(r.s) << '\n';
    }
  };
  family(o, "model_loaded", "gauge",
         "1 when the model is loaded and serving; 0 while it would load on demand (placement).");
  for (const auto &r : rows)
    o << "gantry:model_loaded{" << label("model_name", r.model) << "} " << (r.loaded ? 1 : 0)
      << '\n';
  per_model("num_requests_running", "gauge", "Sequences generating in the engine.",
            [](const backend::BackendStats &s) { return s.running; });
  per_model("num_requests_waiting", "gauge", "Requests admitted but not yet generating.",
            [](const backend::BackendStats &s) { return s.queued_requests; });
  per_model("kv_cache_usage_perc", "gauge", "Fraction of KV cache blocks in use (0..1).",
            [](const backend::BackendStats &s) {
              return s.kv_blocks_total ? static_cast<double>(s.kv_blocks_used) / s.kv_blocks_total
                                       : 0.0;
            });
  per_model("prompt_tokens_total", "counter", "Prompt tokens processed.",
            [](const backend::BackendStats &s) { return s.prompt_tokens; });
  per_model("generation_tokens_total", "counter", "Tokens generated.",
            [](const backend::BackendStats &s) { return s.generated_tokens; });
  per_model("prefix_cache_queries_total", "counter",
            "Prompt tokens looked up in the prefix cache (full blocks).",
            [](const backend::BackendStats &s) { return s.prefix_queried_tokens; });
  per_model("prefix_cache_hits_total", "counter",
            "Prompt tokens whose KV was reused from the prefix cache.",
            [](const backend::BackendStats &s) { return s.prefix_hit_tokens; });
  per_model("kv_cache_cached_blocks", "gauge", "KV blocks held by the prefix cache.",
            [](const backend::BackendStats &s) { return s.kv_blocks_cached; });
  per_model("engine_steps_total", "counter", "Forward passes run by the engine.",
            [](const backend::BackendStats &s) { return s.steps; });
  per_model("request_cancelled_total", "counter",
            "Sequences cancelled (client disconnect or shutdown).",
            [](const backend::BackendStats &s) { return s.cancelled; });
  family(o, "requests_rejected_total", "counter", "Requests refused before running.");
  for (const auto &r : rows) {
    o << "gantry:requests_rejected_total{" << label("model_name", r.model)
      << ",reason=\"queue_full\"} " << r.s.rejected_queue_full << '\n';
  }
  auto &ctl = g.control;
  const auto cc = ctl.counters();
  for (const char *reason :
       {"unauthorized", "rate_limit", "quota", "breaker", "model_not_allowed"}) {
    auto it = cc.rejected.find(reason);
    o << "gantry:requests_rejected_total{reason=\"" << reason << "\"} "
      << (it == cc.rejected.end() ? 0 : it->second) << '\n';
  }
  family(o, "cost_usd_total", "counter", "Cost attributed to requests, by model and project.");
  for (const auto &[k, usd] : cc.cost_usd) {
    o << "gantry:cost_usd_total{" << label("model_name", k.first) << ','
      << label("project", k.second) << "} " << usd << '\n';
  }
  family(o, "budget_alerts_total", "counter", "Budget threshold alerts sent, by threshold.");
  for (const auto &[t, n] : cc.alerts) {
    o << "gantry:budget_alerts_total{threshold=\"" << t << "\"} " << n << '\n';
  }
  family(o, "budget_used_ratio", "gauge",
         "Spend (or tokens, for token quotas) used in the current period over the limit.");
  for (const auto &b : ctl.budget_states()) {
    const double ratio = b.budget.spend_limit_usd > 0
                             ? b.used_usd / b.budget.spend_limit_usd
                             : static_cast<double>(b.used_tokens) /
                                   static_cast<double>(std::max<int64_t>(b.budget.token_quota, 1));
    o << "gantry:budget_used_ratio{owner_kind=\"" << control::to_string(b.budget.owner_kind)
      << "\"," << label("owner", b.budget.owner_id) << ",period=\""
      << control::to_string(b.budget.period) << "\"} " << ratio << '\n';
  }
  family(o, "circuit_breaker_open", "gauge", "1 while a model's spend-rate breaker is open.");
  for (const auto &m : ctl.breaker_models()) {
    o << "gantry:circuit_breaker_open{" << label("model_name", m) << "} "
      << (ctl.breaker_state(m).value_or(control::BreakerState{}).open ? 1 : 0) << '\n';
  }
  family(o, "ledger_rows_written_total", "counter", "Usage ledger rows committed.");
  o << "gantry:ledger_rows_written_total " << ctl.ledger().rows_written() << '\n';
  family(o, "ledger_rows_pending", "gauge", "Usage ledger rows waiting for the next batch.");
  o << "gantry:ledger_rows_pending " << ctl.ledger().pending() << '\n';
  family(o, "ledger_rows_dropped_total", "counter",
         "Usage ledger rows dropped because the store stayed unwritable.");
  o << "gantry:ledger_rows_dropped_total " << ctl.ledger().dropped() << '\n';
  const auto idem = ctl.idempotency().stats();
  family(o, "idempotency_entries", "gauge", "Idempotency-Key records held.");
  o << "gantry:idempotency_entries " << idem.entries << '\n';
  family(o, "idempotency_bytes", "gauge",
         "Bytes the Idempotency-Key records are charged (bounded by idempotency_max_bytes).");
  o << "gantry:idempotency_bytes " << idem.bytes << '\n';
  family(o, "idempotency_evictions_total", "counter",
         "Idempotency-Key records dropped for room before their 24 h were up.");
  o << "gantry:idempotency_evictions_total " << idem.evictions << '\n';
  family(o, "idempotency_not_stored_total", "counter",
         "Responses over the per-entry cap, not kept for replay (a retry gets 409).");
  o << "gantry:idempotency_not_stored_total " << idem.too_large << '\n';
  const auto &h = g.http;
  family(o, "http_connections_active", "gauge", "Open HTTP connections.");
  o << "gantry:http_connections_active " << h.active_connections << '\n';
  family(o, "http_requests_in_flight", "gauge", "HTTP requests being handled.");
  o << "gantry:http_requests_in_flight " << h.requests_in_flight << '\n';
  family(o, "http_requests_total", "counter", "HTTP responses completed.");
  o << "gantry:http_requests_total " << h.requests_served << '\n';
  family(o, "http_client_disconnects_total", "counter", "Clients gone before their response.");
  o << "gantry:http_client_disconnects_total " << h.client_disconnects << '\n';
  family(o, "http_timeouts_total", "counter", "Connections cut by a timeout.");
  o << "gantry:http_timeouts_total{kind=\"header\"} " << h.header_timeouts << '\n';
  o << "gantry:http_timeouts_total{kind=\"body\"} " << h.body_timeouts << '\n';
  o << "gantry:http_timeouts_total{kind=\"idle\"} " << h.idle_timeouts << '\n';
  family(o, "http_refusals_total", "counter",
         "Connections or requests refused by a resource bound.");
  o << "gantry:http_refusals_total{kind=\"accept_pause\"} " << h.accept_pauses << '\n';
  o << "gantry:http_refusals_total{kind=\"accept_error\"} " << h.accept_errors << '\n';
  o << "gantry:http_refusals_total{kind=\"body_budget\"} " << h.body_budget_refusals << '\n';
  o << "gantry:http_refusals_total{kind=\"before_body\"} " << h.head_refusals << '\n';
  o << "gantry:http_refusals_total{kind=\"transfer_encoding\"} " << h.unsupported_encodings << '\n';
  render_cache_metrics(o, g.response_cache, g.embeddings);
  // Per replica, so the dashboard and Prometheus can sum what the fleet costs and what spot
  // replicas saved (their price against on-demand's).
  family(o, "replica_price_per_hour", "gauge",
         "What this replica costs per hour, USD (replica_price_per_hour; 0 = not set).");
  o << "gantry:replica_price_per_hour " << g.replica.price_per_hour << '\n';
  family(o, "replica_draining", "gauge",
         "1 once this replica drains (SIGTERM or POST /admin/v1/drain): it takes no new work.");
  o << "gantry:replica_draining " << (g.replica.draining ? 1 : 0) << '\n';
  g.jobs.render_metrics(o);
  if (g.autoscale)
    g.autoscale->render_metrics(o);
  o << g.metrics.render();
  std::vector<RemoteModelRef> remote; // per-backend series of remote pools (issue 12)
  for (const auto &m : g.models.models())
    if (const auto *r = as_remote(*m->backend))
      remote.push_back({m->name(), r});
  render_remote_metrics(remote, o);
  return o.str();
}

} // namespace gantry::server
