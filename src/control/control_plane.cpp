#include "control/control_plane.h"

#include <boost/json.hpp>

#include <algorithm>
#include <cstdio>
#include <stdexcept>

#include "control/api_key.h"
#include "control/webhook_signature.h"
#include "core/thread_guard.h"

namespace gantry::control {
namespace json = boost::json;

namespace {
LedgerWriterOptions ledger_options(const ControlConfig &c, const Clock &clock) {
  LedgerWriterOptions o;
  o.flush_interval = c.ledger_flush;
  o.retention = c.ledger_retention;
  o.now_ms = [&clock] { return clock.unix_millis(); };
  return o;
}

template <typename T> T required(T port, const char *name) {
  if (!port)
    throw std::invalid_argument(std::string("ControlPlane: no ") + name + " adapter");
  return port;
}
} // namespace

ControlPlane::ControlPlane(ControlPorts ports, std::string pepper, ControlConfig config,
                           std::vector<ModelControl> models, const Clock &clock, WebhookPost post,
                           EventLog log)
    : key_store_(required(std::move(ports.keys), "key store")),
      usage_ledger_(required(std::move(ports.ledger), "usage ledger")),
      budget_store_(required(std::move(ports.budgets), "budget store")), config_(std::move(config)),
      clock_(clock), post_(std::move(post)), log_(std::move(log)),
      ledger_(std::make_unique<LedgerWriter>(*usage_ledger_, *key_store_,
                                             ledger_options(config_, clock))),
      keys_(*key_store_, std::move(pepper), clock, config_.auth,
            [this](const std::string &id, int64_t t) { ledger_->touched(id, t); }),
      admission_(required(std::move(ports.admission), "admission store")),
      idempotency_(required(std::move(ports.idempotency), "idempotency store")),
      settlement_(config_.settlement_queue) {
  for (auto &m : models) {
    ModelState s;
    s.cost = std::make_shared<CostEstimator>(m.price);
    models_.emplace(m.name, std::move(s));
  }
}

ControlPlane::~ControlPlane() { stop(); }

std::shared_ptr<CostEstimator> ControlPlane::cost_of(std::string_view model,
                                                     bool *configured) const {
  std::shared_lock lock(models_mu_);
  auto it = models_.find(model);
  if (it == models_.end())
    return nullptr;
  if (configured)
    *configured = it->second.configured;
  return it->second.cost;
}

void ControlPlane::learn_price(const std::string &model, const Price &price) {
  auto valid = [](double v) { return v >= 0 && v <= 1e9; }; // also false for NaN
  if (!valid(price.input_per_mtok) || !valid(price.output_per_mtok) || !valid(price.usd_per_hour))
    return;
  std::unique_lock lock(models_mu_);
  auto it = models_.find(model);
  if (it != models_.end()) {
    const Price &cur = it->second.cost->price();
    if (it->second.configured ||
        (cur.input_per_mtok == price.input_per_mtok &&
         cur.output_per_mtok == price.output_per_mtok && cur.usd_per_hour == price.usd_per_hour))
      return;
    it->second.cost = std::make_shared<CostEstimator>(price); // calls in flight keep the old one
    return;
  }
  std::size_t learned = 0;
  for (const auto &[name, st] : models_)
    learned += st.configured ? 0 : 1;
  if (learned >= kMaxLearnedModels)
    return;
  ModelState st;
  st.cost = std::make_shared<CostEstimator>(price);
  st.configured = false;
  models_.emplace(model, std::move(st));
}

std::optional<Price> ControlPlane::price_of(std::string_view model) const {
  if (auto cost = cost_of(model))
    return cost->price();
  return std::nullopt;
}

Status ControlPlane::check_stores() {
  // One adapter may implement several aggregates (the embedded database does all three): each
  // backend is checked once.
  const void *keys = dynamic_cast<const void *>(key_store_.get());
  const void *ledger = dynamic_cast<const void *>(usage_ledger_.get());
  const void *budgets = dynamic_cast<const void *>(budget_store_.get());
  GANTRY_TRY(key_store_->check());
  if (ledger != keys)
    GANTRY_TRY(usage_ledger_->check());
  if (budgets != keys && budgets != ledger)
    GANTRY_TRY(budget_store_->check());
  return Ok();
}

Status ControlPlane::start() {
  GANTRY_TRY(keys_.refresh());
  GANTRY_TRY(reload_budgets());
  GANTRY_ASSIGN_OR_RETURN(auto projects, key_store_->list_projects());
  {
    std::lock_guard<std::mutex> lk(projects_mu_);
    for (const auto &p : projects)
      projects_[p.id] = {p.limits, {}};
  }
  auto stopping = [this] {
    std::lock_guard<std::mutex> lk(bg_mu_);
    return stopping_;
  };
  alert_thread_ = std::thread([this, stopping] {
    guarded_loop(
        "control.alerts", [this] { alert_loop(); }, stopping);
  });
  key_thread_ = std::thread([this, stopping] {
    guarded_loop(
        "control.keys", [this] { key_loop(); }, stopping);
  });
  return Ok();
}

void ControlPlane::stop() {
  // Settlements first, while the alert thread still runs: they queue the last ledger rows and
  // budget alerts.
  settlement_.stop();
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

Status ControlPlane::flush() {
  settlement_.barrier();
  return ledger_->flush();
}

Status ControlPlane::reload_budgets() {
  GANTRY_ASSIGN_OR_RETURN(auto budgets, budget_store_->list_budgets());
  admission_->set_budgets(budgets);
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
    if (auto projects = key_store_->list_projects()) {
      std::lock_guard<std::mutex> plk(projects_mu_);
      projects_.clear();
      for (const auto &p : *projects)
        projects_[p.id] = {p.limits, {}};
    }
    lk.lock();
    bg_cv_.wait_for(lk, config_.key_poll, [&] { return stopping_ || refresh_now_; });
    refresh_now_ = false;
  }
}

void ControlPlane::keys_changed() {
  {
    std::lock_guard<std::mutex> lk(bg_mu_);
    refresh_now_ = true;
  }
  bg_cv_.notify_all();
}

Result<Limits> ControlPlane::project_limits(const std::string &project) {
  std::lock_guard<std::mutex> lk(projects_mu_);
  auto it = projects_.find(project);
  if (it == projects_.end())
    return Limits{};
  return it->second.first;
}

void ControlPlane::count_rejection(std::string_view reason) {
  std::lock_guard<std::mutex> lk(counters_mu_);
  ++counters_.rejected[std::string(reason)];
}

ControlCounters ControlPlane::counters() {
  std::lock_guard<std::mutex> lk(counters_mu_);
  ControlCounters c = counters_;
  c.settlement = settlement_.stats();
  return c;
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
                                    const Error &error, int64_t arrived_ms,
                                    const std::string &client_request_id) {
  count_rejection(rejection_reason(error.code));
  // Unauthenticated callers are only counted: a scanner must not be able to fill the ledger.
  if (!principal && error.code == ErrorCode::kUnauthorized)
    return;
  UsageRecord r;
  r.request_id = request_id;
  r.client_request_id = client_request_id;
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

Result<std::vector<LimitRule>> ControlPlane::limit_rules(const Principal *p) {
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
  return rules;
}

Status ControlPlane::precheck(const AdmitRequest &req, RateSnapshot *refusal) {
  AdmissionAsk ask;
  GANTRY_ASSIGN_OR_RETURN(ask.rules, limit_rules(req.principal));
  if (ask.rules.empty())
    return Ok();
  // Read-your-writes, as in admit(): a finished request's concurrency slot is back.
  settlement_.barrier();
  if (auto st = admission_->precheck(ask, refusal); !st) {
    record_rejection(req.principal, req.model, req.endpoint, req.request_id, st.error(),
                     req.arrived_ms, req.client_request_id);
    return st;
  }
  return Ok();
}

Result<std::shared_ptr<Admission>> ControlPlane::admit(const AdmitRequest &req,
                                                       RateSnapshot *refusal) {
  auto fail = [&](Error e) -> Result<std::shared_ptr<Admission>> {
    record_rejection(req.principal, req.model, req.endpoint, req.request_id, e, req.arrived_ms,
                     req.client_request_id);
    return Err(std::move(e));
  };
  const Principal *p = req.principal;
  if (p && !p->models.empty() &&
      std::find(p->models.begin(), p->models.end(), req.model) == p->models.end()) {
    return fail({ErrorCode::kPermissionDenied,
                 "This API key is not allowed to use model '" + req.model + "'.", "model"});
  }
  const int64_t tokens = req.prompt_tokens + req.max_output_tokens;
  AdmissionAsk ask;
  ask.model = req.model;
  ask.tokens = tokens;
  if (p) {
    ask.key_id = p->key_id;
    ask.project = p->project;
  }
  GANTRY_ASSIGN_OR_RETURN(ask.rules, limit_rules(p));
  if (auto cost = cost_of(req.model))
    ask.usd = cost->estimate(req.prompt_tokens, req.max_output_tokens);
  // Read-your-writes: a caller that has seen its previous response is admitted against that
  // response's settlement (see settlement_worker.h).
  settlement_.barrier();
  auto lease = admission_->reserve(ask, refusal);
  if (!lease)
    return fail(lease.take_error());
  auto adm = std::make_shared<Admission>();
  adm->request_id = req.request_id;
  adm->client_request_id = req.client_request_id;
  adm->model = req.model;
  adm->endpoint = req.endpoint;
  adm->arrived_ms = req.arrived_ms;
  if (p) {
    adm->key_id = p->key_id;
    adm->project = p->project;
  }
  adm->snapshot = lease->snapshot;
  adm->lease = std::move(lease).value();
  return adm;
}

double ControlPlane::finish(Admission &adm, const Outcome &out) {
  if (adm.finished.exchange(true))
    return 0;
  double cost = 0;
  bool configured = false;
  std::shared_ptr<CostEstimator> estimator;
  if (!out.priced_model.empty())
    estimator = cost_of(out.priced_model, &configured);
  if (!estimator)
    estimator = cost_of(adm.model, &configured);
  if (out.cached) {
    // served from the response cache: costs nothing
  } else if (out.reported_cost_usd && !configured) {
    // The worker that ran it priced it: its own prices, replica price and engine time.
    cost = *out.reported_cost_usd;
    if (estimator)
      estimator->observe_reported(out.input_tokens - out.cached_tokens, out.output_tokens, cost);
  } else if (estimator) {
    cost = estimator->price().cost(out.input_tokens - out.cached_tokens, out.output_tokens,
                                   out.engine_seconds);
    estimator->observe(out.input_tokens + out.output_tokens, out.engine_seconds);
  }
  if (admission_->settles_in_process()) {
    settle(adm.lease, usage_record(adm, out, cost), out.cached, cost);
    return cost;
  }
  // The caller may drop the admission once this returns: the task keeps its own copy.
  settlement_.run([this, lease = adm.lease, r = usage_record(adm, out, cost), cached = out.cached,
                   cost]() mutable { settle(lease, std::move(r), cached, cost); });
  return cost;
}

UsageRecord ControlPlane::usage_record(const Admission &adm, const Outcome &out, double cost) {
  UsageRecord r;
  r.request_id = adm.request_id;
  r.client_request_id = adm.client_request_id;
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
  return r;
}

void ControlPlane::settle(const AdmissionLease &lease, UsageRecord row, bool cached, double cost) {
  // A response-cache hit used no engine capacity: everything it reserved goes back.
  const int64_t used = cached ? 0 : row.input_tokens + row.output_tokens;
  auto alerts = admission_->settle(lease, {used, cost});
  if (!alerts.empty()) {
    std::lock_guard<std::mutex> lk(bg_mu_);
    for (auto &a : alerts)
      alerts_.push_back(std::move(a));
    bg_cv_.notify_all();
  }
  if (cost > 0) {
    std::lock_guard<std::mutex> lk(counters_mu_);
    counters_.cost_usd[{row.model, row.project}] += cost;
  }
  if (!config_.ledger_keyless && row.key_id.empty())
    return;
  ledger_->record(std::move(row));
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
    auto first = budget_store_->record_alert(a.budget.owner_kind, a.budget.owner_id, a.period_start,
                                             a.threshold);
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
