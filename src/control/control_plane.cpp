#include "control/control_plane.h"

#include <boost/json.hpp>

#include <cstdio>

#include "control/api_key.h"
#include "control/webhook_signature.h"

namespace gantry::control {
namespace json = boost::json;

namespace {
LedgerWriterOptions ledger_options(std::chrono::milliseconds flush) {
  LedgerWriterOptions o;
  o.flush_interval = flush;
  return o;
}
} // namespace

ControlPlane::ControlPlane(std::unique_ptr<Store> store, std::string pepper, ControlConfig config,
                           std::vector<ModelControl> models, const Clock &clock, WebhookPost post,
                           EventLog log)
    : store_(std::move(store)), config_(std::move(config)), clock_(clock), post_(std::move(post)),
      log_(std::move(log)),
      ledger_(std::make_unique<LedgerWriter>(*store_, ledger_options(config_.ledger_flush))),
      keys_(*store_, std::move(pepper), clock, config_.auth,
            [this](const std::string &id, int64_t t) { ledger_->touched(id, t); }),
      limiter_(clock), quotas_(*store_, clock), idempotency_(clock) {
  for (auto &m : models) {
    ModelState s;
    s.cost = std::make_unique<CostEstimator>(m.price);
    s.breaker = std::make_unique<SpendBreaker>(m.name, m.breaker, clock);
    models_.emplace(m.name, std::move(s));
  }
}

ControlPlane::~ControlPlane() { stop(); }

Status ControlPlane::start() {
  GANTRY_TRY(keys_.refresh());
  GANTRY_TRY(reload_budgets());
  GANTRY_ASSIGN_OR_RETURN(auto projects, store_->list_projects());
  {
    std::lock_guard<std::mutex> lk(projects_mu_);
    for (const auto &p : projects)
      projects_[p.id] = {p.limits, {}};
  }
  alert_thread_ = std::thread([this] { alert_loop(); });
  key_thread_ = std::thread([this] { key_loop(); });
  return Ok();
}

void ControlPlane::stop() {
  {
    std::lock_guard<std::mutex> lk(bg_mu_);
    if (stopping_)
      return;
    stopping_ = true;
  }
  bg_cv_.notify_all();
  if (alert_thread_.joinable())
    alert_thread_.join();
  if (key_thread_.joinable())
    key_thread_.join();
  if (ledger_)
    (void)ledger_->flush();
}

Status ControlPlane::reload_budgets() {
  GANTRY_ASSIGN_OR_RETURN(auto budgets, store_->list_budgets());
  quotas_.set_budgets(budgets);
  return Ok();
}

void ControlPlane::key_loop() {
  std::unique_lock<std::mutex> lk(bg_mu_);
  while (!stopping_) {
    lk.unlock();
    if (auto st = keys_.refresh(); !st && log_) {
      log_(json::serialize(
          json::object{{"event", "key_refresh_failed"}, {"error", st.error().message}}));
    }
    if (auto projects = store_->list_projects()) {
      std::lock_guard<std::mutex> plk(projects_mu_);
      projects_.clear();
      for (const auto &p : *projects)
        projects_[p.id] = {p.limits, {}};
    }
    lk.lock();
    bg_cv_.wait_for(lk, config_.key_poll, [&] { return stopping_; });
  }
}

Result<Limits> ControlPlane::project_limits(const std::string &project) {
  std::lock_guard<std::mutex> lk(projects_mu_);
  auto it = projects_.find(project);
  if (it == projects_.end())
    return Limits{};
  return it->second.first;
}

SpendBreaker *ControlPlane::breaker(const std::string &model) {
  auto it = models_.find(model);
  return it == models_.end() ? nullptr : it->second.breaker.get();
}

std::vector<std::string> ControlPlane::breaker_models() const {
  std::vector<std::string> out;
  for (const auto &[name, s] : models_)
    out.push_back(name);
  return out;
}

void ControlPlane::count_rejection(std::string_view reason) {
  std::lock_guard<std::mutex> lk(counters_mu_);
  ++counters_.rejected[std::string(reason)];
}

ControlCounters ControlPlane::counters() {
  std::lock_guard<std::mutex> lk(counters_mu_);
  return counters_;
}

namespace {
std::string_view rejection_reason(ErrorCode code) {
  switch (code) {
  case ErrorCode::kRateLimited: return "rate_limit";
  case ErrorCode::kQuotaExceeded: return "quota";
  case ErrorCode::kCircuitOpen: return "breaker";
  case ErrorCode::kQueueFull: return "queue_full";
  case ErrorCode::kPermissionDenied: return "model_not_allowed";
  case ErrorCode::kUnauthorized: return "unauthorized";
  default: return "other";
  }
}
} // namespace

void ControlPlane::record_rejection(const Principal *principal, const std::string &model,
                                    const std::string &endpoint, const std::string &request_id,
                                    const Error &error, int64_t arrived_ms) {
  count_rejection(rejection_reason(error.code));
  // Unauthenticated callers are only counted: a scanner must not be able to fill the ledger.
  if (!principal && error.code == ErrorCode::kUnauthorized)
    return;
  UsageRecord r;
  r.request_id = request_id;
  if (principal) {
    r.key_id = principal->key_id;
    r.project = principal->project;
  }
  r.model = model;
  r.endpoint = endpoint;
  r.status = http_status(error.code);
  r.finish_reason = std::string(error_code_name(error.code));
  r.created_at_ms = arrived_ms;
  ledger_->record(std::move(r));
}

Result<std::shared_ptr<Admission>> ControlPlane::admit(const AdmitRequest &req,
                                                       RateSnapshot *refusal) {
  auto fail = [&](Error e) -> Result<std::shared_ptr<Admission>> {
    record_rejection(req.principal, req.model, req.endpoint, req.request_id, e, req.arrived_ms);
    return Err(std::move(e));
  };
  const Principal *p = req.principal;
  if (p && !p->models.empty() &&
      std::find(p->models.begin(), p->models.end(), req.model) == p->models.end()) {
    return fail({ErrorCode::kPermissionDenied,
                 "This API key is not allowed to use model '" + req.model + "'.", "model"});
  }
  auto mit = models_.find(req.model);
  if (mit != models_.end()) {
    if (auto st = mit->second.breaker->check(); !st)
      return fail(st.error());
  }
  const int64_t tokens = req.prompt_tokens + req.max_output_tokens;
  std::vector<LimitRule> rules;
  if (p) {
    rules.push_back({"key:" + p->key_id, p->limits});
    GANTRY_ASSIGN_OR_RETURN(Limits pl, project_limits(p->project));
    if (pl.rpm || pl.tpm || pl.max_concurrent)
      rules.push_back({"project:" + p->project, pl});
  }
  if (config_.global.rpm || config_.global.tpm || config_.global.max_concurrent) {
    rules.push_back({"global", config_.global});
  }
  auto adm = std::make_shared<Admission>();
  adm->request_id = req.request_id;
  adm->model = req.model;
  adm->endpoint = req.endpoint;
  adm->arrived_ms = req.arrived_ms;
  if (p) {
    adm->key_id = p->key_id;
    adm->project = p->project;
  }
  if (!rules.empty()) {
    RateDecision d = limiter_.acquire(rules, tokens);
    if (!d.allowed) {
      if (refusal)
        *refusal = d.snapshot;
      Error e{ErrorCode::kRateLimited, d.message, {}};
      e.retry_after_ms = std::max<int64_t>(d.retry_after.count(), 1);
      return fail(std::move(e));
    }
    adm->rate = d.lease;
    adm->snapshot = d.snapshot;
  }
  if (p && quotas_.has_budgets()) {
    const double usd = mit != models_.end()
                           ? mit->second.cost->estimate(req.prompt_tokens, req.max_output_tokens)
                           : 0.0;
    auto q = quotas_.reserve(p->key_id, p->project, tokens, usd);
    if (!q) {
      limiter_.release(adm->rate, 0);
      return fail(q.take_error());
    }
    adm->quota = std::move(q).value();
  }
  return adm;
}

double ControlPlane::finish(Admission &adm, const Outcome &out) {
  if (adm.finished.exchange(true))
    return 0;
  double cost = 0;
  auto mit = models_.find(adm.model);
  if (!out.cached && mit != models_.end()) {
    const Price &price = mit->second.cost->price();
    cost = price.cost(out.input_tokens - out.cached_tokens, out.output_tokens, out.engine_seconds);
    mit->second.cost->observe(out.input_tokens + out.output_tokens, out.engine_seconds);
    mit->second.breaker->record(cost);
  }
  // A response-cache hit used no engine capacity: everything it reserved goes back.
  const int64_t used = out.cached ? 0 : out.input_tokens + out.output_tokens;
  limiter_.release(adm.rate, used);
  auto alerts = quotas_.commit(adm.quota, used, cost);
  if (!alerts.empty()) {
    std::lock_guard<std::mutex> lk(bg_mu_);
    for (auto &a : alerts)
      alerts_.push_back(std::move(a));
    bg_cv_.notify_all();
  }
  if (cost > 0) {
    std::lock_guard<std::mutex> lk(counters_mu_);
    counters_.cost_usd[{adm.model, adm.project}] += cost;
  }
  UsageRecord r;
  r.request_id = adm.request_id;
  r.key_id = adm.key_id;
  r.project = adm.project;
  r.model = adm.model;
  r.endpoint = adm.endpoint;
  r.input_tokens = out.input_tokens;
  r.output_tokens = out.output_tokens;
  r.cached_tokens = out.cached_tokens;
  r.cached = out.cached;
  r.latency_ms = out.latency_ms;
  r.ttft_ms = out.ttft_ms;
  r.cost_usd = cost;
  r.status = out.status;
  r.finish_reason = out.finish_reason;
  r.created_at_ms = adm.arrived_ms;
  ledger_->record(std::move(r));
  return cost;
}

void ControlPlane::alert_loop() {
  std::unique_lock<std::mutex> lk(bg_mu_);
  for (;;) {
    bg_cv_.wait(lk, [&] { return stopping_ || !alerts_.empty(); });
    if (alerts_.empty() && stopping_)
      return;
    BudgetAlert a = std::move(alerts_.front());
    alerts_.pop_front();
    lk.unlock();
    // The store makes it once per period across restarts and processes.
    auto first =
        store_->record_alert(a.budget.owner_kind, a.budget.owner_id, a.period_start, a.threshold);
    if (first && *first) {
      {
        std::lock_guard<std::mutex> clk(counters_mu_);
        ++counters_.alerts[a.threshold];
      }
      json::object body{{"type", "budget.threshold_reached"},
                        {"timestamp", clock_.unix_seconds()},
                        {"data", json::object{{"owner_kind", to_string(a.budget.owner_kind)},
                                              {"owner_id", a.budget.owner_id},
                                              {"period", to_string(a.budget.period)},
                                              {"period_start", a.period_start},
                                              {"threshold_percent", a.threshold},
                                              {"spend_limit_usd", a.budget.spend_limit_usd},
                                              {"token_quota", a.budget.token_quota},
                                              {"used_usd", a.used_usd},
                                              {"used_tokens", a.used_tokens}}}};
      const std::string text = json::serialize(body);
      if (log_) {
        json::object ev{{"event", "budget_alert"}, {"alert", body}};
        log_(json::serialize(ev));
      }
      if (!config_.alert_webhook_url.empty() && post_) {
        const std::string msg_id = "msg_" + random_base62(24);
        auto headers =
            sign_webhook(config_.alert_webhook_secrets, msg_id, clock_.unix_seconds(), text);
        if (headers) {
          // A few quick retries; a budget alert that cannot be delivered is still in the log.
          for (int attempt = 0; attempt < 3; ++attempt) {
            auto st = post_(config_.alert_webhook_url, text, *headers);
            if (st && *st >= 200 && *st < 300)
              break;
            if (st && *st == 410)
              break;
            std::unique_lock<std::mutex> wlk(bg_mu_);
            if (bg_cv_.wait_for(wlk, std::chrono::milliseconds(500 << attempt),
                                [&] { return stopping_; })) {
              break;
            }
          }
        }
      }
    }
    lk.lock();
  }
}

} // namespace gantry::control
