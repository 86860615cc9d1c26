// The control plane's persistent state behind one small interface: projects, API keys, the usage
// ledger with its daily roll-ups, budgets and the alerts already sent.
//
// The embedded implementation is SQLite in WAL mode (sqlite_store.h); a PostgreSQL one comes
// with the multi-node issue. Callers never see SQL. Every method is thread-safe and may block on
// disk, so nothing on an I/O thread's hot path calls it: keys are cached (KeyAuthenticator),
// ledger rows are batched by LedgerWriter, and quota counters live in memory (QuotaTracker).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.h"

namespace gantry::control {

// 0 means "no limit" for every field.
struct Limits {
  int64_t rpm = 0; // requests per minute
  int64_t tpm = 0; // tokens per minute (prompt + max_tokens reserved at admission)
  int64_t max_concurrent = 0;
};

struct Project {
  std::string id; // chosen by the operator ("default", "search-team")
  Limits limits;
  int64_t created_at = 0; // unix seconds
};

struct ApiKey {
  std::string id; // public id: safe to log; the key string is "gsk_" + id + "_" + secret
  std::string project;
  std::string name;
  std::string hash; // hex HMAC-SHA256(pepper, secret)
  // During a rotation's grace the previous secret still works until prev_expires_at.
  std::string prev_hash;
  int64_t prev_expires_at = 0;
  std::vector<std::string> models; // allowed models; empty = all
  Limits limits;
  int64_t created_at = 0;
  int64_t expires_at = 0;   // 0 = never
  int64_t revoked_at = 0;   // 0 = active
  int64_t last_used_at = 0; // updated in batches, so up to a few seconds stale
};

// One row per request that reached the inference path (admitted or not).
struct UsageRecord {
  // The ledger's unique key: always server-generated (an HTTP call id, a job id), never the
  // client's x-request-id, which a client could repeat to be billed once for many calls (H4).
  std::string request_id;
  std::string client_request_id; // the x-request-id echoed to the client; not unique
  std::string key_id;            // empty when auth is off
  std::string project;           // empty when auth is off
  std::string model;
  std::string endpoint; // "/v1/chat/completions"
  int64_t input_tokens = 0;
  int64_t output_tokens = 0;
  int64_t cached_tokens = 0; // prompt tokens served from the prefix cache
  bool cached = false;       // answered from the response cache
  double latency_ms = 0;
  double ttft_ms = 0;
  double cost_usd = 0;
  int status = 200; // HTTP status sent
  std::string finish_reason;
  int64_t created_at_ms = 0; // unix milliseconds when the request arrived
};

// "key" or "project".
enum class OwnerKind { kKey, kProject };
std::string_view to_string(OwnerKind kind);
std::optional<OwnerKind> owner_kind_from(std::string_view s);

enum class Period { kDay, kMonth };
std::string_view to_string(Period period);
std::optional<Period> period_from(std::string_view s);

struct Budget {
  OwnerKind owner_kind = OwnerKind::kProject;
  std::string owner_id;
  Period period = Period::kMonth;
  int64_t token_quota = 0;                           // input + output tokens per period; 0 = none
  double spend_limit_usd = 0;                        // 0 = none
  std::vector<int> alert_thresholds = {50, 80, 100}; // percent of the spend limit (or quota)
};

struct UsageTotals {
  int64_t requests = 0;
  int64_t input_tokens = 0;
  int64_t output_tokens = 0;
  double cost_usd = 0;
};

struct UsageGroup {
  std::string group; // the key id, project or model
  UsageTotals totals;
};

enum class GroupBy { kKey, kProject, kModel };

class Store {
public:
  virtual ~Store() = default;

  virtual Status put_project(const Project &project) = 0; // insert or update
  virtual Result<std::optional<Project>> get_project(std::string_view id) = 0;
  virtual Result<std::vector<Project>> list_projects() = 0;

  virtual Status insert_key(const ApiKey &key) = 0; // kInvalidArgument if the id exists
  virtual Status update_key(const ApiKey &key) = 0; // kNotFound if absent
  virtual Result<std::optional<ApiKey>> get_key(std::string_view id) = 0;
  virtual Result<std::vector<ApiKey>> list_keys(std::string_view project = {}) = 0; // "" = all
  // Keys neither revoked nor expired at `now` (unix seconds).
  virtual Result<int64_t> count_active_keys(int64_t now) = 0;
  // Every key row ever inserted, revoked and expired included (keys are never deleted). In
  // `auth = "auto"` a key is required once this is > 0, so revoking the last key never reopens
  // the API (audit H3).
  virtual Result<int64_t> count_keys_ever() = 0;
  // Batched last-used updates: (key id, unix seconds).
  virtual Status touch_keys(const std::vector<std::pair<std::string, int64_t>> &last_used) = 0;
  // A number that changes whenever any process inserts or updates a key, so a server can drop
  // its key cache within a poll interval when `gantry keys revoke` runs beside it.
  virtual Result<int64_t> keys_generation() = 0;

  // One transaction: the rows and their daily roll-ups (by UTC day, key, project, model).
  // Rows whose request_id is already present are ignored (a retried flush writes nothing twice).
  virtual Status append_usage(const std::vector<UsageRecord> &rows) = 0;
  // Totals for one owner from `from_ms` (inclusive, unix ms) on, from the ledger.
  virtual Result<UsageTotals> usage_of(OwnerKind kind, std::string_view owner_id,
                                       int64_t from_ms) = 0;
  // Totals grouped by key, project or model over [from_ms, to_ms).
  virtual Result<std::vector<UsageGroup>> usage_report(GroupBy group_by, int64_t from_ms,
                                                       int64_t to_ms) = 0;
  virtual Result<int64_t> count_usage() = 0;

  virtual Status put_budget(const Budget &budget) = 0; // keyed by (owner kind, owner id, period)
  virtual Status delete_budget(OwnerKind kind, std::string_view owner_id, Period period) = 0;
  virtual Result<std::vector<Budget>> list_budgets() = 0;
  // Records that `threshold` (percent) fired for this owner in the period starting at
  // `period_start` (unix seconds). True the first time only, across restarts and processes.
  virtual Result<bool> record_alert(OwnerKind kind, std::string_view owner_id, int64_t period_start,
                                    int threshold) = 0;

  // A read and a write round trip, for /readyz.
  virtual Status check() = 0;
  // A consistent copy of the live database at `path` while other connections keep writing.
  virtual Status backup_to(const std::string &path) = 0;
};

} // namespace gantry::control
