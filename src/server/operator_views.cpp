#include "server/operator_views.h"

#include <boost/json.hpp>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <ctime>
#include <map>
#include <stdexcept>

#include "core/time_format.h"
#include "dashboard/prom_text.h"
#include "dashboard/web_assets.h"
#include "http/response_writer.h"
#include "server/admin_api.h"

namespace gantry::server {
namespace json = boost::json;
using W = std::shared_ptr<http::ResponseWriter>;
using dashboard::ModelState;

namespace {

constexpr int64_t kDayMs = 86400LL * 1000;
constexpr int64_t kKeepMs = 31 * kDayMs; // 30 days of uptime and a day of slack
constexpr size_t kMaxIncidentSamples = 20000;
constexpr size_t kMaxIncidents = 50;
constexpr size_t kTopSpenders = 10;

// Nothing the page loads may come from elsewhere, and it may not be framed.
constexpr const char *kDashboardCsp =
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";
constexpr const char *kStatusCsp =
    "default-src 'none'; style-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'";

void secure_headers(http::Response &r, const char *csp) {
  r.headers.push_back({"Content-Security-Policy", csp});
  r.headers.push_back({"X-Content-Type-Options", "nosniff"});
  r.headers.push_back({"Referrer-Policy", "no-referrer"});
  r.headers.push_back({"X-Frame-Options", "DENY"});
  r.headers.push_back({"Cache-Control", "no-store"});
}

http::Response asset(std::string_view name, const char *csp) {
  const auto *a = dashboard::find_web_asset(name);
  if (!a)
    return http::error_response(Error{ErrorCode::kNotFound, "No such file", ""});
  http::Response r{200, std::string(a->content_type), {}, std::string(a->body)};
  secure_headers(r, csp);
  return r;
}

// Collects the /readyz answer handed to it (the readiness check answers on whichever thread
// finished the last probe).
class CaptureWriter final : public http::ResponseWriter {
public:
  explicit CaptureWriter(std::function<void(http::Response)> done) : done_(std::move(done)) {}
  void respond(http::Response response) override {
    if (!done_)
      return;
    auto done = std::move(done_);
    done_ = nullptr;
    done(std::move(response));
  }
  void start_sse(http::Headers) override {}
  bool send_event(std::string) override { return false; }
  bool send_named_event(std::string_view, std::string) override { return false; }
  void end() override {}
  bool is_closed() const override { return !done_; }
  void on_close(std::function<void()>) override {}
  const std::string &request_id() const override { return id_; }

private:
  std::function<void(http::Response)> done_;
  const std::string id_ = "status-probe";
};

json::value num(double v) {
  if (std::isnan(v) || std::isinf(v))
    return nullptr;
  return v;
}

int64_t month_start_ms(int64_t now_s) { return utc_month_start(now_s) * 1000; }

} // namespace

OperatorViewsOptions operator_views_options_from_env() {
  OperatorViewsOptions o;
  if (const char *v = std::getenv("GANTRY_STATUS_PROBE_S"); v && *v) {
    char *end = nullptr;
    const double s = std::strtod(v, &end);
    if (*end != '\0' || !(s >= 0) || s > 86400)
      throw std::invalid_argument("GANTRY_STATUS_PROBE_S must be seconds between 0 and 86400");
    o.readiness_interval = std::chrono::milliseconds(static_cast<int64_t>(s * 1000));
  }
  return o;
}

OperatorViews::OperatorViews(OperatorViewsDeps deps, OperatorViewsOptions options)
    : deps_(std::move(deps)), options_(options), ring_(options.ring_points) {
  if (!deps_.readiness_log)
    deps_.readiness_log = std::make_unique<dashboard::MemoryReadinessLog>();
}

OperatorViews::~OperatorViews() { stop(); }

void OperatorViews::start() {
  if (!thread_.joinable())
    thread_ = std::thread([this] { run(); });
}

void OperatorViews::stop() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable())
    thread_.join();
}

void OperatorViews::run() {
  auto next_probe = std::chrono::steady_clock::time_point{};
  int64_t last_purge_ms = 0;
  while (true) {
    sample();
    record_readiness();
    const auto now = deps_.clock->now();
    if (now >= next_probe) {
      next_probe = now + options_.readiness_interval;
      if (options_.readiness_interval.count() > 0)
        probe();
      refresh_spend();
      refresh_status();
      const int64_t now_ms = deps_.clock->unix_millis();
      if (now_ms - last_purge_ms > 3600 * 1000) {
        last_purge_ms = now_ms;
        if (auto st = deps_.readiness_log->purge(now_ms - kKeepMs); !st)
          std::fprintf(stderr, "status: purge: %s\n", st.error().message.c_str());
      }
    }
    std::unique_lock<std::mutex> lk(mu_);
    if (cv_.wait_for(lk, options_.sample_interval, [this] { return stop_; }))
      return;
  }
}

void OperatorViews::sample() {
  ring_.add(deps_.clock->unix_millis(), dashboard::parse_prom_text(deps_.metrics_text()));
}

void OperatorViews::probe() {
  if (!deps_.readiness)
    return;
  deps_.readiness(std::make_shared<CaptureWriter>([this](http::Response r) {
    {
      std::lock_guard<std::mutex> lk(mu_);
      if (stop_)
        return;
      ready_body_ = std::move(r.body);
    }
    cv_.notify_all(); // record it now, not a second later: /status follows readiness closely
  }));
}

void OperatorViews::record_readiness() {
  std::string body;
  {
    std::lock_guard<std::mutex> lk(mu_);
    body.swap(ready_body_);
  }
  if (body.empty())
    return;
  boost::system::error_code ec;
  json::value v = json::parse(body, ec);
  if (ec || !v.is_object())
    return;
  const auto *checks = v.as_object().if_contains("checks");
  if (!checks || !checks->is_array())
    return;
  const int64_t now_ms = deps_.clock->unix_millis();
  bool store_ok = true;
  for (const auto &c : checks->as_array())
    if (c.is_object() && c.as_object().if_contains("name") && c.as_object().at("name") == "store" &&
        c.as_object().at("status") != "ok")
      store_ok = false;
  std::vector<dashboard::ReadinessSample> samples;
  std::vector<ModelHealth> health;
  std::vector<DependencyHealth> dependencies;
  std::vector<BackendHealth> backends;
  auto str = [](const json::object &o, const char *k) {
    const auto *v = o.if_contains(k);
    return v && v->is_string() ? std::string(v->as_string()) : std::string();
  };
  auto num = [](const json::object &o, const char *k) {
    const auto *v = o.if_contains(k);
    return v && v->is_number() ? v->to_number<double>() : 0.0;
  };
  for (const auto &c : checks->as_array()) {
    if (!c.is_object())
      continue;
    const auto &o = c.as_object();
    const auto *name = o.if_contains("name");
    if (!name || !name->is_string())
      continue;
    if (!name->as_string().starts_with("model:")) {
      dependencies.push_back({std::string(name->as_string()), str(o, "status") == "ok",
                              num(o, "latency_ms"), str(o, "error")});
      continue;
    }
    if (const auto *pool = o.if_contains("backends"); pool && pool->is_array()) {
      for (const auto &b : pool->as_array()) {
        if (!b.is_object())
          continue;
        const auto &bo = b.as_object();
        const auto *ready = bo.if_contains("ready");
        const auto *ejected = bo.if_contains("ejected");
        backends.push_back({std::string(name->as_string()).substr(6), str(bo, "backend"),
                            ready && ready->is_bool() && ready->as_bool(),
                            ejected && ejected->is_bool() && ejected->as_bool(),
                            static_cast<int64_t>(num(bo, "in_flight"))});
      }
    }
    ModelHealth h;
    h.name = std::string(name->as_string()).substr(6);
    const auto *lat = o.if_contains("latency_ms");
    h.probe_ms = lat && lat->is_number() ? lat->to_number<double>() : 0;
    h.probed_at_ms = now_ms;
    const auto *st = o.if_contains("status");
    const bool ok = st && *st == "ok";
    h.state = !ok                                                      ? ModelState::kDown
              : (!store_ok || h.probe_ms > options_.degraded_probe_ms) ? ModelState::kDegraded
                                                                       : ModelState::kUp;
    samples.push_back({h.name, now_ms, h.state, h.probe_ms});
    if (deps_.metrics) {
      const telemetry::Labels ml{{"model_name", h.name}};
      deps_.metrics
          ->gauge("model_ready",
                  "1 when the model's last readiness probe passed (the /status probe).", ml)
          .set(h.state == ModelState::kDown ? 0 : 1);
      deps_.metrics
          ->gauge("model_probe_seconds", "How long the model's last readiness probe took.", ml)
          .set(h.probe_ms / 1000);
    }
    health.push_back(std::move(h));
  }
  if (auto st = deps_.readiness_log->append(samples); !st)
    std::fprintf(stderr, "status: recording readiness: %s\n", st.error().message.c_str());
  {
    std::lock_guard<std::mutex> lk(mu_);
    health_ = std::move(health);
    dependencies_ = std::move(dependencies);
    backends_ = std::move(backends);
  }
  refresh_status();
}

void OperatorViews::refresh_spend() {
  if (!deps_.control)
    return;
  const int64_t now_ms = deps_.clock->unix_millis();
  const int64_t day0 = now_ms - now_ms % kDayMs;
  const int64_t month0 = month_start_ms(now_ms / 1000);
  auto &ledger = deps_.control->usage_ledger();
  auto top = [&](control::GroupBy by, double &today_total, double &month_total) {
    std::map<std::string, Spender> m;
    today_total = month_total = 0;
    if (auto rows = ledger.usage_report(by, month0, now_ms + 1)) {
      for (const auto &g : *rows) {
        m[g.group].id = g.group;
        m[g.group].month_usd += g.totals.cost_usd;
        month_total += g.totals.cost_usd;
      }
    }
    if (auto rows = ledger.usage_report(by, day0, now_ms + 1)) {
      for (const auto &g : *rows) {
        m[g.group].id = g.group;
        m[g.group].today_usd += g.totals.cost_usd;
        today_total += g.totals.cost_usd;
      }
    }
    std::vector<Spender> v;
    for (auto &[id, s] : m)
      v.push_back(std::move(s));
    std::sort(v.begin(), v.end(), [](const Spender &a, const Spender &b) {
      return a.month_usd != b.month_usd ? a.month_usd > b.month_usd : a.id < b.id;
    });
    if (v.size() > kTopSpenders)
      v.resize(kTopSpenders);
    return v;
  };
  double pt = 0, pm = 0, kt = 0, km = 0;
  auto projects = top(control::GroupBy::kProject, pt, pm);
  auto keys = top(control::GroupBy::kKey, kt, km);
  std::lock_guard<std::mutex> lk(mu_);
  projects_ = std::move(projects);
  keys_ = std::move(keys);
  spend_today_ = pt;
  spend_month_ = pm;
}

void OperatorViews::refresh_status() {
  const int64_t now_ms = deps_.clock->unix_millis();
  StatusSummary s;
  s.computed_at_ms = now_ms;
  auto &log = *deps_.readiness_log;
  if (auto c = log.counts(now_ms - kDayMs))
    s.day = std::move(*c);
  if (auto c = log.counts(now_ms - 30 * kDayMs))
    s.month = std::move(*c);
  const int64_t gap = 3 * static_cast<int64_t>(options_.readiness_interval.count());
  if (auto down = log.down_since(now_ms - 30 * kDayMs, kMaxIncidentSamples))
    s.incidents = dashboard::incidents_from(*down, gap);
  if (s.incidents.size() > kMaxIncidents)
    s.incidents.resize(kMaxIncidents);
  std::lock_guard<std::mutex> lk(mu_);
  for (auto &inc : s.incidents) {
    for (const auto &h : health_)
      if (h.name == inc.model && h.state == ModelState::kDown && h.probed_at_ms - inc.end_ms <= gap)
        inc.ongoing = true;
  }
  status_ = std::move(s);
}

std::string OperatorViews::dashboard_json(int64_t since_ms) const {
  // A first load gets the hour thinned to 900 points; later polls only what is new since the
  // last point they hold, so an open dashboard moves a few hundred bytes a poll, not the hour.
  const auto points = since_ms > 0 ? ring_.points(since_ms) : ring_.points(0, 900);
  const auto latest = ring_.latest();
  json::object p;
  auto column = [&](const char *name, auto member) {
    json::array a;
    a.reserve(points.size());
    for (const auto &pt : points)
      a.push_back(num(static_cast<double>(pt.*member)));
    p[name] = std::move(a);
  };
  using dashboard::Point;
  column("t", &Point::t_ms);
  column("req_2xx", &Point::req_2xx);
  column("req_4xx", &Point::req_4xx);
  column("req_5xx", &Point::req_5xx);
  column("ttft_p50", &Point::ttft_p50);
  column("ttft_p95", &Point::ttft_p95);
  column("ttft_p99", &Point::ttft_p99);
  column("e2e_p50", &Point::e2e_p50);
  column("e2e_p95", &Point::e2e_p95);
  column("e2e_p99", &Point::e2e_p99);
  column("tokens_in", &Point::tokens_in);
  column("tokens_out", &Point::tokens_out);
  column("running", &Point::running);
  column("waiting", &Point::waiting);
  column("kv_usage_max", &Point::kv_usage_max);
  column("cache_hit_ratio", &Point::cache_hit_ratio);
  column("prefix_hit_ratio", &Point::prefix_hit_ratio);
  column("jobs_queued", &Point::jobs_queued);
  column("in_flight", &Point::in_flight);
  column("errors", &Point::errors);
  column("ledger_pending", &Point::ledger_pending);

  std::lock_guard<std::mutex> lk(mu_);
  json::array models;
  for (const auto &m : latest.models) {
    json::object o{
        {"name", m.name},         {"running", m.running},           {"waiting", m.waiting},
        {"kv_usage", m.kv_usage}, {"breaker_open", m.breaker_open}, {"state", "unknown"},
        {"probe_ms", nullptr}};
    for (const auto &h : health_) {
      if (h.name == m.name) {
        o["state"] = to_string(h.state);
        o["probe_ms"] = h.probe_ms;
      }
    }
    models.push_back(std::move(o));
  }
  json::array dependencies;
  for (const auto &d : dependencies_) {
    json::object o{{"name", d.name}, {"ok", d.ok}, {"latency_ms", d.latency_ms}};
    if (!d.error.empty())
      o["error"] = d.error;
    dependencies.push_back(std::move(o));
  }
  json::array backends;
  for (const auto &b : backends_)
    backends.push_back(json::object{{"model", b.model},
                                    {"backend", b.backend},
                                    {"ready", b.ready},
                                    {"ejected", b.ejected},
                                    {"in_flight", b.in_flight}});
  json::object by_outcome;
  for (const auto &[k, v] : latest.jobs_by_outcome)
    by_outcome[k] = v;
  json::object by_status;
  for (const auto &[k, v] : latest.requests_by_status)
    by_status[k] = v;
  json::array budgets;
  if (deps_.control) {
    for (const auto &b : deps_.control->budget_states()) {
      const double ratio =
          b.budget.spend_limit_usd > 0
              ? b.used_usd / b.budget.spend_limit_usd
              : static_cast<double>(b.used_tokens) /
                    static_cast<double>(std::max<int64_t>(b.budget.token_quota, 1));
      budgets.push_back(json::object{{"owner_kind", control::to_string(b.budget.owner_kind)},
                                     {"owner_id", b.budget.owner_id},
                                     {"period", control::to_string(b.budget.period)},
                                     {"used_usd", b.used_usd},
                                     {"spend_limit_usd", b.budget.spend_limit_usd},
                                     {"used_tokens", b.used_tokens},
                                     {"token_quota", b.budget.token_quota},
                                     {"ratio", ratio}});
    }
  }
  auto spenders = [](const std::vector<Spender> &v) {
    json::array a;
    for (const auto &s : v)
      a.push_back(
          json::object{{"id", s.id}, {"today_usd", s.today_usd}, {"month_usd", s.month_usd}});
    return a;
  };
  json::array errors;
  if (deps_.errors) {
    for (const auto &g : deps_.errors->groups(20)) {
      errors.push_back(json::object{{"fingerprint", g.fingerprint},
                                    {"type", g.type},
                                    {"message", g.message_template},
                                    {"location", g.location},
                                    {"count", g.count},
                                    {"first_seen", g.first_seen},
                                    {"last_seen", g.last_seen}});
    }
  }
  const double queued = points.empty() ? 0 : points.back().jobs_queued;
  const double oldest = points.empty() ? 0 : points.back().oldest_job_age_s;
  json::object out{
      {"object", "dashboard"},
      {"now_ms", deps_.clock->unix_millis()},
      {"points", std::move(p)},
      {"models", std::move(models)},
      {"dependencies", std::move(dependencies)},
      {"backends", std::move(backends)},
      {"jobs", json::object{{"queued", queued},
                            {"oldest_age_s", oldest},
                            {"by_outcome", std::move(by_outcome)}}},
      {"requests_by_status", std::move(by_status)},
      {"budgets", std::move(budgets)},
      {"spend", json::object{{"today_usd", spend_today_},
                             {"month_usd", spend_month_},
                             {"top_projects", spenders(projects_)},
                             {"top_keys", spenders(keys_)}}},
      {"errors", std::move(errors)},
  };
  return json::serialize(out);
}
void OperatorViews::add_dashboard_routes(http::Router &r) {
  r.get("/dashboard",
        [](http::Request &&, W w) { w->respond(asset("index.html", kDashboardCsp)); });
  r.get("/dashboard/app.js",
        [](http::Request &&, W w) { w->respond(asset("app.js", kDashboardCsp)); });
  r.get("/dashboard/app.css",
        [](http::Request &&, W w) { w->respond(asset("app.css", kDashboardCsp)); });
  r.get("/admin/v1/dashboard", [this](http::Request &&req, W w) {
    if (auto refused = deps_.admin_auth->check(req))
      return w->respond(http::error_response(*refused));
    int64_t since = 0;
    if (auto v = req.query_param("since")) {
      auto [p, ec] = std::from_chars(v->data(), v->data() + v->size(), since);
      if (ec != std::errc() || p != v->data() + v->size() || since < 0) {
        return w->respond(http::error_response(
            Error::invalid("since must be unix milliseconds (the last point's t)", "since")));
      }
    }
    http::Response resp = http::Response::json(200, dashboard_json(since));
    resp.headers.push_back({"Cache-Control", "no-store"});
    w->respond(std::move(resp));
  });
}

void OperatorViews::add_status_routes(http::Router &r) {
  r.get("/status", [this](http::Request &&, W w) {
    http::Response resp{200, "text/html; charset=utf-8", {}, status_html()};
    secure_headers(resp, kStatusCsp);
    w->respond(std::move(resp));
  });
  r.get("/status.css", [](http::Request &&, W w) { w->respond(asset("status.css", kStatusCsp)); });
  r.get("/favicon.svg",
        [](http::Request &&, W w) { w->respond(asset("favicon.svg", kStatusCsp)); });
  r.get("/status.json", [this](http::Request &&, W w) {
    http::Response resp = http::Response::json(200, status_json());
    resp.headers.push_back({"Cache-Control", "no-store"});
    resp.headers.push_back({"Access-Control-Allow-Origin", "*"}); // uptime checkers, any origin
    w->respond(std::move(resp));
  });
}

} // namespace gantry::server
