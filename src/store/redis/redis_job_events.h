// JobEvents shared by every node over Redis pub/sub: a job's completion or cancel published on
// one node reaches the node that holds a `Prefer: wait` POST for it (answered at once, not at
// its deadline) and the node whose worker runs it (a cancel through a gateway stops the engine
// work on the worker). Local delivery is the in-process adapter's — waiters, their bound and
// their deadlines stay on the node that holds the request — and publish() also PUBLISHes
// "<origin> <c|x> <job id>" on "<prefix>jobs"; every node's subscriber hands the messages of the
// other nodes to its local adapter (its own are already delivered).
//
// Pub/sub does not queue: an event published while a node's subscription is down is lost to it.
// Its waiters then answer at their deadline with the job as the store has it, and a cancel it
// missed still ends the job as canceled in the store; only the engine work runs on.
//
// Threading: thread-safe; remote events are delivered on the subscriber thread.
#pragma once

#include <memory>
#include <string>

#include "jobs/in_process_job_events.h"
#include "store/redis/redis_client.h"
#include "store/redis/redis_subscriber.h"

namespace gantry::store {

class RedisJobEvents final : public jobs::JobEvents {
public:
  RedisJobEvents(std::shared_ptr<RedisClient> redis, const Clock &clock, size_t max_waiters);
  ~RedisJobEvents() override;

  void publish(const jobs::JobEvent &event) override;
  Result<uint64_t> wait(std::string_view job_id, int64_t deadline_ms, WaitCallback done) override;
  bool cancel_wait(uint64_t handle) override;
  void listen(Listener listener) override;
  int64_t expire_due() override;
  void shutdown() override;

  uint64_t remote_events() const { return remote_.load(); } // delivered from other nodes

private:
  void on_message(std::string_view payload);

  std::shared_ptr<RedisClient> redis_;
  const std::string channel_;
  const std::string origin_; // this node's random tag: its own messages come back to it
  jobs::InProcessJobEvents local_;
  std::atomic<uint64_t> remote_{0};
  std::unique_ptr<RedisSubscriber> subscriber_; // last: stopped first
};

} // namespace gantry::store
