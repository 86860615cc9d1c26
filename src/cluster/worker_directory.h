// The gateway's view of the worker registry: which live workers serve which model. Each poll of
// the registry (WorkerRegistry::live) goes through update(), which answers what changed per model
// — members to add to that model's backend pool, members to remove — so the pools follow the
// workers without a config change or a restart. Members are keyed by URL (what a pool connects
// to); a node that comes back under a new URL is one removal and one addition.
//
// Placement (issue 14): a worker that hosts a model without having it loaded now (its
// `available` list) is a member too, marked not loaded; the pools prefer loaded members and fall
// back to the others, which load the model on demand. A member that loads or unloads the model
// is reported in `updated` (same URL, the flag flipped), not as a removal and an addition, so
// its pool slot and counters stay.
//
// Bounded: at most max_models models are tracked (a model beyond the bound is ignored and
// counted); a tracked model whose workers all left stays tracked with no members, so its pool is
// there again the moment a worker brings it back.
//
// Threading: update() on the one watcher thread; the read accessors from any thread (a mutex).
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "cluster/worker_registry.h"

namespace gantry::cluster {

struct Member {
  std::string node_id;
  std::string url;
  bool loaded = true; // false: the worker can load the model but has not now
  bool operator<(const Member &o) const { return url < o.url; }
};

struct MembershipChange {
  std::string model;
  std::vector<Member> added;
  std::vector<Member> removed;
  std::vector<Member> updated; // still members; `loaded` changed (the new value)
};

class WorkerDirectory {
public:
  explicit WorkerDirectory(int max_models = 256) : max_models_(max_models) {}

  // `live`: the registry's live workers now. `skip`: models this gateway serves itself (never
  // routed to workers). Returns the changes, in model-name order; empty when nothing changed.
  std::vector<MembershipChange> update(const std::vector<WorkerInfo> &live,
                                       const std::set<std::string, std::less<>> &skip = {});

  int live_workers(std::string_view model) const;   // members (loaded or not); 0 when unknown
  int loaded_workers(std::string_view model) const; // members that have it loaded now
  bool tracks(std::string_view model) const;
  std::map<std::string, int> counts() const;        // every tracked model → its members
  std::map<std::string, int> loaded_counts() const; // every tracked model → loaded members
  int workers() const;                              // distinct live workers at the last update
  uint64_t models_refused() const;                  // models ignored for the max_models bound

private:
  const int max_models_;
  mutable std::mutex mu_;
  std::map<std::string, std::set<Member>, std::less<>> members_;
  int workers_ = 0;
  uint64_t models_refused_ = 0;
};

} // namespace gantry::cluster
