// The JobEvents port: a job's completion and cancel events, fanned out to whoever waits for
// them. A `POST /v1/jobs` held open by `Prefer: wait` waits for its job's completion with a
// deadline; a cancel reaches the node whose worker runs the job. The in-process adapter
// (InProcessJobEvents) serves one node; the Redis pub/sub adapter (store/redis/RedisJobEvents)
// publishes to a channel every node subscribes to, and delivers to its local waiters and listener
// exactly as here. Deadlines are always local: the held request lives on this node.
//
// Threading: implementations are safe to call from any thread. Callbacks run on the thread
// that publishes, expires or shuts down, never under the adapter's lock.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "core/result.h"

namespace gantry::jobs {

enum class JobEventKind { kCompleted, kCanceled };

struct JobEvent {
  std::string job_id;
  JobEventKind kind = JobEventKind::kCompleted;
};

// How a wait ended.
enum class WaitOutcome { kCompleted, kCanceled, kTimedOut, kShutdown };

class JobEvents {
public:
  using WaitCallback = std::function<void(WaitOutcome)>;
  using Listener = std::function<void(const JobEvent &)>;
  virtual ~JobEvents() = default;

  // Delivers the event to the waiters on its job and to the listener, on every node.
  virtual void publish(const JobEvent &event) = 0;
  // Calls `done` exactly once: with the job's first event, kTimedOut once the Clock passes
  // `deadline_ms` (unix ms), or kShutdown. kQueueFull when the bound on waiters is reached (the
  // caller answers without waiting). Returns the wait's handle for cancel_wait().
  virtual Result<uint64_t> wait(std::string_view job_id, int64_t deadline_ms,
                                WaitCallback done) = 0;
  // Drops a wait without calling it; false when it had already ended.
  virtual bool cancel_wait(uint64_t handle) = 0;
  // The one listener of every event (set before events flow).
  virtual void listen(Listener listener) = 0;
  // Ends the waits whose deadline passed (kTimedOut) and returns the next deadline, 0 when none.
  // The owner's timer thread calls it at that deadline.
  virtual int64_t expire_due() = 0;
  // Ends every wait with kShutdown; later waits are refused.
  virtual void shutdown() = 0;
};

} // namespace gantry::jobs
