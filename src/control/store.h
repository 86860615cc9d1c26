// The records of the control plane's persistent state: projects, API keys, usage rows and their
// totals, budgets. Three ports hold them, split along the systems they will live in:
// KeyStore (key_store.h: keys and projects), UsageLedger (usage_ledger.h: the ledger and its
// roll-ups) and BudgetStore (budget_store.h: budgets and the alerts already sent). The embedded
// adapter (store/sqlite/sqlite_store.h) implements all three on one SQLite file; open_stores()
// (server/stores.h) is the one place that chooses adapters.
//
// Callers never see SQL. Every port method is thread-safe and may block on disk or the network,
// so nothing on an I/O thread's hot path calls one: keys are cached (KeyAuthenticator), ledger
// rows are batched by LedgerWriter, and quota counters live in the AdmissionStore.
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

// How list-valued fields are written in a column, for every store adapter: names joined by a
// separator (empty items dropped when split), budget thresholds as "50,80,100".
std::string join_list(const std::vector<std::string> &items, char sep);
std::vector<std::string> split_list(std::string_view text, char sep);
// Allowed-model names may be neither empty nor hold control characters, so U+001F can join them.
Status check_models(const std::vector<std::string> &models);
std::string thresholds_text(const std::vector<int> &thresholds);
Result<std::vector<int>> parse_thresholds(const std::string &text);

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

} // namespace gantry::control
