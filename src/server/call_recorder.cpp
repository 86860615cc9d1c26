#include "server/call_recorder.h"

#include <charconv>
#include <cmath>
#include <ctime>
#include <unordered_map>

#include "core/json_text.h"
#include "core/time_format.h"
#include "core/utf8.h"

namespace gantry::server {
namespace {

// Bytes of an error message kept in a request-log line (audit L6).
constexpr std::size_t kMaxLoggedError = 256;

void append_number(std::string &out, double v) {
  char buf[32];
  auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), v, std::chars_format::fixed, 3);
  if (ec != std::errc()) {
    out += "null";
    return;
  }
  out.append(buf, static_cast<size_t>(end - buf));
}

} // namespace

std::string format_cost(double usd) {
  // to_chars with a precision prints what printf("%.8f") does, without the stdio machinery
  // (snprintf was ≈ 1,800 instructions of a proxied request's ≈ 129,000). 400 bytes hold the
  // largest double's 309 digits and the 8 decimals, so it cannot fail.
  char buf[400];
  return std::string(buf,
                     std::to_chars(buf, buf + sizeof buf, usd, std::chars_format::fixed, 8).ptr);
}

CallRecorder::CallRecorder(telemetry::Registry &metrics, bool metrics_on,
                           observe::ErrorTracker &errors, telemetry::RequestLog *request_log,
                           std::string worker)
    : metrics_(metrics), metrics_on_(metrics_on), errors_(errors), request_log_(request_log),
      worker_(std::move(worker)) {}

CallRecorder::Series &CallRecorder::series(const CallOutcome &r) {
  // Resolving a labelled series in the registry takes its lock and builds the label string; a
  // per-thread cache keyed by the label values makes the steady state a hash lookup.
  thread_local std::unordered_map<std::string, Series> cache;
  thread_local uint64_t owner = 0; // instance ids, not addresses: an address can be reused
  if (owner != instance_) {
    cache.clear();
    owner = instance_;
  }
  std::string key;
  key.reserve(r.model.size() + r.endpoint.size() + r.project.size() + r.finish_reason.size() + 8);
  key.append(r.model).push_back('\x1f');
  key.append(r.endpoint).push_back('\x1f');
  key.append(std::to_string(r.status)).push_back('\x1f');
  key.append(r.project).push_back('\x1f');
  key.append(r.finish_reason);
  auto it = cache.find(key);
  if (it != cache.end())
    return it->second;
  if (cache.size() > 4096)
    cache.clear();
  const std::string model = r.model.empty() ? "none" : r.model;
  const auto &lat = telemetry::Registry::latency_buckets();
  const telemetry::Labels ml{{"model_name", model}};
  Series cs;
  cs.requests = &metrics_.counter("requests_total",
                                  "Inference calls answered, by model, endpoint, status, project.",
                                  {{"model_name", model},
                                   {"endpoint", r.endpoint},
                                   {"status", std::to_string(r.status)},
                                   {"project", r.project}});
  cs.e2e = &metrics_.histogram("e2e_request_latency_seconds",
                               "Arrival to the last byte of the response.",
                               {{"model_name", model}, {"endpoint", r.endpoint}}, lat);
  cs.ttft = &metrics_.histogram("time_to_first_token_seconds",
                                "Arrival to the first generated token.", ml, lat);
  cs.queue = &metrics_.histogram("request_queue_time_seconds",
                                 "Waiting for the engine to schedule it.", ml, lat);
  cs.prefill = &metrics_.histogram("request_prefill_time_seconds",
                                   "First engine step to first token.", ml, lat);
  cs.decode =
      &metrics_.histogram("request_decode_time_seconds", "First token to last token.", ml, lat);
  cs.overhead = &metrics_.histogram("gateway_overhead_seconds",
                                    "Time spent in Gantry outside the engine (parse, auth, "
                                    "limits, tokenize, render, queue hand-off).",
                                    ml, lat);
  cs.success =
      r.finish_reason.empty()
          ? nullptr
          : &metrics_.counter("request_success_total", "Requests finished, by finish reason.",
                              {{"model_name", model}, {"finished_reason", r.finish_reason}});
  return cache.emplace(std::move(key), cs).first->second;
}

void CallRecorder::record(const CallOutcome &r) {
  const bool failed = r.failed();
  const bool server_error = r.status >= 500 || (r.error && r.status < 400);
  const std::string error_type =
      r.error ? std::string(openai_error_type(r.error->code)) : std::string();
  if (metrics_on_) {
    Series &cs = series(r);
    cs.requests->inc();
    cs.e2e->observe(r.latency_ms / 1000);
    if (!failed && r.ttft_ms >= 0 && !r.cached) {
      cs.ttft->observe(r.ttft_ms / 1000);
      cs.queue->observe(r.queue_ms / 1000);
      cs.prefill->observe(r.prefill_ms / 1000);
      cs.decode->observe(r.decode_ms / 1000);
      cs.overhead->observe(std::max(0.0, r.latency_ms - r.queue_ms - r.prefill_ms - r.decode_ms) /
                           1000);
    }
    if (!failed && cs.success)
      cs.success->inc();
    if (server_error) {
      metrics_
          .counter("errors_total", "Server-side failures, by error type.",
                   {{"type", error_type.empty() ? "unknown" : error_type}})
          .inc();
    }
  }
  if (server_error) {
    observe::ErrorEvent ev;
    ev.type = error_type.empty() ? "server_error" : error_type;
    ev.message = r.error ? r.error->message : "HTTP " + std::to_string(r.status);
    ev.location = r.status < 400 ? "inference.stream" : "inference.response";
    ev.status = r.status;
    ev.tags = {{"model", r.model},
               {"project", r.project},
               {"key_id", r.key_id},
               {"request_id", r.request_id},
               {"endpoint", r.endpoint}};
    errors_.capture(std::move(ev));
  }
  if (request_log_)
    write_log(r);
}

void CallRecorder::write_log(const CallOutcome &r) {
  // Built by hand: a boost::json::object of 19 members costs more than the rest of a cached
  // request (measured with bench/overhead.sh).
  // Per-thread buffer and second-resolution timestamp prefix: both are reused across lines.
  thread_local std::string line;
  thread_local int64_t prefix_second = -1;
  thread_local std::string prefix;
  line.clear();
  {
    const int64_t second = r.arrived_unix_ms / 1000;
    if (second != prefix_second) {
      prefix = format_utc(second, "{\"timestamp\":\"%Y-%m-%dT%H:%M:%S.");
      prefix_second = second;
    }
    line += prefix;
    const int ms = static_cast<int>(r.arrived_unix_ms % 1000);
    line.push_back(static_cast<char>('0' + ms / 100));
    line.push_back(static_cast<char>('0' + ms / 10 % 10));
    line.push_back(static_cast<char>('0' + ms % 10));
    line += "Z\"";
  }
  auto str = [&](const char *k, std::string_view v) {
    line += ",\"";
    line += k;
    line += "\":";
    append_json_string(line, v);
  };
  auto num = [&](const char *k, double v) {
    line += ",\"";
    line += k;
    line += "\":";
    append_number(line, v);
  };
  auto integer = [&](const char *k, int64_t v) {
    line += ",\"";
    line += k;
    line += "\":";
    append_json_int(line, v);
  };
  auto raw = [&](const char *k, const char *v) {
    line += ",\"";
    line += k;
    line += "\":";
    line += v;
  };
  str("request_id", r.request_id);
  str("project", r.project);
  str("key_id", r.key_id);
  str("model", r.model);
  str("endpoint", r.endpoint);
  raw("stream", r.stream ? "true" : "false");
  integer("input_tokens", r.input_tokens);
  integer("output_tokens", r.output_tokens);
  integer("cached_tokens", r.cached_tokens);
  if (r.ttft_ms >= 0) {
    num("ttft_ms", r.ttft_ms);
  } else {
    raw("ttft_ms", "null");
  }
  num("latency_ms", r.latency_ms);
  if (r.queue_ms >= 0) {
    num("queue_ms", r.queue_ms);
  } else {
    raw("queue_ms", "null");
  }
  // A remote model's calls name the backend that served them ("model@host:port", issue 12);
  // local ones this instance.
  str("worker", r.served_by.find('@') != std::string::npos ? r.served_by : worker_);
  // The model that answered: a fallback's name when one took over (it set the price).
  str("served_model", r.served_model.empty() ? r.model : r.served_model);
  raw("cost_usd", std::isfinite(r.cost_usd) ? format_cost(r.cost_usd).c_str() : "null");
  raw("cached", r.cached ? "true" : "false");
  integer("status", r.status);
  if (r.finish_reason.empty()) {
    raw("finish_reason", "null");
  } else {
    str("finish_reason", r.finish_reason);
  }
  if (!r.error) {
    raw("error", "null");
  } else {
    // The message can echo client text (a field name, a model name, a key pasted as the
    // model): redact secrets before cutting, so a cut cannot leave a key unrecognisable, and
    // bound the line (audit L6).
    str("error", utf8_truncate(observe::redact_secrets(r.error->message), kMaxLoggedError));
  }
  line.push_back('}');
  request_log_->write(line);
}

} // namespace gantry::server
