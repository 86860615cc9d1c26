// JobEvents within one process: waiters in a bounded map by job id and by deadline, events
// delivered synchronously to them and to the listener. Right for a single node; with several
// nodes a pub/sub adapter carries the events between them.
//
// Threading: any thread; one mutex guards the maps, callbacks run outside it.
#pragma once

#include <cstddef>
#include <map>
#include <mutex>

#include "core/clock.h"
#include "jobs/job_events.h"

namespace gantry::jobs {

struct JobEventsCounters {
  uint64_t waits = 0, completed = 0, timed_out = 0, refused = 0; // refused: over the bound
};

class InProcessJobEvents final : public JobEvents {
public:
  InProcessJobEvents(const Clock &clock, size_t max_waiters);

  void publish(const JobEvent &event) override;
  Result<uint64_t> wait(std::string_view job_id, int64_t deadline_ms, WaitCallback done) override;
  bool cancel_wait(uint64_t handle) override;
  void listen(Listener listener) override;
  int64_t expire_due() override;
  void shutdown() override;

  size_t waiting() const;
  JobEventsCounters counters() const;

private:
  struct Waiter {
    std::string job_id;
    int64_t deadline_ms;
    WaitCallback done;
  };
  void erase_locked(std::map<uint64_t, Waiter>::iterator it);

  const Clock &clock_;
  const size_t max_waiters_;
  mutable std::mutex mu_;
  uint64_t next_handle_ = 1;
  bool shut_down_ = false;
  std::map<uint64_t, Waiter> waiters_;           // handle → waiter
  std::multimap<std::string, uint64_t> by_job_;  // job id → handle
  std::multimap<int64_t, uint64_t> by_deadline_; // deadline → handle
  Listener listener_;
  JobEventsCounters counters_;
};

} // namespace gantry::jobs
