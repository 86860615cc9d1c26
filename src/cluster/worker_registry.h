// The worker registry port (issue 13, roles): worker nodes announce themselves — node id, the
// base URL gateways reach them at, the models they have loaded, their load — with a TTL that
// each heartbeat pushes forward; gateways read the live ones and route each model to them. A
// worker that dies stops heartbeating and drops out once its TTL runs out; one that stops
// cleanly withdraws at once.
//
// Adapters: MemoryWorkerRegistry (one process: tests of the logic) and RedisWorkerRegistry
// (store/redis/, shared by every node). Both enforce the same bounds (WorkerLimits).
//
// Threading: implementations are safe to call from any thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.h"

namespace gantry::cluster {

// What a worker charges for one of its models (its [[models]] prices, plus its own replica
// price per hour): a gateway bills worker-hosted models it has no prices for by these.
struct ModelPrice {
  double input_per_mtok = 0;
  double output_per_mtok = 0;
  double usd_per_hour = 0;
  bool operator==(const ModelPrice &) const = default;
};

struct WorkerInfo {
  std::string node_id;             // unique among live workers
  std::string url;                 // base URL of its OpenAI API, ".../v1"
  std::vector<std::string> models; // the served names of its loaded models
  // Models it hosts but has not loaded now (placement, issue 14: `models_max` below its
  // [[models]] count): it loads one on the first request for it. Disjoint from `models`.
  std::vector<std::string> available;
  int64_t in_flight = 0;    // requests generating
  int64_t waiting = 0;      // requests admitted, not yet generating
  double kv_usage = 0;      // fraction of KV blocks in use, the fullest model's (0..1)
  int64_t heartbeat_ms = 0; // unix ms of the announcement (set by the worker)
  // Prices of its models (loaded or available); absent in the records of older workers.
  std::map<std::string, ModelPrice> prices;
};

// What one registry holds at most: a runaway or hostile announcer cannot grow the gateways'
// routing tables without bound.
struct WorkerLimits {
  int max_workers = 256;
  int max_models_per_worker = 64;    // loaded and available together
  std::size_t max_field_bytes = 512; // node id, URL, each model name
};

// A price beyond this (USD per Mtok or per hour) is a malformed record, never a bill.
inline constexpr double kMaxPrice = 1e6;

// kInvalidArgument (naming the field) when `w` breaks the shape or the bounds.
Status check_worker(const WorkerInfo &w, const WorkerLimits &limits);

class WorkerRegistry {
public:
  virtual ~WorkerRegistry() = default;
  // Registers or refreshes `w` until now + ttl. kQueueFull when max_workers others are live.
  virtual Status announce(const WorkerInfo &w, std::chrono::milliseconds ttl) = 0;
  // Removes the node at once (clean shutdown).
  virtual Status withdraw(std::string_view node_id) = 0;
  // Every worker whose TTL has not run out, by node id.
  virtual Result<std::vector<WorkerInfo>> live() = 0;
};

} // namespace gantry::cluster
