// A small bounded worker that runs posted tasks in order on its own thread: where the control plane
// settles admissions (rate refunds, quota commits, ledger rows, breaker spend) and the response
// cache writes, so that neither runs on an engine thread — with a shared (network) store each of
// them is a round trip that would stall every sequence's next decode step.
//
// barrier() is the read-your-writes guarantee: it returns once every task posted before it has
// run. Admission and cache lookups call it, so a client that has seen a response is admitted
// against that response's settlement (its refunded tokens, its freed slot, its spend on the
// breaker) and finds its cache entry. Posting happens before the response's last bytes are
// written, so the guarantee holds for any request sent after a response was read. In steady
// state the queue is empty and the barrier costs one lock. When it is not, the barrier runs
// the waiting tasks itself rather than sleeping until the worker wakes (it would wait for them
// anyway): tasks may then run on two threads at once, so they must not depend on each other's
// order — settlements of different requests do not.
//
// A full queue makes post() return false; the caller then runs the task itself (counted as
// `inline_runs`): the bound never drops a settlement.
//
// Threading: thread-safe; the worker thread is owned by this object. stop() (and the destructor)
// run everything already queued before joining, so shutdown loses no settlement.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <set>
#include <thread>
#include <utility>

namespace gantry::control {

struct SettlementWorkerStats {
  uint64_t posted = 0;      // tasks accepted by post()
  uint64_t run = 0;         // queued tasks finished (by the worker or a barrier)
  uint64_t helped = 0;      // of those, run by a barrier() caller
  uint64_t inline_runs = 0; // post() refused (queue full or stopped): the caller ran the task
  size_t queued = 0;
};

class SettlementWorker {
public:
  explicit SettlementWorker(size_t capacity = 4096);
  ~SettlementWorker();
  SettlementWorker(const SettlementWorker &) = delete;
  SettlementWorker &operator=(const SettlementWorker &) = delete;

  // Queues `task`; false (nothing queued) when the queue is full or the worker stopped.
  [[nodiscard]] bool post(std::function<void()> task);
  // Queues `task`, or runs it on the calling thread when it cannot be queued.
  void run(std::function<void()> task);
  // Returns once every task posted before the call has finished (at once on the worker itself).
  void barrier();
  // Runs what is queued, then joins the thread. Idempotent.
  void stop();
  SettlementWorkerStats stats() const;

private:
  void loop();
  void completed(uint64_t seq); // with mu_ held

  const size_t capacity_;
  mutable std::mutex mu_;
  std::condition_variable work_cv_, done_cv_;
  std::deque<std::pair<uint64_t, std::function<void()>>> queue_; // (sequence number, task)
  uint64_t posted_ = 0;           // the last sequence number handed out
  uint64_t done_prefix_ = 0;      // every task up to this sequence number has finished
  std::set<uint64_t> done_later_; // finished out of order (bounded by the queue's capacity)
  uint64_t run_ = 0, helped_ = 0, inline_runs_ = 0;
  bool stopping_ = false;
  std::thread thread_;
};

} // namespace gantry::control
