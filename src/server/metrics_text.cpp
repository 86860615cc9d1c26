#include "server/metrics_text.h"

#include <sstream>

#include "server/cache_metrics.h"
#include "server/gateway.h"

namespace gantry::server {
namespace {

void family(std::ostringstream &o, const char *name, const char *type, const char *help) {
  o << "# HELP gantry:" << name << ' ' << help << "\n# TYPE gantry:" << name << ' ' << type
    << '\n';
}

} // namespace

std::string render_metrics(const Gateway &g) {
  std::ostringstream o;
  struct Row {
    std::string model;
    WorkerStats s;
  };
  std::vector<Row> rows;
  for (const auto &m : g.models()) rows.push_back({m->spec.name, m->worker->stats()});
  auto per_model = [&](const char *name, const char *type, const char *help, auto value) {
    family(o, name, type, help);
    for (const auto &r : rows) {
      o << "gantry:" << name << "{model_name=\"" << r.model << "\"} " << value(r.s) << '\n';
    }
  };
  per_model("model_loaded", "gauge", "1 when the model is loaded and serving.",
            [](const WorkerStats &) { return 1; });
  per_model("num_requests_running", "gauge", "Sequences generating in the engine.",
            [](const WorkerStats &s) { return s.running; });
  per_model("num_requests_waiting", "gauge", "Requests admitted but not yet generating.",
            [](const WorkerStats &s) { return s.queued_requests; });
  per_model("kv_cache_usage_perc", "gauge", "Fraction of KV cache blocks in use (0..1).",
            [](const WorkerStats &s) {
              return s.kv_blocks_total ? static_cast<double>(s.kv_blocks_used) / s.kv_blocks_total
                                       : 0.0;
            });
  per_model("prompt_tokens_total", "counter", "Prompt tokens processed.",
            [](const WorkerStats &s) { return s.prompt_tokens; });
  per_model("generation_tokens_total", "counter", "Tokens generated.",
            [](const WorkerStats &s) { return s.generated_tokens; });
  per_model("prefix_cache_queries_total", "counter",
            "Prompt tokens looked up in the prefix cache (full blocks).",
            [](const WorkerStats &s) { return s.prefix_queried_tokens; });
  per_model("prefix_cache_hits_total", "counter",
            "Prompt tokens whose KV was reused from the prefix cache.",
            [](const WorkerStats &s) { return s.prefix_hit_tokens; });
  per_model("kv_cache_cached_blocks", "gauge", "KV blocks held by the prefix cache.",
            [](const WorkerStats &s) { return s.kv_blocks_cached; });
  per_model("engine_steps_total", "counter", "Forward passes run by the engine.",
            [](const WorkerStats &s) { return s.steps; });
  per_model("request_cancelled_total", "counter",
            "Sequences cancelled (client disconnect or shutdown).",
            [](const WorkerStats &s) { return s.cancelled; });
  family(o, "requests_rejected_total", "counter", "Requests refused before running.");
  for (const auto &r : rows) {
    o << "gantry:requests_rejected_total{model_name=\"" << r.model
      << "\",reason=\"queue_full\"} " << r.s.rejected_queue_full << '\n';
  }
  const auto h = g.http_stats();
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
  render_cache_metrics(o, g);
  return o.str();
}

} // namespace gantry::server
