#include "server/stores.h"

#include <algorithm>
#include <cctype>
#include <fstream>

#include "cache/memory_cache.h"
#include "control/idempotency.h"
#include "control/memory_admission_store.h"
#include "jobs/in_process_job_events.h"
#include "store/postgres/pg_job_queue.h"
#include "store/postgres/pg_job_records.h"
#include "store/postgres/pg_store.h"
#include "store/redis/redis_admission_store.h"
#include "store/redis/redis_cache.h"
#include "store/redis/redis_idempotency_store.h"
#include "store/redis/redis_job_events.h"
#include "store/redis/redis_key_events.h"
#include "store/redis/redis_worker_registry.h"
#include "store/sqlite/sqlite_job_queue.h"
#include "store/sqlite/sqlite_job_records.h"
#include "store/sqlite/sqlite_readiness_log.h"
#include "store/sqlite/sqlite_store.h"

namespace gantry::server {
namespace {

std::vector<control::BreakerSpec> breaker_specs(const ServerConfig &config) {
  std::vector<control::BreakerSpec> breakers;
  for (const auto &spec : config.models) {
    control::BreakerConfig b;
    b.usd_per_minute = spec.breaker_usd_per_minute;
    b.window = std::chrono::seconds(spec.breaker_window_s);
    b.cooldown = std::chrono::seconds(spec.breaker_cooldown_s);
    breakers.push_back({spec.name, b});
  }
  for (const auto &spec : config.remote_models) { // remote models (issue 12) have breakers too
    control::BreakerConfig b;
    b.usd_per_minute = spec.breaker_usd_per_minute;
    b.window = std::chrono::seconds(spec.breaker_window_s);
    b.cooldown = std::chrono::seconds(spec.breaker_cooldown_s);
    breakers.push_back({spec.name, b});
  }
  return breakers;
}

// A counter is seeded from the ledger the first time its owner is seen after start-up.
control::UsageLoader ledger_loader(std::shared_ptr<control::UsageLedger> ledger) {
  return [ledger = std::move(ledger)](control::OwnerKind k, std::string_view id, int64_t from_ms) {
    return ledger->usage_of(k, id, from_ms);
  };
}

Result<std::shared_ptr<store::RedisClient>> connect_redis(const RedisConfig &rc,
                                                          const Clock &clock) {
  auto opts = store::parse_redis_url(rc.url);
  if (!opts)
    return Err(ErrorCode::kInvalidArgument, "config 'redis.url': " + opts.error().message,
               "redis.url");
  if (!rc.password_file.empty()) {
    std::ifstream in(rc.password_file);
    std::getline(in, opts->password);
    while (!opts->password.empty() &&
           std::isspace(static_cast<unsigned char>(opts->password.back())))
      opts->password.pop_back();
    if (opts->password.empty())
      return Err(ErrorCode::kInvalidArgument,
                 "config 'redis.password_file': cannot be read or is empty", "redis.password_file");
  }
  opts->connect_timeout = rc.timeout;
  opts->command_timeout = rc.timeout;
  opts->pool_size = static_cast<size_t>(rc.pool_size);
  auto client = store::RedisClient::connect(*opts, clock);
  if (!client)
    return Err(client.error().code,
               client.error().message + " (redis.url " + store::redact_redis_url(rc.url) + ")");
  return std::shared_ptr<store::RedisClient>(std::move(client).value());
}

std::unique_ptr<control::IdempotencyStore> embedded_idempotency(const ServerConfig &config,
                                                                const Clock &clock) {
  control::IdempotencyLimits l;
  l.max_bytes = static_cast<size_t>(config.idempotency_max_bytes);
  l.max_entry_bytes = std::min(l.max_entry_bytes, l.max_bytes);
  return std::make_unique<control::MemoryIdempotencyStore>(clock, l);
}

// Roles (issue 13): a worker runs the jobs of its own models, a gateway those of the remote models
// it serves itself (worker-hosted ones wait for a worker); one process with every role runs all.
std::optional<std::vector<std::string>> lease_models(const ServerConfig &c) {
  if (c.role == "all")
    return std::nullopt;
  std::vector<std::string> out;
  if (c.role == "worker")
    for (const auto &m : c.models)
      out.push_back(m.name);
  else
    for (const auto &m : c.remote_models)
      out.push_back(m.name);
  return out;
}

jobs::JobQueueOptions queue_options(const JobsConfig &j) {
  jobs::JobQueueOptions qo;
  qo.node_id = j.node_id;
  qo.max_queued_per_project = j.max_queued_jobs;
  qo.max_stored_per_project = j.max_stored_jobs;
  qo.max_stored_bytes_per_project = j.max_stored_job_bytes;
  qo.retention = j.retention;
  qo.retry_base = j.retry_base;
  qo.weights = j.weights;
  return qo;
}

} // namespace

Result<Stores> open_stores(const ServerConfig &config, const Clock &clock, StoreSet set) {
  Stores s;
  // The embedded database: one SQLite file holds every store aggregate and the jobs tables. It
  // is opened (created, migrated) first; the job adapters then open their own connections.
  GANTRY_ASSIGN_OR_RETURN(std::shared_ptr<control::SqliteStore> db,
                          control::SqliteStore::open(config.data_dir));
  std::shared_ptr<control::UsageLedger> ledger = db;
  std::shared_ptr<store::PgPool> pg_pool;
  if (config.database_url.empty()) {
    s.control.keys = db;
    s.control.ledger = db;
    s.control.budgets = db;
    s.backup_to = [db](const std::string &path) { return db->backup_to(path); };
  } else {
    // Keys, projects, the ledger, budgets and (below) the job queue and records, shared by every
    // node.
    store::PgOptions po;
    po.url = config.database_url;
    auto pg = store::PgStore::open(po, clock);
    if (!pg)
      return Err(pg.error().code, pg.error().message + " (database_url)");
    s.control.keys = *pg;
    s.control.ledger = *pg;
    s.control.budgets = *pg;
    ledger = *pg;
    pg_pool = (*pg)->pool();
  }
  if (set == StoreSet::kControlOnly)
    return s;

  std::shared_ptr<store::RedisClient> redis;
  if (!config.redis.url.empty()) {
    GANTRY_ASSIGN_OR_RETURN(redis, connect_redis(config.redis, clock));
  }
  if (!redis) {
    s.control.admission = std::make_unique<control::MemoryAdmissionStore>(
        clock, breaker_specs(config), ledger_loader(ledger));
    s.control.idempotency = embedded_idempotency(config, clock);
  } else {
    store::RedisAdmissionOptions ro;
    ro.lease_ttl = config.redis.lease_ttl;
    ro.rate_fail_open = config.redis.fail_rate_limits == "open";
    ro.budget_fail_open = config.redis.fail_budgets == "open";
    auto admission = std::make_unique<store::RedisAdmissionStore>(
        redis, clock, breaker_specs(config), ledger_loader(ledger), ro);
    control::IdempotencyLimits il;
    il.max_bytes = static_cast<size_t>(config.idempotency_max_bytes);
    il.max_entry_bytes = std::min(il.max_entry_bytes, il.max_bytes);
    auto idempotency = std::make_unique<store::RedisIdempotencyStore>(redis, clock, il);
    s.redis_check = [redis, a = admission.get(),
                     i = idempotency.get()]() -> Result<std::map<std::string, int64_t>> {
      auto pong = redis->command({"PING"});
      return std::map<std::string, int64_t>{
          {"degraded", pong ? 0 : 1},
          {"fallback_admissions", static_cast<int64_t>(a->fallback_admissions())},
          {"unavailable_refusals", static_cast<int64_t>(a->unavailable_refusals())},
          {"pending_settlements", static_cast<int64_t>(a->pending_settles())},
          {"idempotency_unprotected", static_cast<int64_t>(i->unprotected())}};
    };
    s.control.admission = std::move(admission);
    s.control.idempotency = std::move(idempotency);
    // Key and project changes made through this node are published; every node subscribes.
    s.key_events = std::make_shared<store::RedisKeyEvents>(redis);
    cluster::WorkerLimits wl;
    wl.max_workers = config.max_workers;
    s.workers = std::make_shared<store::RedisWorkerRegistry>(redis, wl);
    s.control.keys =
        std::make_shared<control::PublishingKeyStore>(std::move(s.control.keys), s.key_events);
  }

  const std::string path = control::database_path(config.data_dir);
  jobs::JobQueueOptions qo = queue_options(config.jobs);
  qo.lease_models = lease_models(config);
  if (pg_pool) {
    GANTRY_ASSIGN_OR_RETURN(s.jobs.queue, store::PgJobQueue::open(pg_pool, qo, clock));
    GANTRY_ASSIGN_OR_RETURN(s.jobs.records, store::PgJobRecords::open(pg_pool));
  } else {
    GANTRY_ASSIGN_OR_RETURN(s.jobs.queue, jobs::SqliteJobQueue::open(path, qo, clock));
    GANTRY_ASSIGN_OR_RETURN(s.jobs.records, jobs::SqliteJobRecords::open(path));
  }
  GANTRY_ASSIGN_OR_RETURN(s.readiness, dashboard::SqliteReadinessLog::open(path));
  // With Redis, a job's completion and cancel reach every node: the one holding a `Prefer: wait`
  // POST for it and the one running it.
  const auto max_waiters = static_cast<size_t>(std::max<int64_t>(config.jobs.max_waiters, 0));
  if (redis)
    s.jobs.events = std::make_unique<store::RedisJobEvents>(redis, clock, max_waiters);
  else
    s.jobs.events = std::make_unique<jobs::InProcessJobEvents>(clock, max_waiters);

  if (redis) { // one cache for every node: stored through one, a hit through another
    s.responses = std::make_unique<store::RedisCache>(redis, "resp", config.cache.max_bytes, clock);
    s.embeddings =
        std::make_unique<store::RedisCache>(redis, "emb", config.cache.embedding_max_bytes, clock);
  } else {
    s.responses = std::make_unique<cache::MemoryCache>(config.cache.max_bytes, clock);
    s.embeddings = std::make_unique<cache::MemoryCache>(config.cache.embedding_max_bytes, clock);
  }
  return s;
}

} // namespace gantry::server
