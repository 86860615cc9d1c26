#include "store/sqlite/sqlite_schema.h"

#include "store/sqlite/sqlite_record.h"

#include <charconv>
#include <iterator>

namespace gantry::control {
namespace {

// The schema, one migration per version: migration i takes user_version i to i + 1. Append new
// migrations; never edit one that has shipped, since databases in the field already ran it.
constexpr const char *kMigrations[] = {
    R"sql(
CREATE TABLE projects (
  id             TEXT PRIMARY KEY,
  rpm            INTEGER NOT NULL DEFAULT 0,
  tpm            INTEGER NOT NULL DEFAULT 0,
  max_concurrent INTEGER NOT NULL DEFAULT 0,
  created_at     INTEGER NOT NULL DEFAULT 0
);

-- A key may name a project that has no row (it then has no project limits), so project is not
-- a foreign key.
CREATE TABLE api_keys (
  id              TEXT PRIMARY KEY,
  project         TEXT NOT NULL,
  name            TEXT NOT NULL DEFAULT '',
  hash            TEXT NOT NULL,
  prev_hash       TEXT NOT NULL DEFAULT '',
  prev_expires_at INTEGER NOT NULL DEFAULT 0,
  models          TEXT NOT NULL DEFAULT '[]', -- JSON array of model names; [] = all
  rpm             INTEGER NOT NULL DEFAULT 0,
  tpm             INTEGER NOT NULL DEFAULT 0,
  max_concurrent  INTEGER NOT NULL DEFAULT 0,
  created_at      INTEGER NOT NULL DEFAULT 0,
  expires_at      INTEGER NOT NULL DEFAULT 0,
  revoked_at      INTEGER NOT NULL DEFAULT 0,
  last_used_at    INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX api_keys_project ON api_keys(project);

CREATE TABLE meta (
  k TEXT PRIMARY KEY,
  v
);
INSERT INTO meta(k, v) VALUES ('keys_generation', 0);

CREATE TABLE usage_ledger (
  id             INTEGER PRIMARY KEY,
  request_id     TEXT NOT NULL UNIQUE,
  key_id         TEXT NOT NULL,
  project        TEXT NOT NULL,
  model          TEXT NOT NULL,
  endpoint       TEXT NOT NULL,
  input_tokens   INTEGER NOT NULL,
  output_tokens  INTEGER NOT NULL,
  cached_tokens  INTEGER NOT NULL,
  cached         INTEGER NOT NULL,
  latency_ms     REAL NOT NULL,
  ttft_ms        REAL NOT NULL,
  cost_usd       REAL NOT NULL,
  status         INTEGER NOT NULL,
  finish_reason  TEXT NOT NULL,
  created_at_ms  INTEGER NOT NULL
);
CREATE INDEX usage_ledger_key ON usage_ledger(key_id, created_at_ms);
CREATE INDEX usage_ledger_project ON usage_ledger(project, created_at_ms);
CREATE INDEX usage_ledger_time ON usage_ledger(created_at_ms);

CREATE TABLE usage_daily (
  day           TEXT NOT NULL, -- 'YYYY-MM-DD', UTC
  key_id        TEXT NOT NULL,
  project       TEXT NOT NULL,
  model         TEXT NOT NULL,
  requests      INTEGER NOT NULL,
  input_tokens  INTEGER NOT NULL,
  output_tokens INTEGER NOT NULL,
  cost_usd      REAL NOT NULL,
  PRIMARY KEY (day, key_id, project, model)
);

CREATE TABLE budgets (
  owner_kind       TEXT NOT NULL, -- 'key' | 'project'
  owner_id         TEXT NOT NULL,
  period           TEXT NOT NULL, -- 'day' | 'month'
  token_quota      INTEGER NOT NULL,
  spend_limit_usd  REAL NOT NULL,
  alert_thresholds TEXT NOT NULL, -- comma-separated percentages, '50,80,100'
  PRIMARY KEY (owner_kind, owner_id, period)
);

CREATE TABLE budget_alerts (
  owner_kind   TEXT NOT NULL,
  owner_id     TEXT NOT NULL,
  period_start INTEGER NOT NULL,
  threshold    INTEGER NOT NULL,
  fired_at     INTEGER NOT NULL,
  PRIMARY KEY (owner_kind, owner_id, period_start, threshold)
);
)sql",
    // 2: async jobs (src/jobs): the durable queue, webhook deliveries and per-project signing
    // secrets, and the OpenAI Batch API's files and batches.
    R"sql(
CREATE TABLE jobs (
  id             TEXT PRIMARY KEY, -- 'job_' + 16 hex digits: sorts in creation order
  project        TEXT NOT NULL,
  key_id         TEXT NOT NULL,
  endpoint       TEXT NOT NULL,
  body           TEXT NOT NULL,
  webhook_url    TEXT NOT NULL DEFAULT '',
  webhook_events TEXT NOT NULL DEFAULT '', -- comma-separated
  metadata       TEXT NOT NULL DEFAULT '{}',
  batch_id       TEXT NOT NULL DEFAULT '',
  custom_id      TEXT NOT NULL DEFAULT '',
  priority       INTEGER NOT NULL DEFAULT 0,
  status         TEXT NOT NULL, -- queued|running|succeeded|failed|canceled|expired
  attempts       INTEGER NOT NULL DEFAULT 0,
  deferrals      INTEGER NOT NULL DEFAULT 0, -- attempts given back (overload): new request ids
  max_attempts   INTEGER NOT NULL,
  created_ms     INTEGER NOT NULL,
  started_ms     INTEGER NOT NULL DEFAULT 0,
  finished_ms    INTEGER NOT NULL DEFAULT 0,
  not_before_ms  INTEGER NOT NULL DEFAULT 0,
  expires_at_ms  INTEGER NOT NULL DEFAULT 0,
  lease_until_ms INTEGER NOT NULL DEFAULT 0,
  result_status  INTEGER NOT NULL DEFAULT 0,
  result         TEXT NOT NULL DEFAULT '',
  error          TEXT NOT NULL DEFAULT '',
  input_tokens   INTEGER NOT NULL DEFAULT 0,
  output_tokens  INTEGER NOT NULL DEFAULT 0,
  cost_usd       REAL NOT NULL DEFAULT 0
);
CREATE INDEX jobs_project ON jobs(project, id);
CREATE INDEX jobs_status ON jobs(status);
CREATE INDEX jobs_batch ON jobs(batch_id, id) WHERE batch_id <> '';

CREATE TABLE job_deliveries (
  id           TEXT PRIMARY KEY, -- the webhook-id, stable across retries
  job_id       TEXT NOT NULL,
  project      TEXT NOT NULL,
  url          TEXT NOT NULL,
  event        TEXT NOT NULL,
  payload      TEXT NOT NULL,
  status       TEXT NOT NULL, -- pending|delivered|failed|disabled
  attempts     INTEGER NOT NULL DEFAULT 0,
  next_at_ms   INTEGER NOT NULL,
  last_status  INTEGER NOT NULL DEFAULT 0,
  last_error   TEXT NOT NULL DEFAULT '',
  created_ms   INTEGER NOT NULL,
  delivered_ms INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX job_deliveries_due ON job_deliveries(status, next_at_ms);
CREATE INDEX job_deliveries_job ON job_deliveries(job_id);

CREATE TABLE webhook_secrets (
  project    TEXT NOT NULL,
  secret     TEXT NOT NULL,
  created_ms INTEGER NOT NULL,
  expires_ms INTEGER NOT NULL DEFAULT 0, -- 0 = current; else still signs until then (rotation)
  PRIMARY KEY (project, secret)
);

CREATE TABLE webhook_disabled (
  url         TEXT PRIMARY KEY, -- an endpoint that answered 410 Gone
  disabled_ms INTEGER NOT NULL
);

CREATE TABLE files (
  id         TEXT PRIMARY KEY,
  project    TEXT NOT NULL,
  purpose    TEXT NOT NULL,
  filename   TEXT NOT NULL,
  bytes      INTEGER NOT NULL,
  content    BLOB NOT NULL,
  created_ms INTEGER NOT NULL
);

CREATE TABLE batches (
  id                TEXT PRIMARY KEY,
  project           TEXT NOT NULL,
  key_id            TEXT NOT NULL,
  endpoint          TEXT NOT NULL,
  input_file_id     TEXT NOT NULL,
  completion_window TEXT NOT NULL,
  status            TEXT NOT NULL,
  output_file_id    TEXT NOT NULL DEFAULT '',
  error_file_id     TEXT NOT NULL DEFAULT '',
  errors            TEXT NOT NULL DEFAULT '',
  total             INTEGER NOT NULL DEFAULT 0,
  completed         INTEGER NOT NULL DEFAULT 0,
  failed            INTEGER NOT NULL DEFAULT 0,
  metadata          TEXT NOT NULL DEFAULT 'null',
  created_ms        INTEGER NOT NULL,
  in_progress_ms    INTEGER NOT NULL DEFAULT 0,
  finalizing_ms     INTEGER NOT NULL DEFAULT 0,
  completed_ms      INTEGER NOT NULL DEFAULT 0,
  failed_ms         INTEGER NOT NULL DEFAULT 0,
  expired_ms        INTEGER NOT NULL DEFAULT 0,
  cancelling_ms     INTEGER NOT NULL DEFAULT 0,
  cancelled_ms      INTEGER NOT NULL DEFAULT 0,
  expires_ms        INTEGER NOT NULL
);
CREATE INDEX batches_status ON batches(status);
)sql",
    // 3: jobs for many nodes and bounded storage (src/jobs). Ids became random, so lists page
    // in insertion order (rowid) through indexes on the filter column alone; leases record
    // their owner node; jobs and files carry their size for per-project quotas, summed from
    // covering indexes without reading the rows.
    R"sql(
ALTER TABLE jobs ADD COLUMN lease_owner TEXT NOT NULL DEFAULT ''; -- node id of the lease
ALTER TABLE jobs ADD COLUMN bytes INTEGER NOT NULL DEFAULT 0;     -- body + result, for quotas
UPDATE jobs SET bytes = length(CAST(body AS BLOB)) + length(CAST(result AS BLOB));
DROP INDEX jobs_project;
DROP INDEX jobs_batch;
CREATE INDEX jobs_project_order ON jobs(project);
CREATE INDEX jobs_project_bytes ON jobs(project, bytes);
CREATE INDEX jobs_batch_order ON jobs(batch_id) WHERE batch_id <> '';
CREATE INDEX jobs_running ON jobs(status, lease_until_ms);
CREATE INDEX files_project_bytes ON files(project, bytes);
CREATE INDEX files_created ON files(created_ms);
CREATE INDEX batches_project_order ON batches(project);
)sql",
    // 4: the ledger's unique request_id is server-generated (audit H4); the x-request-id the
    // client sent (or was given) is kept beside it, not unique, for correlation only.
    R"sql(
ALTER TABLE usage_ledger ADD COLUMN client_request_id TEXT NOT NULL DEFAULT '';
)sql",
    // 5: readiness samples behind /status (src/dashboard): one row per model probe, kept 30
    // days, for uptime over 24 h and 30 days and the incident list. No error text is kept.
    R"sql(
CREATE TABLE readiness_samples (
  model      TEXT NOT NULL,
  t_ms       INTEGER NOT NULL,
  state      INTEGER NOT NULL, -- 0 down, 1 degraded, 2 up
  latency_ms REAL NOT NULL DEFAULT 0
);
CREATE INDEX readiness_samples_t ON readiness_samples(t_ms);
CREATE INDEX readiness_samples_down ON readiness_samples(t_ms) WHERE state = 0;
)sql",
    // 6: the job's model, so a node leases only jobs for models it serves (roles, issue 13).
    R"sql(
ALTER TABLE jobs ADD COLUMN model TEXT NOT NULL DEFAULT '';
UPDATE jobs SET model = coalesce(json_extract(body, '$.model'), '')
  WHERE json_valid(body) AND json_type(body, '$.model') = 'text';
)sql",
    // 7: Batch API files as pieces of at most 1 MiB (jobs::kFilePieceBytes), so an upload of
    // 200 MB streams in and out without a whole copy in memory. A rowid table: large rows
    // belong outside a WITHOUT ROWID b-tree. Existing contents become piece 0.
    R"sql(
CREATE TABLE file_pieces (
  file_id    TEXT NOT NULL,
  seq        INTEGER NOT NULL,
  data       BLOB NOT NULL,
  created_ms INTEGER NOT NULL
);
CREATE UNIQUE INDEX file_pieces_order ON file_pieces(file_id, seq);
CREATE INDEX file_pieces_created ON file_pieces(created_ms);
INSERT INTO file_pieces(file_id, seq, data, created_ms)
  SELECT id, 0, content, created_ms FROM files WHERE length(content) > 0;
UPDATE files SET content = x'';
)sql",
};

} // namespace

std::span<const char *const> sqlite_migrations() { return kMigrations; }

std::string models_json(const std::vector<std::string> &models) {
  std::string out = "[";
  for (const auto &m : models) {
    if (out.size() > 1)
      out += ',';
    out += '"';
    for (char c : m) {
      if (c == '"' || c == '\\')
        out += '\\';
      out += c;
    }
    out += '"';
  }
  return out + "]";
}

// The models column is decoded by SQLite's JSON reader into names joined by U+001F, which
// check_models keeps out of names.
std::vector<std::string> split_models(const std::string &joined) {
  return split_list(joined, '\x1f');
}

} // namespace gantry::control
