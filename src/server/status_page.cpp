// The public status page of OperatorViews: /status.json for uptime checkers and the /status
// HTML, both built from the readiness samples OperatorViews records (operator_views.cpp).
#include <boost/json.hpp>

#include <ctime>

#include "core/time_format.h"
#include "dashboard/status_history.h"

#include "server/operator_views.h"

namespace gantry::server {
namespace json = boost::json;
using dashboard::ModelState;

namespace {

constexpr int64_t kDayMs = 86400LL * 1000;

std::string html_escape(std::string_view s) {
  std::string out;
  for (char c : s) {
    switch (c) {
    case '<': out += "&lt;"; break;
    case '>': out += "&gt;"; break;
    case '&': out += "&amp;"; break;
    case '"': out += "&quot;"; break;
    case '\'': out += "&#39;"; break;
    default: out.push_back(c);
    }
  }
  return out;
}

std::string iso_utc(int64_t ms) { return format_utc(ms / 1000, "%Y-%m-%d %H:%M:%S UTC"); }

std::string percent(double ratio) {
  if (ratio < 0)
    return "no data";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3f %%", ratio * 100);
  return buf;
}

int64_t samples_of(const std::vector<dashboard::UptimeCount> &v, const std::string &model) {
  for (const auto &c : v)
    if (c.model == model)
      return c.total;
  return 0;
}

double ratio_of(const std::vector<dashboard::UptimeCount> &v, const std::string &model) {
  for (const auto &c : v)
    if (c.model == model)
      return dashboard::uptime_ratio(c);
  return -1;
}

} // namespace

std::string OperatorViews::status_json() const {
  std::lock_guard<std::mutex> lk(mu_);
  ModelState overall = ModelState::kUp;
  json::array models;
  for (const auto &h : health_) {
    overall = std::min(overall, h.state);
    const double d = ratio_of(status_.day, h.name), m = ratio_of(status_.month, h.name);
    models.push_back(json::object{{"name", h.name},
                                  {"state", to_string(h.state)},
                                  {"checked_at", h.probed_at_ms / 1000},
                                  {"uptime_24h", d < 0 ? json::value(nullptr) : json::value(d)},
                                  {"uptime_30d", m < 0 ? json::value(nullptr) : json::value(m)},
                                  {"samples_30d", samples_of(status_.month, h.name)}});
  }
  json::array incidents;
  for (const auto &i : status_.incidents) {
    incidents.push_back(json::object{{"model", i.model},
                                     {"started_at", i.start_ms / 1000},
                                     {"last_down_at", i.end_ms / 1000},
                                     {"ongoing", i.ongoing}});
  }
  return json::serialize(
      json::object{{"status", health_.empty() ? "unknown" : std::string(to_string(overall))},
                   {"updated_at", status_.computed_at_ms / 1000},
                   {"models", std::move(models)},
                   {"incidents", std::move(incidents)}});
}

std::string OperatorViews::status_html() const {
  std::lock_guard<std::mutex> lk(mu_);
  ModelState overall = ModelState::kUp;
  for (const auto &h : health_)
    overall = std::min(overall, h.state);
  const std::string ov = health_.empty() ? "degraded" : std::string(to_string(overall));
  std::string h =
      "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
      "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
      "<meta http-equiv=\"refresh\" content=\"30\"><title>Gantry status</title>"
      "<link rel=\"icon\" href=\"/favicon.svg\" type=\"image/svg+xml\">"
      "<link rel=\"stylesheet\" href=\"/status.css\"></head><body><main><h1>Service status</h1>";
  h += "<div class=\"overall " + ov + "\" id=\"overall\">";
  h += health_.empty()                ? "Checking…"
       : overall == ModelState::kUp   ? "All models operational"
       : overall == ModelState::kDown ? "Some models are down"
                                      : "Some models are degraded";
  h += "</div><table id=\"models\"><tr><th>Model</th><th>State</th><th>Uptime 24 h</th>"
       "<th>Uptime 30 days</th></tr>";
  for (const auto &m : health_) {
    const std::string st(to_string(m.state));
    h += "<tr data-model=\"" + html_escape(m.name) + "\" data-state=\"" + st + "\"><td>" +
         html_escape(m.name) + "</td><td class=\"state " + st + "\">" + st + "</td><td>" +
         percent(ratio_of(status_.day, m.name)) + "</td><td>" +
         percent(ratio_of(status_.month, m.name)) + "</td></tr>";
  }
  h += "</table><h2>Incidents (last 30 days)</h2>";
  if (status_.incidents.empty()) {
    h += "<p class=\"muted\" id=\"incidents\">No incidents.</p>";
  } else {
    h += "<table id=\"incidents\"><tr><th>Model</th><th>Down from</th><th>Until</th></tr>";
    for (const auto &i : status_.incidents) {
      h += "<tr><td>" + html_escape(i.model) + "</td><td>" + iso_utc(i.start_ms) + "</td><td>" +
           (i.ongoing ? std::string("ongoing") : iso_utc(i.end_ms)) + "</td></tr>";
    }
    h += "</table>";
  }
  h += "<p class=\"muted\">Updated " + iso_utc(status_.computed_at_ms) +
       ". Machine-readable: <a href=\"/status.json\">/status.json</a>.</p></main></body></html>";
  return h;
}

} // namespace gantry::server
