// The PostgreSQL schema as data: migration i takes gantry_schema's version i to i + 1.
#include <array>

#include "store/postgres/pg_store.h"

namespace gantry::store {
namespace {

// Any constant works as long as no other application on the database uses it.
constexpr const char *kMigrationLock = "7316483401";

constexpr std::array<const char *, 6> kMigrations = {
    R"sql(
CREATE TABLE projects (
  id text PRIMARY KEY,
  rpm bigint NOT NULL DEFAULT 0,
  tpm bigint NOT NULL DEFAULT 0,
  max_concurrent bigint NOT NULL DEFAULT 0,
  created_at bigint NOT NULL DEFAULT 0
);
CREATE TABLE api_keys (
  id text PRIMARY KEY,
  project text NOT NULL,
  name text NOT NULL DEFAULT '',
  hash text NOT NULL,
  prev_hash text NOT NULL DEFAULT '',
  prev_expires_at bigint NOT NULL DEFAULT 0,
  models text NOT NULL DEFAULT '',
  rpm bigint NOT NULL DEFAULT 0,
  tpm bigint NOT NULL DEFAULT 0,
  max_concurrent bigint NOT NULL DEFAULT 0,
  created_at bigint NOT NULL DEFAULT 0,
  expires_at bigint NOT NULL DEFAULT 0,
  revoked_at bigint NOT NULL DEFAULT 0,
  last_used_at bigint NOT NULL DEFAULT 0
);
CREATE INDEX api_keys_project ON api_keys(project);
CREATE TABLE meta (k text PRIMARY KEY, v bigint NOT NULL);
INSERT INTO meta VALUES ('keys_generation', 0);
CREATE TABLE usage_ledger (
  request_id text PRIMARY KEY,
  client_request_id text NOT NULL DEFAULT '',
  key_id text NOT NULL DEFAULT '',
  project text NOT NULL DEFAULT '',
  model text NOT NULL DEFAULT '',
  endpoint text NOT NULL DEFAULT '',
  input_tokens bigint NOT NULL DEFAULT 0,
  output_tokens bigint NOT NULL DEFAULT 0,
  cached_tokens bigint NOT NULL DEFAULT 0,
  cached boolean NOT NULL DEFAULT false,
  latency_ms double precision NOT NULL DEFAULT 0,
  ttft_ms double precision NOT NULL DEFAULT 0,
  cost_usd double precision NOT NULL DEFAULT 0,
  status integer NOT NULL DEFAULT 200,
  finish_reason text NOT NULL DEFAULT '',
  created_at_ms bigint NOT NULL
);
CREATE INDEX usage_ledger_key ON usage_ledger(key_id, created_at_ms);
CREATE INDEX usage_ledger_project ON usage_ledger(project, created_at_ms);
CREATE INDEX usage_ledger_time ON usage_ledger(created_at_ms);
CREATE TABLE usage_daily (
  day text NOT NULL,
  key_id text NOT NULL,
  project text NOT NULL,
  model text NOT NULL,
  requests bigint NOT NULL DEFAULT 0,
  input_tokens bigint NOT NULL DEFAULT 0,
  output_tokens bigint NOT NULL DEFAULT 0,
  cost_usd double precision NOT NULL DEFAULT 0,
  PRIMARY KEY (day, key_id, project, model)
);
CREATE TABLE budgets (
  owner_kind text NOT NULL,
  owner_id text NOT NULL,
  period text NOT NULL,
  token_quota bigint NOT NULL DEFAULT 0,
  spend_limit_usd double precision NOT NULL DEFAULT 0,
  alert_thresholds text NOT NULL DEFAULT '50,80,100',
  PRIMARY KEY (owner_kind, owner_id, period)
);
CREATE TABLE budget_alerts (
  owner_kind text NOT NULL,
  owner_id text NOT NULL,
  period_start bigint NOT NULL,
  threshold integer NOT NULL,
  fired_at bigint NOT NULL,
  PRIMARY KEY (owner_kind, owner_id, period_start, threshold)
);
)sql",
    // 2: the shared job queue (PgJobQueue). seq orders insertion (lists page by it); job_projects
    // is the fair schedule's ring (turn) and each project's turns used (served).
    R"sql(
CREATE TABLE jobs (
  seq bigserial UNIQUE,
  id text PRIMARY KEY,
  project text NOT NULL,
  key_id text NOT NULL,
  endpoint text NOT NULL,
  body text NOT NULL,
  webhook_url text NOT NULL DEFAULT '',
  webhook_events text NOT NULL DEFAULT '',
  metadata text NOT NULL DEFAULT '{}',
  batch_id text NOT NULL DEFAULT '',
  custom_id text NOT NULL DEFAULT '',
  priority integer NOT NULL DEFAULT 0,
  status text NOT NULL,
  attempts integer NOT NULL DEFAULT 0,
  deferrals integer NOT NULL DEFAULT 0,
  max_attempts integer NOT NULL,
  created_ms bigint NOT NULL,
  started_ms bigint NOT NULL DEFAULT 0,
  finished_ms bigint NOT NULL DEFAULT 0,
  not_before_ms bigint NOT NULL DEFAULT 0,
  expires_at_ms bigint NOT NULL DEFAULT 0,
  lease_until_ms bigint NOT NULL DEFAULT 0,
  lease_owner text NOT NULL DEFAULT '',
  result_status integer NOT NULL DEFAULT 0,
  result text NOT NULL DEFAULT '',
  error text NOT NULL DEFAULT '',
  input_tokens bigint NOT NULL DEFAULT 0,
  output_tokens bigint NOT NULL DEFAULT 0,
  cost_usd double precision NOT NULL DEFAULT 0,
  bytes bigint NOT NULL DEFAULT 0
);
CREATE INDEX jobs_ready ON jobs(project, priority DESC, created_ms, seq) WHERE status = 'queued';
CREATE INDEX jobs_project_seq ON jobs(project, seq);
CREATE INDEX jobs_batch_seq ON jobs(batch_id, seq) WHERE batch_id <> '';
CREATE INDEX jobs_running ON jobs(lease_until_ms) WHERE status = 'running';
CREATE INDEX jobs_finished ON jobs(finished_ms) WHERE finished_ms > 0;
CREATE INDEX jobs_expiring ON jobs(expires_at_ms) WHERE expires_at_ms > 0;
CREATE SEQUENCE job_turns;
CREATE TABLE job_projects (
  project text PRIMARY KEY,
  turn bigint NOT NULL,
  served integer NOT NULL DEFAULT 0
);
)sql",
    // 3: the jobs module's other records (PgJobRecords): webhook deliveries, signing secrets,
    // endpoints disabled by a 410 (per project), Batch API files (bytea) and batches.
    R"sql(
CREATE TABLE job_deliveries (
  id text PRIMARY KEY,
  job_id text NOT NULL,
  project text NOT NULL,
  url text NOT NULL,
  event text NOT NULL,
  payload text NOT NULL,
  status text NOT NULL,
  attempts integer NOT NULL DEFAULT 0,
  next_at_ms bigint NOT NULL,
  last_status integer NOT NULL DEFAULT 0,
  last_error text NOT NULL DEFAULT '',
  created_ms bigint NOT NULL,
  delivered_ms bigint NOT NULL DEFAULT 0
);
CREATE INDEX job_deliveries_due ON job_deliveries(next_at_ms) WHERE status = 'pending';
CREATE INDEX job_deliveries_job ON job_deliveries(job_id);
CREATE TABLE webhook_secrets (
  project text NOT NULL,
  secret text NOT NULL,
  created_ms bigint NOT NULL,
  expires_ms bigint NOT NULL DEFAULT 0,
  PRIMARY KEY (project, secret)
);
CREATE TABLE webhook_disabled (
  project text NOT NULL,
  url text NOT NULL,
  disabled_ms bigint NOT NULL,
  PRIMARY KEY (project, url)
);
CREATE TABLE files (
  id text PRIMARY KEY,
  project text NOT NULL,
  purpose text NOT NULL,
  filename text NOT NULL,
  bytes bigint NOT NULL,
  content bytea NOT NULL,
  created_ms bigint NOT NULL
);
CREATE INDEX files_project ON files(project);
CREATE INDEX files_created ON files(created_ms);
CREATE TABLE batches (
  seq bigserial UNIQUE,
  id text PRIMARY KEY,
  project text NOT NULL,
  key_id text NOT NULL,
  endpoint text NOT NULL,
  input_file_id text NOT NULL,
  completion_window text NOT NULL,
  status text NOT NULL,
  output_file_id text NOT NULL DEFAULT '',
  error_file_id text NOT NULL DEFAULT '',
  errors text NOT NULL DEFAULT '',
  total bigint NOT NULL DEFAULT 0,
  completed bigint NOT NULL DEFAULT 0,
  failed bigint NOT NULL DEFAULT 0,
  metadata text NOT NULL DEFAULT 'null',
  created_ms bigint NOT NULL,
  in_progress_ms bigint NOT NULL DEFAULT 0,
  finalizing_ms bigint NOT NULL DEFAULT 0,
  completed_ms bigint NOT NULL DEFAULT 0,
  failed_ms bigint NOT NULL DEFAULT 0,
  expired_ms bigint NOT NULL DEFAULT 0,
  cancelling_ms bigint NOT NULL DEFAULT 0,
  cancelled_ms bigint NOT NULL DEFAULT 0,
  expires_ms bigint NOT NULL
);
CREATE INDEX batches_project_seq ON batches(project, seq);
CREATE INDEX batches_active ON batches(status) WHERE status IN ('validating', 'in_progress',
  'finalizing', 'cancelling');
)sql",
    // 4: per-project job counters kept by a trigger, so enqueue checks its bounds by summing a
    // few rows instead of counting the project's jobs (an O(rows) scan per POST /v1/jobs). Each
    // project's counters are split over 16 rows by a hash of the job id (a job always updates
    // the same row), so concurrent submissions of one project do not queue on one row lock.
    R"sql(
CREATE TABLE job_counts (
  project text NOT NULL,
  shard integer NOT NULL,
  queued bigint NOT NULL DEFAULT 0,
  stored bigint NOT NULL DEFAULT 0,
  bytes bigint NOT NULL DEFAULT 0,
  PRIMARY KEY (project, shard)
);
INSERT INTO job_counts(project, shard, queued, stored, bytes)
  SELECT project, abs(hashtext(id)) % 16, count(*) FILTER (WHERE status = 'queued'), count(*),
         coalesce(sum(bytes), 0) FROM jobs GROUP BY 1, 2;
CREATE FUNCTION gantry_jobs_count() RETURNS trigger AS $$
DECLARE
  dq bigint := 0; ds bigint := 0; db bigint := 0; p text; k integer;
BEGIN
  IF TG_OP = 'INSERT' THEN
    p := NEW.project; k := abs(hashtext(NEW.id)) % 16;
    dq := (NEW.status = 'queued')::int; ds := 1; db := NEW.bytes;
  ELSIF TG_OP = 'DELETE' THEN
    p := OLD.project; k := abs(hashtext(OLD.id)) % 16;
    dq := -(OLD.status = 'queued')::int; ds := -1; db := -OLD.bytes;
  ELSE
    IF NEW.bytes = OLD.bytes AND NEW.status = OLD.status THEN RETURN NULL; END IF;
    p := NEW.project; k := abs(hashtext(NEW.id)) % 16;
    dq := (NEW.status = 'queued')::int - (OLD.status = 'queued')::int; db := NEW.bytes - OLD.bytes;
  END IF;
  INSERT INTO job_counts AS c(project, shard, queued, stored, bytes) VALUES (p, k, dq, ds, db)
    ON CONFLICT (project, shard) DO UPDATE SET queued = c.queued + dq, stored = c.stored + ds,
    bytes = c.bytes + db;
  RETURN NULL;
END $$ LANGUAGE plpgsql;
CREATE TRIGGER jobs_count AFTER INSERT OR UPDATE OR DELETE ON jobs
  FOR EACH ROW EXECUTE FUNCTION gantry_jobs_count();
)sql",
    // 5: the job's model, so a node leases only jobs for models it serves (roles, issue 13).
    // Jobs stored before have '' and go to any node.
    R"sql(
ALTER TABLE jobs ADD COLUMN model text NOT NULL DEFAULT '';
)sql",
    // 6: Batch API files as pieces of at most 1 MiB (jobs::kFilePieceBytes), so an upload of
    // 200 MB streams in and out without a whole copy in memory (a bytea value is read and
    // written whole). Existing contents become piece 0.
    R"sql(
CREATE TABLE file_pieces (
  file_id text NOT NULL,
  seq integer NOT NULL,
  data bytea NOT NULL,
  created_ms bigint NOT NULL,
  PRIMARY KEY (file_id, seq)
);
CREATE INDEX file_pieces_created ON file_pieces(created_ms);
INSERT INTO file_pieces(file_id, seq, data, created_ms)
  SELECT id, 0, content, created_ms FROM files WHERE length(content) > 0;
UPDATE files SET content = ''::bytea;
)sql",
};

} // namespace

int pg_schema_version() { return static_cast<int>(kMigrations.size()); }

Status migrate_pg_schema(PgPool &pool) {
  return pool.transaction([](PgConn &c) -> Status {
    // Serialises nodes starting at once; released with the transaction.
    GANTRY_TRY(c.exec(std::string("SELECT pg_advisory_xact_lock(") + kMigrationLock + ")"));
    GANTRY_TRY(c.exec("CREATE TABLE IF NOT EXISTS gantry_schema (version integer NOT NULL)"));
    GANTRY_ASSIGN_OR_RETURN(PgResult r, c.exec("SELECT coalesce(max(version), 0) FROM "
                                               "gantry_schema"));
    const int64_t have = r.rows() ? r.i64(0, 0) : 0;
    if (have > pg_schema_version())
      return Err(ErrorCode::kUnsupported,
                 "the PostgreSQL database has schema version " + std::to_string(have) +
                     ", newer than this Gantry knows (" + std::to_string(pg_schema_version()) +
                     "): upgrade Gantry, or point it at another database");
    for (int64_t v = have; v < pg_schema_version(); ++v) {
      GANTRY_TRY(c.exec(kMigrations[static_cast<size_t>(v)]));
      GANTRY_TRY(c.exec("DELETE FROM gantry_schema"));
      GANTRY_TRY(c.exec("INSERT INTO gantry_schema VALUES ($1)", PgParams().i64(v + 1)));
    }
    return Ok();
  });
}

Result<std::shared_ptr<PgStore>> PgStore::open(const PgOptions &options, const Clock &clock) {
  GANTRY_ASSIGN_OR_RETURN(std::shared_ptr<PgPool> pool, PgPool::connect(options, clock));
  GANTRY_TRY(migrate_pg_schema(*pool));
  return std::make_shared<PgStore>(std::move(pool));
}

} // namespace gantry::store
