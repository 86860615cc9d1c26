#include "server/admin_api.h"

#include <boost/json.hpp>
#include <openssl/crypto.h>

#include <algorithm>
#include <charconv>
#include <ctime>

#include "api/json_body.h"
#include "control/key_service.h"

namespace gantry::server {
namespace json = boost::json;
using W = std::shared_ptr<http::ResponseWriter>;

namespace {

void send_error(const W &w, Error e) { w->respond(http::error_response(e)); }
void send_json(const W &w, int status, const json::value &v) {
  w->respond(http::Response::json(status, json::serialize(v)));
}

Result<json::object> body_object(const http::Request &req) {
  if (req.body.empty())
    return json::object{};
  return api::parse_object_body(req.body);
}

Result<int64_t> get_int(const json::object &o, std::string_view key, int64_t dflt = 0) {
  auto it = o.find(key);
  if (it == o.end() || it->value().is_null())
    return dflt;
  if (it->value().is_int64())
    return it->value().as_int64();
  if (it->value().is_uint64())
    return static_cast<int64_t>(it->value().as_uint64());
  return Err(Error::invalid("'" + std::string(key) + "' must be an integer", std::string(key)));
}

Result<double> get_number(const json::object &o, std::string_view key, double dflt = 0) {
  auto it = o.find(key);
  if (it == o.end() || it->value().is_null())
    return dflt;
  if (it->value().is_number())
    return it->value().to_number<double>();
  return Err(Error::invalid("'" + std::string(key) + "' must be a number", std::string(key)));
}

Result<std::string> get_string(const json::object &o, std::string_view key, std::string dflt = {}) {
  auto it = o.find(key);
  if (it == o.end() || it->value().is_null())
    return dflt;
  if (!it->value().is_string()) {
    return Err(Error::invalid("'" + std::string(key) + "' must be a string", std::string(key)));
  }
  return std::string(it->value().as_string());
}

// A duration given as seconds (number) or text ("30d").
Result<int64_t> get_duration(const json::object &o, std::string_view key) {
  auto it = o.find(key);
  if (it == o.end() || it->value().is_null())
    return 0;
  if (it->value().is_string())
    return control::parse_duration_s(it->value().as_string());
  return get_int(o, key);
}

// Unix seconds or YYYY-MM-DD (UTC) in a query parameter.
Result<int64_t> parse_time(std::string_view v, const char *name) {
  int64_t n = 0;
  auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
  if (ec == std::errc() && p == v.data() + v.size())
    return n;
  std::tm tm{};
  if (v.size() == 10 && strptime(std::string(v).c_str(), "%Y-%m-%d", &tm)) {
    return static_cast<int64_t>(timegm(&tm));
  }
  return Err(Error::invalid(std::string(name) + " must be unix seconds or YYYY-MM-DD", name));
}

json::object budget_json(const control::Budget &b) {
  json::array th;
  for (int t : b.alert_thresholds)
    th.push_back(t);
  return {{"owner_kind", to_string(b.owner_kind)}, {"owner_id", b.owner_id},
          {"period", to_string(b.period)},         {"token_quota", b.token_quota},
          {"spend_limit_usd", b.spend_limit_usd},  {"alert_thresholds", std::move(th)}};
}

json::object project_json(const control::Project &p) {
  return {{"id", p.id},
          {"rpm", p.limits.rpm},
          {"tpm", p.limits.tpm},
          {"max_concurrent", p.limits.max_concurrent},
          {"created_at", p.created_at}};
}

} // namespace

std::optional<Error> check_admin_token(const http::Request &req, const std::string &token) {
  if (token.empty())
    return Error{ErrorCode::kPermissionDenied,
                 "The admin API is disabled. Set GANTRY_ADMIN_TOKEN (or "
                 "GANTRY_ADMIN_TOKEN_FILE) to enable it.",
                 ""};
  auto h = req.header("Authorization");
  const std::string want = "Bearer " + token;
  if (!h || h->size() != want.size() || CRYPTO_memcmp(h->data(), want.data(), want.size()))
    return Error{ErrorCode::kUnauthorized, "A valid admin token is required.", ""};
  return std::nullopt;
}

Result<std::unique_ptr<AdminAuth>> AdminAuth::create(std::string token, const Clock &clock,
                                                     Log log) {
  if (!token.empty() && token.size() < kMinTokenLength) {
    return Err(Error::invalid("GANTRY_ADMIN_TOKEN must be at least " +
                                  std::to_string(kMinTokenLength) + " characters (it has " +
                                  std::to_string(token.size()) +
                                  "); generate one with `openssl rand -hex 32`",
                              "GANTRY_ADMIN_TOKEN"));
  }
  return std::unique_ptr<AdminAuth>(new AdminAuth(std::move(token), clock, std::move(log)));
}

size_t AdminAuth::tracked_peers() const {
  std::lock_guard<std::mutex> lk(mu_);
  return peers_.size();
}

std::optional<Error> AdminAuth::check(const http::Request &req) {
  if (token_.empty())
    return check_admin_token(req, token_);
  // The server writes "<address>:<port>" (IPv6 unbracketed): the throttle is per address,
  // whatever the source port.
  std::string peer = req.remote_address;
  if (auto colon = peer.rfind(':'); colon != std::string::npos)
    peer.resize(colon);
  const auto now = clock_.now();
  std::unique_lock<std::mutex> lk(mu_);
  auto it = peers_.find(peer);
  if (it != peers_.end() && now - it->second.window_start >= kWindow) {
    peers_.erase(it);
    it = peers_.end();
  }
  if (it != peers_.end() && it->second.count >= kMaxFailures) {
    const auto left =
        std::chrono::ceil<std::chrono::milliseconds>(it->second.window_start + kWindow - now);
    Error e{ErrorCode::kRateLimited,
            "Too many failed admin authentications from this address; try again later.", ""};
    e.retry_after_ms = std::max<int64_t>(left.count(), 1);
    return e;
  }
  lk.unlock();
  auto refused = check_admin_token(req, token_);
  if (!refused)
    return std::nullopt;
  lk.lock();
  it = peers_.find(peer);
  if (it == peers_.end()) {
    if (peers_.size() >= kMaxPeers) {
      for (auto p = peers_.begin(); p != peers_.end();) {
        p = now - p->second.window_start >= kWindow ? peers_.erase(p) : std::next(p);
      }
    }
    if (peers_.size() >= kMaxPeers) {
      auto oldest =
          std::min_element(peers_.begin(), peers_.end(), [](const auto &a, const auto &b) {
            return a.second.window_start < b.second.window_start;
          });
      peers_.erase(oldest);
    }
    it = peers_.emplace(peer, Failures{now, 0}).first;
  }
  const int n = ++it->second.count;
  lk.unlock();
  if (log_) {
    // The peer is an address the server saw and the path went through the router; neither
    // contains what the client sent as the token.
    std::string line = "admin: failed authentication from " + peer + " (" + req.path + "), " +
                       std::to_string(n) + " in this window";
    if (n == kMaxFailures) {
      line += "; further attempts from this address are refused for " +
              std::to_string(kWindow.count()) + " s";
    }
    log_(line);
  }
  return refused;
}

void add_admin_routes(http::Router &r, control::ControlPlane &ctl, AdminAuth &auth,
                      const Clock &clock, const observe::ErrorTracker *errors) {
  // Wraps a handler with the admin-token check (constant-time, throttled per peer).
  auto guard = [&auth](auto fn) {
    return [&auth, fn](http::Request &&req, W w) {
      if (auto refused = auth.check(req))
        return send_error(w, *refused);
      fn(std::move(req), std::move(w));
    };
  };

  r.get("/admin/v1/keys", guard([&ctl, &clock](http::Request &&req, W w) {
          auto keys = ctl.key_store().list_keys(req.query_param("project").value_or(""));
          if (!keys)
            return send_error(w, keys.error());
          json::array data;
          for (const auto &k : *keys)
            data.push_back(control::key_json(k, clock.unix_seconds()));
          send_json(w, 200, json::object{{"object", "list"}, {"data", std::move(data)}});
        }));
  r.post("/admin/v1/keys", guard([&ctl, &clock](http::Request &&req, W w) {
           auto body = body_object(req);
           if (!body)
             return send_error(w, body.error());
           control::CreateKeyOptions o;
           auto project = get_string(*body, "project");
           auto name = get_string(*body, "name");
           auto rpm = get_int(*body, "rpm");
           auto tpm = get_int(*body, "tpm");
           auto conc = get_int(*body, "max_concurrent");
           auto exp = get_duration(*body, "expires_in");
           for (const Status &st :
                {project.ok() ? Ok() : Status(project.error()),
                 name.ok() ? Ok() : Status(name.error()), rpm.ok() ? Ok() : Status(rpm.error()),
                 tpm.ok() ? Ok() : Status(tpm.error()), conc.ok() ? Ok() : Status(conc.error()),
                 exp.ok() ? Ok() : Status(exp.error())}) {
             if (!st)
               return send_error(w, st.error());
           }
           o.project = *project;
           o.name = *name;
           o.limits = {*rpm, *tpm, *conc};
           o.expires_in_s = *exp;
           if (auto it = body->find("models"); it != body->end() && !it->value().is_null()) {
             if (!it->value().is_array()) {
               return send_error(w, Error::invalid("'models' must be an array", "models"));
             }
             for (const auto &m : it->value().as_array()) {
               if (!m.is_string()) {
                 return send_error(w, Error::invalid("'models' must hold strings", "models"));
               }
               o.models.emplace_back(m.as_string());
             }
           }
           auto issued =
               control::create_key(ctl.key_store(), ctl.keys().pepper(), o, clock.unix_seconds());
           if (!issued)
             return send_error(w, issued.error());
           (void)ctl.keys().refresh();
           json::object out = control::key_json(issued->record, clock.unix_seconds());
           out["key"] = issued->key;
           send_json(w, 201, out);
         }));
  r.post("/admin/v1/keys/{id}/rotate", guard([&ctl, &clock](http::Request &&req, W w) {
           auto body = body_object(req);
           if (!body)
             return send_error(w, body.error());
           auto grace = get_duration(*body, "grace");
           if (!grace)
             return send_error(w, grace.error());
           auto issued =
               control::rotate_key(ctl.key_store(), ctl.keys().pepper(),
                                   std::string(req.path_param("id")), *grace, clock.unix_seconds());
           if (!issued)
             return send_error(w, issued.error());
           (void)ctl.keys().refresh();
           json::object out = control::key_json(issued->record, clock.unix_seconds());
           out["key"] = issued->key;
           send_json(w, 200, out);
         }));
  r.post("/admin/v1/keys/{id}/revoke", guard([&ctl, &clock](http::Request &&req, W w) {
           auto k = control::revoke_key(ctl.key_store(), std::string(req.path_param("id")),
                                        clock.unix_seconds());
           if (!k)
             return send_error(w, k.error());
           (void)ctl.keys().refresh();
           send_json(w, 200, control::key_json(*k, clock.unix_seconds()));
         }));

  r.get("/admin/v1/projects", guard([&ctl](http::Request &&, W w) {
          auto ps = ctl.key_store().list_projects();
          if (!ps)
            return send_error(w, ps.error());
          json::array data;
          for (const auto &p : *ps)
            data.push_back(project_json(p));
          send_json(w, 200, json::object{{"object", "list"}, {"data", std::move(data)}});
        }));
  r.post("/admin/v1/projects", guard([&ctl, &clock](http::Request &&req, W w) {
           auto body = body_object(req);
           if (!body)
             return send_error(w, body.error());
           auto id = get_string(*body, "id");
           auto rpm = get_int(*body, "rpm");
           auto tpm = get_int(*body, "tpm");
           auto conc = get_int(*body, "max_concurrent");
           if (!id || id->empty())
             return send_error(w, Error::invalid("'id' is required", "id"));
           if (!rpm || !tpm || !conc || *rpm < 0 || *tpm < 0 || *conc < 0) {
             return send_error(w, Error::invalid("rpm, tpm and max_concurrent must be "
                                                 "non-negative integers"));
           }
           control::Project p{*id, {*rpm, *tpm, *conc}, clock.unix_seconds()};
           if (auto old = ctl.key_store().get_project(*id); old && *old)
             p.created_at = (*old)->created_at;
           if (auto st = ctl.key_store().put_project(p); !st)
             return send_error(w, st.error());
           send_json(w, 200, project_json(p));
         }));

  r.get("/admin/v1/budgets", guard([&ctl](http::Request &&, W w) {
          json::array data;
          for (const auto &s : ctl.budget_states()) {
            json::object o = budget_json(s.budget);
            o["period_start"] = s.period_start;
            o["used_tokens"] = s.used_tokens;
            o["used_usd"] = s.used_usd;
            o["reserved_tokens"] = s.reserved_tokens;
            o["reserved_usd"] = s.reserved_usd;
            data.push_back(std::move(o));
          }
          send_json(w, 200, json::object{{"object", "list"}, {"data", std::move(data)}});
        }));
  r.post("/admin/v1/budgets", guard([&ctl](http::Request &&req, W w) {
           auto body = body_object(req);
           if (!body)
             return send_error(w, body.error());
           control::Budget b;
           auto kind = get_string(*body, "owner_kind", "project");
           auto owner = get_string(*body, "owner_id");
           auto period = get_string(*body, "period", "month");
           auto quota = get_int(*body, "token_quota");
           auto usd = get_number(*body, "spend_limit_usd");
           if (!kind || !control::owner_kind_from(*kind)) {
             return send_error(
                 w, Error::invalid("owner_kind must be 'key' or 'project'", "owner_kind"));
           }
           if (!owner || owner->empty()) {
             return send_error(w, Error::invalid("'owner_id' is required", "owner_id"));
           }
           if (!period || !control::period_from(*period)) {
             return send_error(w, Error::invalid("period must be 'day' or 'month'", "period"));
           }
           if (!quota || !usd || *quota < 0 || *usd < 0 || (*quota == 0 && *usd == 0)) {
             return send_error(w, Error::invalid("give a positive token_quota and/or "
                                                 "spend_limit_usd"));
           }
           b.owner_kind = *control::owner_kind_from(*kind);
           b.owner_id = *owner;
           b.period = *control::period_from(*period);
           b.token_quota = *quota;
           b.spend_limit_usd = *usd;
           if (auto it = body->find("alert_thresholds"); it != body->end()) {
             if (!it->value().is_array()) {
               return send_error(w, Error::invalid("alert_thresholds must be an array of "
                                                   "percentages",
                                                   "alert_thresholds"));
             }
             b.alert_thresholds.clear();
             for (const auto &t : it->value().as_array()) {
               if (!t.is_int64() || t.as_int64() < 1 || t.as_int64() > 1000) {
                 return send_error(w, Error::invalid("alert_thresholds must be integers 1..1000",
                                                     "alert_thresholds"));
               }
               b.alert_thresholds.push_back(static_cast<int>(t.as_int64()));
             }
           }
           if (auto st = ctl.budget_store().put_budget(b); !st)
             return send_error(w, st.error());
           if (auto st = ctl.reload_budgets(); !st)
             return send_error(w, st.error());
           send_json(w, 200, budget_json(b));
         }));
  r.del("/admin/v1/budgets", guard([&ctl](http::Request &&req, W w) {
          auto kind = control::owner_kind_from(req.query_param("owner_kind").value_or("project"));
          auto period = control::period_from(req.query_param("period").value_or("month"));
          auto owner = req.query_param("owner_id");
          if (!kind || !period || !owner) {
            return send_error(w, Error::invalid("give owner_kind, owner_id and period"));
          }
          if (auto st = ctl.budget_store().delete_budget(*kind, *owner, *period); !st) {
            return send_error(w, st.error());
          }
          if (auto st = ctl.reload_budgets(); !st)
            return send_error(w, st.error());
          send_json(w, 200, json::object{{"deleted", true}});
        }));

  r.get("/admin/v1/usage", guard([&ctl, &clock](http::Request &&req, W w) {
          const std::string g(req.query_param("group_by").value_or("project"));
          control::GroupBy gb;
          if (g == "key") {
            gb = control::GroupBy::kKey;
          } else if (g == "project") {
            gb = control::GroupBy::kProject;
          } else if (g == "model") {
            gb = control::GroupBy::kModel;
          } else {
            return send_error(w,
                              Error::invalid("group_by must be key, project or model", "group_by"));
          }
          int64_t from = 0, to = clock.unix_seconds() + 1;
          if (auto f = req.query_param("from")) {
            auto v = parse_time(*f, "from");
            if (!v)
              return send_error(w, v.error());
            from = *v;
          }
          if (auto t = req.query_param("to")) {
            auto v = parse_time(*t, "to");
            if (!v)
              return send_error(w, v.error());
            to = *v;
          }
          // Rows still waiting for the next batch are included, so the report is current.
          (void)ctl.flush();
          auto rows = ctl.usage_ledger().usage_report(gb, from * 1000, to * 1000);
          if (!rows)
            return send_error(w, rows.error());
          json::array data;
          for (const auto &row : *rows) {
            data.push_back(json::object{{g, row.group},
                                        {"requests", row.totals.requests},
                                        {"input_tokens", row.totals.input_tokens},
                                        {"output_tokens", row.totals.output_tokens},
                                        {"cost_usd", row.totals.cost_usd}});
          }
          send_json(w, 200,
                    json::object{{"object", "list"},
                                 {"group_by", g},
                                 {"from", from},
                                 {"to", to},
                                 {"data", std::move(data)}});
        }));

  r.get("/admin/v1/errors", guard([errors](http::Request &&req, W w) {
          size_t limit = 100;
          if (auto l = req.query_param("limit")) {
            int64_t n = 0;
            auto [p, ec] = std::from_chars(l->data(), l->data() + l->size(), n);
            if (ec != std::errc() || p != l->data() + l->size() || n < 1 || n > 1000) {
              return send_error(w, Error::invalid("limit must be 1..1000", "limit"));
            }
            limit = static_cast<size_t>(n);
          }
          w->respond(http::Response::json(200, errors->render_json(limit)));
        }));
  r.get("/admin/v1/breakers", guard([&ctl](http::Request &&, W w) {
          json::array data;
          for (const auto &m : ctl.breaker_models()) {
            auto st = ctl.breaker_state(m);
            if (!st)
              continue;
            const auto &s = *st;
            data.push_back(json::object{{"model", m},
                                        {"enabled", s.usd_per_minute > 0},
                                        {"open", s.open},
                                        {"threshold_usd_per_minute", s.usd_per_minute},
                                        {"window_usd", s.window_usd},
                                        {"open_for_ms", s.open_for.count()},
                                        {"trips", s.trips}});
          }
          send_json(w, 200, json::object{{"object", "list"}, {"data", std::move(data)}});
        }));
  r.post("/admin/v1/breakers/{model}/reset", guard([&ctl](http::Request &&req, W w) {
           if (!ctl.reset_breaker(std::string(req.path_param("model")))) {
             return send_error(w, {ErrorCode::kNotFound,
                                   "no model '" + std::string(req.path_param("model")) + "'",
                                   "model"});
           }
           send_json(w, 200, json::object{{"model", req.path_param("model")}, {"open", false}});
         }));
}

} // namespace gantry::server
