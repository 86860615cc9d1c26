// The control plane on the request path: who is calling (keys), may they (model allow-list,
// rate limits, quotas and budgets, the spend breaker), and what did it cost (pricing, the usage
// ledger, budget alerts). The gateway calls authenticate() → admit() → finish(); everything
// that touches disk happens on background threads (the ledger writer, the key watcher, the
// alert dispatcher), so the per-request cost is a few map lookups and one HMAC.
//
// The state lives behind ports the composition root hands in (ControlPorts, chosen by
// open_stores()): keys and projects (KeyStore), the usage ledger (UsageLedger), budgets and alert
// state (BudgetStore), limits, quotas, budgets and breakers (AdmissionStore: one reserve() per
// admission, one settle() per finish) and Idempotency-Key records (IdempotencyStore).
// finish() prices the request on the calling thread (the cost is a response header) and posts
// the settlement — the store's settle(), the budget alerts, the ledger row — to a bounded
// SettlementWorker, so nothing stateful runs on an engine thread; admit() waits for settlements
// posted before it (read-your-writes, see settlement_worker.h).
//
// Threading: every public method is thread-safe. finish() may run on an engine thread.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <thread>
#include <vector>

#include "control/admission_store.h"
#include "control/breaker.h"
#include "control/budget_store.h"
#include "control/idempotency.h"
#include "control/key_authenticator.h"
#include "control/key_store.h"
#include "control/ledger_writer.h"
#include "control/pricing.h"
#include "control/quota.h"
#include "control/rate_limiter.h"
#include "control/settlement_worker.h"
#include "control/store.h"
#include "control/usage_ledger.h"
#include "core/clock.h"

namespace gantry::control {

struct ControlConfig {
  AuthMode auth = AuthMode::kAuto;
  Limits global; // protects the server's total capacity
  std::chrono::milliseconds ledger_flush{200};
  std::chrono::milliseconds ledger_retention{0}; // raw usage rows kept; 0 = forever (roll-ups stay)
  std::chrono::milliseconds key_poll{250};
  std::string alert_webhook_url;
  std::vector<std::string> alert_webhook_secrets; // "whsec_..."; the first signs, all verify
  size_t settlement_queue = 4096; // settlements waiting for the worker before finish() runs inline
  // False on a worker node (roles, issue 13): a call without a key came from a gateway, which
  // already wrote its ledger row; writing another would bill it twice. Keyed calls (jobs run as
  // their key) are written as always.
  bool ledger_keyless = true;
};

// The adapters of the control plane's state ports, all required. The store aggregates are shared:
// one embedded database implements all three, and the backup scheduler and the admission store's
// usage loader hold them too.
struct ControlPorts {
  std::shared_ptr<KeyStore> keys;
  std::shared_ptr<UsageLedger> ledger;
  std::shared_ptr<BudgetStore> budgets;
  std::unique_ptr<AdmissionStore> admission;
  std::unique_ptr<IdempotencyStore> idempotency;
};

struct ModelControl {
  std::string name;
  Price price;
};

struct AdmitRequest {
  const Principal *principal = nullptr; // null when auth is off for this call
  std::string model;
  std::string endpoint;
  std::string request_id;        // server-generated: the ledger's unique key (audit H4)
  std::string client_request_id; // the x-request-id echoed to the client; not unique
  int64_t prompt_tokens = 0;
  int64_t max_output_tokens = 0; // max_tokens × n
  int64_t arrived_ms = 0;        // unix ms
};

// One admitted request's reservations; finish() settles them exactly once.
struct Admission {
  std::string request_id, client_request_id, key_id, project, model, endpoint;
  int64_t arrived_ms = 0;
  AdmissionLease lease;
  RateSnapshot snapshot; // the lease's, for the x-ratelimit-* headers
  std::atomic<bool> finished{false};
};

struct Outcome {
  int status = 200;
  int64_t input_tokens = 0;
  int64_t output_tokens = 0;
  int64_t cached_tokens = 0;
  bool cached = false; // served from the response cache: costs nothing
  double engine_seconds = 0;
  double ttft_ms = 0;
  double latency_ms = 0;
  std::string finish_reason;
  // The model whose price applies when not the one admitted (a fallback answered); the ledger row
  // and the budgets stay the admitted model's, the cost is what the serving model charges.
  std::string priced_model;
  // What the node that ran the call charged for it (a worker of this gateway, which knows its own
  // prices and engine time); used when this node has no price configured for the model.
  std::optional<double> reported_cost_usd;
};

struct ControlCounters {
  std::map<std::string, uint64_t> rejected;                       // by reason
  std::map<std::pair<std::string, std::string>, double> cost_usd; // (model, project)
  std::map<int, uint64_t> alerts;                                 // by threshold
  SettlementWorkerStats settlement;
};

class ControlPlane {
public:
  // Delivers one alert body to the webhook URL with the given headers; returns the HTTP status
  // (or an error). Provided by the composition root (the HTTP client lives there).
  using WebhookPost =
      std::function<Result<int>(const std::string &url, const std::string &body,
                                const std::vector<std::pair<std::string, std::string>> &headers)>;
  using EventLog = std::function<void(const std::string &json_line)>;

  // Throws std::invalid_argument when a port is missing (a wiring bug).
  ControlPlane(ControlPorts ports, std::string pepper, ControlConfig config,
               std::vector<ModelControl> models, const Clock &clock, WebhookPost post,
               EventLog log);
  ~ControlPlane();

  // Loads budgets and keys, starts the background threads.
  Status start();
  void stop(); // runs the queued settlements, then flushes the ledger

  Result<std::optional<Principal>> authenticate(std::optional<std::string_view> authorization) {
    return keys_.authenticate(authorization);
  }
  bool auth_required() const { return keys_.required(); }

  // Errors: kPermissionDenied (model not allowed for the key), kRateLimited (retry_after_ms
  // set), kQuotaExceeded, kCircuitOpen, kIo. A refusal is written to the ledger with its status.
  // `refusal` (optional) receives the rate-limit numbers of a refused request for its headers.
  Result<std::shared_ptr<Admission>> admit(const AdmitRequest &request,
                                           RateSnapshot *refusal = nullptr);
  // Before parsing: refuses (and records) a request its RPM or concurrency limits would refuse,
  // taking nothing (audit M4); admit() still decides. `model` may be empty (not parsed yet).
  Status precheck(const AdmitRequest &request, RateSnapshot *refusal = nullptr);
  // Prices the request and posts its settlement (the admission store's settle() with the actual
  // usage, the ledger row, the budget alerts). Returns the cost in USD. Only the first call per
  // admission counts; `admission` may be destroyed as soon as it returns.
  double finish(Admission &admission, const Outcome &outcome);
  // A gateway's worker-hosted model (roles, issue 13): the prices its workers announce, the
  // element-wise highest of them, so reservations never under-estimate. Ignored for a model this
  // node has configured prices for (the gateway's own configuration wins), and beyond
  // kMaxLearnedModels learned models. Safe from any thread.
  static constexpr std::size_t kMaxLearnedModels = 1024;
  void learn_price(const std::string &model, const Price &price);
  // The price in force for `model` (for /admin and tests); nullopt when it has none.
  std::optional<Price> price_of(std::string_view model) const;
  // Waits for the settlements posted so far, then writes the ledger's pending rows (a usage
  // report is then current).
  Status flush();

  // A refusal before admission (the request never ran): counted and written to the ledger.
  // request_id is the server's call id (the ledger key), client_request_id the echoed one.
  void record_rejection(const Principal *principal, const std::string &model,
                        const std::string &endpoint, const std::string &request_id,
                        const Error &error, int64_t arrived_ms,
                        const std::string &client_request_id = {});

  KeyStore &key_store() { return *key_store_; }
  UsageLedger &usage_ledger() { return *usage_ledger_; }
  BudgetStore &budget_store() { return *budget_store_; }
  // Every store aggregate's round trip, for /readyz.
  Status check_stores();
  // Another node changed a key or project (KeyEvents): refresh the key cache now rather than at
  // the next poll.
  void keys_changed();
  KeyAuthenticator &keys() { return keys_; }
  AdmissionStore &admission() { return *admission_; }
  IdempotencyStore &idempotency() { return *idempotency_; }
  LedgerWriter &ledger() { return *ledger_; }
  std::vector<BudgetState> budget_states() { return admission_->budgets(); }
  std::vector<std::string> breaker_models() const { return admission_->breaker_models(); }
  std::optional<BreakerState> breaker_state(const std::string &model) {
    return admission_->breaker_state(model);
  }
  bool reset_breaker(const std::string &model) { return admission_->reset_breaker(model); }
  Status reload_budgets();
  ControlCounters counters();
  const ControlConfig &config() const { return config_; }

private:
  struct ModelState {
    std::shared_ptr<CostEstimator> cost;
    bool configured = true; // false: prices the model's workers announced (learn_price)
  };
  std::shared_ptr<CostEstimator> cost_of(std::string_view model, bool *configured = nullptr) const;
  Result<Limits> project_limits(const std::string &project);
  Result<std::vector<LimitRule>> limit_rules(const Principal *principal);
  void count_rejection(std::string_view reason);
  static UsageRecord usage_record(const Admission &admission, const Outcome &outcome, double cost);
  // On the settlement worker.
  void settle(const AdmissionLease &lease, UsageRecord row, bool cached, double cost);
  void alert_loop();
  void key_loop();

  std::shared_ptr<KeyStore> key_store_;
  std::shared_ptr<UsageLedger> usage_ledger_;
  std::shared_ptr<BudgetStore> budget_store_;
  ControlConfig config_;
  const Clock &clock_;
  WebhookPost post_;
  EventLog log_;
  std::unique_ptr<LedgerWriter> ledger_;
  KeyAuthenticator keys_;
  std::unique_ptr<AdmissionStore> admission_;
  std::unique_ptr<IdempotencyStore> idempotency_;
  // Configured models at start-up; worker-hosted ones join at run time (learn_price), so the
  // table is read under a shared lock. Bounded by kMaxLearnedModels.
  mutable std::shared_mutex models_mu_;
  std::map<std::string, ModelState, std::less<>> models_;

  std::mutex projects_mu_;
  std::map<std::string, std::pair<Limits, std::chrono::steady_clock::time_point>> projects_;

  std::mutex counters_mu_;
  ControlCounters counters_;

  std::mutex bg_mu_;
  std::condition_variable bg_cv_;
  bool stopping_ = false;
  bool refresh_now_ = false; // guarded by bg_mu_
  std::deque<BudgetAlert> alerts_;
  std::thread alert_thread_;
  std::thread key_thread_;
  // Last member: destroyed (drained) first, while everything its tasks touch is still alive.
  SettlementWorker settlement_;
};

} // namespace gantry::control
