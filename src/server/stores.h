// open_stores(): the one place that chooses the adapters of every state port. The server
// (Gateway::create) and the CLI (`gantry keys`, `gantry db`) both call it, so a new backend
// (PostgreSQL for keys, the ledger and jobs; Redis for admission, idempotency and caches) is one
// branch here and one factory in each contract suite (tests/contract/).
//
// Every port gets its embedded adapter — the SQLite database under data_dir for the store
// aggregates and the job queue and records, the in-memory admission and idempotency stores, the
// in-process job events and the in-memory caches — except that with a Redis URL admission (rate
// limits, concurrency, quotas, budgets, breakers) is shared through Redis (store/redis/).
//
// Threading: open_stores() runs on the main thread at start-up; what it returns is moved into the
// services that own each port.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>

#include "cache/cache.h"
#include "cluster/worker_registry.h"
#include "control/control_plane.h"
#include "control/key_events.h"
#include "core/clock.h"
#include "core/result.h"
#include "dashboard/status_history.h"
#include "jobs/job_events.h"
#include "jobs/job_queue.h"
#include "jobs/job_records.h"
#include "server/config.h"

namespace gantry::server {

// The jobs module's ports (JobsService owns them).
struct JobStores {
  std::unique_ptr<jobs::JobQueue> queue;
  std::unique_ptr<jobs::JobRecords> records;
  std::unique_ptr<jobs::JobEvents> events; // Prefer-wait completions and cancels
};

struct Stores {
  control::ControlPorts control; // keys, ledger, budgets, admission, idempotency
  JobStores jobs;
  std::unique_ptr<cache::Cache> responses;
  std::unique_ptr<cache::Cache> embeddings;
  std::unique_ptr<dashboard::ReadinessLog> readiness; // /status history (issue 15)
  // A consistent copy of the live database at a path (the SQLite adapter's backup_to); empty
  // when the backend has no file to copy. BackupScheduler and `gantry db backup` use it.
  std::function<Status(const std::string &path)> backup_to;
  // The shared-state dependency for /readyz (empty without Redis): a PING's result and the
  // outage-policy counters. Degraded, never failed: with the fail policy a node keeps serving
  // while Redis is down, and failing readiness would drain every node at once.
  std::function<Result<std::map<std::string, int64_t>>()> redis_check;
  // Key changes pushed between nodes (Redis pub/sub); null without Redis. The gateway subscribes
  // once its control plane exists.
  std::shared_ptr<control::KeyEvents> key_events;
  // The worker registry (roles, issue 13): workers announce themselves there, gateways read it.
  // Null without Redis.
  std::shared_ptr<cluster::WorkerRegistry> workers;
};

// What a process needs: the server all of it, a CLI command only the store aggregates (opening
// the job queue would recover its leases, and the caches are per server).
enum class StoreSet { kServer, kControlOnly };

// Creates the data directory and migrates the database when needed. Errors name the backend.
Result<Stores> open_stores(const ServerConfig &config, const Clock &clock,
                           StoreSet set = StoreSet::kServer);

} // namespace gantry::server
