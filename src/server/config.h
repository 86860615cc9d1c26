// Server configuration, resolved once at start-up from (in increasing precedence) built-in
// defaults, a TOML file (--config), GANTRY_* environment variables and command-line flags, then
// validated. Bad values stop start-up with a message naming the key.
#pragma once

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "autoscale/policy_config.h"
#include "core/result.h"
#include "server/remote_models_config.h"

namespace gantry::server {

struct ModelSpec {
  std::string name; // served as this "model" id
  std::string path;
  int threads = 0;            // 0 = one per core
  int max_seqs = 16;          // sequences generating together
  int max_batch_tokens = 512; // tokens per engine step (decode + prefill chunks)
  // KV cache budget in MiB; 0 = auto: what max_seqs sequences at full context can hold, at most
  // 1024 MiB. Past that the blocks could only ever serve the prefix cache, which would then keep
  // touching fresh pages until the whole budget is resident (a tiny model's RSS grew for 15
  // minutes under the soak).
  int kv_mb = 0;
  int ctx = 0;               // per-sequence context; 0 = the model's
  std::string chat_template; // force a template family by name; empty = detect from GGUF
  bool prefix_cache = true;  // reuse KV blocks across requests sharing a prompt prefix
  // Cost: per million tokens, and/or per hour of this model's engine (split between the
  // requests of each engine step by their tokens).
  double price_input_per_mtok = 0;
  double price_output_per_mtok = 0;
  double price_per_hour = 0;
  // Spend-rate breaker: 503 circuit_open when spend over the window exceeds this per minute.
  double breaker_usd_per_minute = 0; // 0 = off
  int breaker_window_s = 60;
  int breaker_cooldown_s = 300;
};

// The response and embedding caches (README, "Caching"); `[cache]` in TOML.
struct CacheConfig {
  bool enabled = true;
  uint64_t max_bytes = uint64_t{64} << 20;           // response cache, keys + values + overhead
  uint64_t embedding_max_bytes = uint64_t{16} << 20; // embedding cache, likewise
  std::chrono::seconds ttl{3600};                    // default lifetime of an entry
  // Off: the response, embedding and prefix caches are scoped per project, so a hit or
  // cached_tokens never reveals another tenant's prompt (audit M2). On: one tenant's entries
  // serve every project (more hits; only for deployments whose projects trust each other).
  bool share_across_projects = false;
};

// Async jobs, webhooks and the Batch API (README, "Async jobs"); `[jobs]` in TOML.
struct JobsConfig {
  int workers = 0;                  // concurrent job executions; 0 = the models' max_seqs summed
  int64_t max_queued_jobs = 10'000; // per project, beyond which POST /v1/jobs answers 429
  int max_attempts = 3;             // executions of a job whose worker died or failed (5xx)
  std::chrono::milliseconds visibility{30'000}; // lease length before a job is retried
  std::chrono::milliseconds retry_base{1'000};  // job retry backoff: base * 2^(attempt-1)
  std::chrono::milliseconds retention{std::chrono::hours(24 * 7)}; // finished jobs kept
  std::chrono::milliseconds webhook_retry_base{5'000}; // ×4 per attempt, ±20%, up to a day
  bool webhook_allow_loopback = false;                 // 127.0.0.0/8, ::1 (tests, local receivers)
  bool webhook_allow_private = false;                  // RFC 1918, link-local, ULA, CGNAT
  int webhook_workers = 4;  // concurrent deliveries; one project holds at most half of them
  int64_t max_wait_s = 600; // cap on `Prefer: wait=N`
  std::map<std::string, int> weights; // project → round-robin weight (default 1)
  // This node's id, the owner recorded on its job leases; "" = random at start. Give each node
  // sharing a database its own; a restart under the same id reclaims its own leases at once.
  std::string node_id;
  // Storage bounds per project (audit M3); 0 = unbounded.
  int64_t max_stored_jobs = 100'000;               // jobs of any status until retention
  int64_t max_stored_job_bytes = int64_t{1} << 30; // their request bodies and results
  int64_t max_files = 1'000;                       // files in /v1/files
  int64_t max_file_bytes = int64_t{1} << 30;       // their contents
  // One uploaded file (POST /v1/files streams it into the store; OpenAI's limit is 200 MB).
  // Separate from max_body_bytes, which bounds the bodies that are held in memory.
  int64_t max_upload_bytes = int64_t{200} << 20;
  std::chrono::milliseconds file_retention{std::chrono::hours(24 * 30)}; // 0 = kept until deleted
  int64_t max_batch_output_bytes = int64_t{256} << 20; // a batch's output + error files
  int64_t max_waiters = 10'000; // POSTs held by `Prefer: wait`; beyond, they answer 202 at once
};

// The shared state of several nodes (issue 13). Empty url = this node keeps its limits in memory.
struct RedisConfig {
  std::string url;           // redis://[[user]:password@]host[:port][/db][?prefix=...]
  std::string password_file; // the password, kept out of the URL and the config file
  // While Redis is unreachable: "open" admits on this node's own limits (logged and counted),
  // "closed" refuses with 503. Budgets and quotas default to closed (money), rate limits to open.
  std::string fail_rate_limits = "open";
  std::string fail_budgets = "closed";
  std::chrono::milliseconds lease_ttl{60'000}; // a dead node's concurrency slots free after this
  std::chrono::milliseconds timeout{1'000};    // connect and command timeout
  int pool_size = 16;                          // connections per node
};

// `[autoscale.<model>]`'s executor keys (issue 14 items 2 and 3, docs/AUTOSCALING.md): who
// carries the model's policy out on a gateway, and the bounds of its cold-start front door.
struct AutoscaleExecutorSpec {
  // "none": the decisions are advice (metrics, logs); "local": the gateway runs `gantry serve
  // --role worker` processes for the model; "command": scale_command is run with the count.
  std::string executor = "none";
  std::vector<std::string> scale_command;            // argv; the desired count is appended
  std::chrono::milliseconds command_timeout{60'000}; // a hook still running then is killed
  // A local worker not in the registry by then is killed and counted as a failure.
  std::chrono::milliseconds start_timeout{300'000};
  int max_held_requests = 256; // requests held while no replica is ready; beyond, 503
  std::chrono::milliseconds cold_start_timeout{300'000}; // a held request's longest wait
  bool managed() const { return executor != "none"; }
};

struct ServerConfig {
  // Roles (issue 13): "all" runs the API and the engines in one process (the default); "gateway"
  // runs the API and the control plane, loads no engine, and routes each worker-hosted model to
  // the live workers that have it loaded; "worker" runs engines only, registers itself in Redis
  // and serves the OpenAI API to gateways (behind an internal token), running queued jobs for its
  // own models. Gateway and worker need Redis (the registry) and a shared database (the queue).
  std::string role = "all";
  // A worker's base URL as gateways reach it; "" = http://<host>:<port>/v1.
  std::string advertise_url;
  std::chrono::milliseconds worker_heartbeat{1000}; // a worker re-announces itself this often
  std::chrono::milliseconds worker_ttl{3000}; // and is out of routing this long after its last
  // The internal token workers require of every API call and gateways send: read from this file,
  // else from the variable named by worker_token_env. Never in the config itself, never logged.
  std::string worker_token_file;
  std::string worker_token_env = "GANTRY_WORKER_TOKEN";
  int max_workers = 256; // live workers a registry holds (and a gateway routes to)
  // A gateway's routing inside each worker pool: "least" (outstanding requests, power of two
  // choices) or "prefix" (requests sharing a prompt prefix go to the same worker, load bounded).
  std::string worker_routing = "least";

  std::string host = "127.0.0.1";
  int port = 8080;
  int admin_port = -1;    // health, metrics and the admin API on their own port too; -1 = off
  std::string admin_host; // default: host
  std::string data_dir = "./gantry-data";
  // PostgreSQL for keys, projects, the ledger and budgets, shared by several nodes (issue 13):
  // postgresql://user@host:port/db. Empty = the SQLite file under data_dir. The password is best
  // left out of the URL: libpq reads PGPASSWORD and ~/.pgpass (PGPASSFILE).
  std::string database_url;
  int io_threads = 2;
  std::vector<ModelSpec> models;
  std::vector<RemoteModelSpec> remote_models; // served from other engines (remote_models_config.h)

  int max_queued_requests = 256; // per model, beyond which requests get 429
  int64_t max_queued_tokens = 1 << 20;
  int default_max_tokens = 512; // when a request gives no max_tokens (capped by the context)
  size_t max_body_bytes = 8 << 20;
  size_t max_connections = 0;                 // 0 = min(RLIMIT_NOFILE - 128, 10000)
  size_t max_inflight_body_bytes = 256 << 20; // all request bodies being read, together
  std::chrono::milliseconds header_timeout{10'000};
  std::chrono::milliseconds body_timeout{30'000};
  std::chrono::milliseconds idle_timeout{60'000};
  // The drain (SIGTERM, POST /admin/v1/drain): how long in-flight requests and running jobs get
  // to finish before the jobs are handed back and the streams end with an error event. Config
  // `drain_s` (or its older name `shutdown_grace_s`), flag --drain-s.
  std::chrono::milliseconds shutdown_grace{30'000};
  // What this replica costs per hour (spot vs on-demand): added to each local model's hourly
  // price, so every call served here is charged its share of engine time at this rate.
  double replica_price_per_hour = 0;
  // Placement (issue 14): at most this many of the [[models]] loaded at once (0 = no bound: all
  // loaded at start-up). Every configured model stays servable: one asked for while unloaded is
  // loaded on demand, the least recently used idle model unloaded to make room. Config
  // `models_max`, flag --models-max; `models_max_bytes` bounds the same by file size + KV.
  int models_max = 0;
  size_t models_max_bytes = 0;                  // 0 = no byte bound
  std::chrono::milliseconds ready_cache{1'000}; // model probe reuse: readiness flips within ~1 s

  // Control plane. Secrets (key pepper, admin token, alert webhook secret) come only from the
  // environment or files named there, never from this config.
  // "auto": keys required once one exists; "required": always; "off": never (development only)
  std::string auth = "auto";
  int64_t global_rpm = 0; // server-wide limits; 0 = none
  int64_t global_tpm = 0;
  int64_t global_max_concurrent = 0;
  std::chrono::milliseconds ledger_flush{200}; // usage rows are written in batches this often
  // Raw usage rows older than this are deleted hourly; the daily roll-ups (reports, budgets'
  // periods come from the rows of the current period) are kept. 0 = keep every row.
  std::chrono::milliseconds ledger_retention{0};
  // How often the key cache re-reads the key generation (keys changed by another process or
  // node). With Redis, changes are also pushed over pub/sub and take effect at once.
  std::chrono::milliseconds key_poll{250};
  // Idempotency-Key records kept for replay (README, "Idempotency"): the in-memory store's bound.
  int64_t idempotency_max_bytes = int64_t{64} << 20;
  std::string alert_webhook_url; // budget alerts are POSTed here (http or https)
  // Extra trusted CAs (PEM) for outbound https (webhooks, alerts, Sentry), besides the system
  // store: private CAs and tests. GANTRY_TLS_CA_FILE.
  std::string tls_ca_file;
  // Observability.
  bool metrics = true;           // request histograms and counters (off only to measure them)
  std::string request_log = "-"; // one JSON line per inference call: "-" stdout, a path, "off"
  int request_log_max_mb = 100;  // rotate the file beyond this
  int request_log_keep = 5;
  std::string instance_id;                // "worker" in log lines; default hostname:pid
  std::string sentry_dsn;                 // forward error groups to Sentry; "" = off
  std::string environment = "production"; // Sentry's environment tag
  // Scheduled online backups of the database; 0 = off.
  std::chrono::seconds backup_interval{0};
  int backup_keep = 7;
  std::string backup_dir; // default <data_dir>/backups
  CacheConfig cache;
  JobsConfig jobs;
  RedisConfig redis;
  // `[autoscale.<model>]`: the scaling policy of each model that has one (issue 14).
  std::map<std::string, autoscale::PolicyConfig> autoscale;
  // Its executor and cold-start keys, one entry per `[autoscale.<model>]` table.
  std::map<std::string, AutoscaleExecutorSpec> autoscale_executors;

  Status validate() const;
};

// The error every config reader returns: "config 'KEY': MSG", with KEY as the error's field.
Error config_error(const std::string &key, const std::string &msg);

// A secret kept in a file (API keys, tokens): its content without the trailing newline or spaces
// an editor leaves; "" when it cannot be read.
std::string read_secret_file(const std::string &path);

// "name=path" or "path" (name = file stem).
Result<ModelSpec> parse_model_arg(const std::string &arg);

// Applies a TOML file onto `config`. Unknown keys are errors (they are usually typos).
Status apply_toml_file(const std::string &path, ServerConfig &config);
// Applies GANTRY_* variables from `env` (pairs of name, value).
Status apply_env(const std::vector<std::pair<std::string, std::string>> &env, ServerConfig &config);
std::vector<std::pair<std::string, std::string>> process_env();

} // namespace gantry::server
