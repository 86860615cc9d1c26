// The admission port: one call reserves everything a request needs, one call settles it.
//
// reserve() takes, for one request, a unit of every RPM bucket, its worst-case tokens from every
// TPM bucket, a concurrency slot of every scope that has a cap (key, project, global), its
// worst-case tokens and price from every token quota and spend budget of its key and project,
// after checking the model's spend-rate breaker — all of it or nothing. A refusal leaves no
// partial reservation behind: the adapter rolls back whatever it took before the refusing scope.
// settle() turns the reservation into the actual usage: unused tokens go back to the TPM buckets,
// the slots are freed, quotas and budgets are charged what was used, and the spend is fed to the
// breaker. One call each, so a shared (Redis) adapter is one Lua script and one round trip per
// admission and per settlement.
//
// Refusals, in the order they are checked: kCircuitOpen (the breaker), kRateLimited (with
// Error::retry_after_ms and, through `refusal`, the numbers for the x-ratelimit-* headers),
// kQuotaExceeded; kIo when the adapter cannot reach its state.
//
// Threading: adapters are thread-safe. reserve() runs on I/O threads, settle() on the control
// plane's settlement worker (never on an engine thread).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "control/breaker.h"
#include "control/quota.h"
#include "control/rate_limiter.h"
#include "core/result.h"

namespace gantry::control {

struct AdmissionAsk {
  std::string key_id;           // quota and budget owner; empty when auth is off
  std::string project;          // likewise
  std::string model;            // the breaker's scope
  std::vector<LimitRule> rules; // key, project and global limits (the caller resolves them)
  int64_t tokens = 0;           // prompt + max output tokens: reserved from TPM and quotas
  double usd = 0;               // the worst-case price: reserved from spend budgets
};

// What reserve() handed out; settle() takes it back exactly once (a second settle is a no-op).
struct AdmissionLease {
  uint64_t id = 0; // 0 = nothing held (an adapter's handle for what it reserved)
  std::string model;
  int64_t tokens = 0;
  double usd = 0;
  RateSnapshot snapshot; // for the x-ratelimit-* headers of the admitted response
};

struct Usage {
  int64_t tokens = 0; // what the request used (0 for a response-cache hit)
  double usd = 0;     // what it cost
};

class AdmissionStore {
public:
  virtual ~AdmissionStore() = default;

  // Every scope or none. `refusal`, when not null, receives the rate-limit numbers of a request
  // refused with kRateLimited.
  virtual Result<AdmissionLease> reserve(const AdmissionAsk &ask, RateSnapshot *refusal) = 0;
  // Refuses (kRateLimited, like reserve) a request its RPM or concurrency limits would refuse,
  // taking nothing: run before the request is parsed and tokenized, so a caller over its limits
  // costs no CPU (audit M4). Only `ask.rules` is read. The default allows everything.
  virtual Status precheck(const AdmissionAsk & /*ask*/, RateSnapshot * /*refusal*/) { return Ok(); }
  // Commits `used` and refunds the rest of the lease. Returns the budget thresholds crossed (the
  // control plane sends the alerts).
  virtual std::vector<BudgetAlert> settle(const AdmissionLease &lease, const Usage &used) = 0;
  // True when settle() is a few microseconds of in-process work (no network round trip): the
  // control plane then settles on the finishing thread instead of handing the task to its
  // settlement thread, which costs a thread wake-up per request (and a wait in the next
  // admission's barrier). Adapters that talk to a server keep the default.
  virtual bool settles_in_process() const { return false; }

  // Replaces the budget set (start-up and after an admin change); counters are kept.
  virtual void set_budgets(const std::vector<Budget> &budgets) = 0;
  virtual std::vector<BudgetState> budgets() = 0;
  // The breakers, by model; std::nullopt / false for a model without one.
  virtual std::vector<std::string> breaker_models() const = 0;
  virtual std::optional<BreakerState> breaker_state(const std::string &model) = 0;
  virtual bool reset_breaker(const std::string &model) = 0;
};

} // namespace gantry::control
