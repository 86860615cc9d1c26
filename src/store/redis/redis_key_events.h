// KeyEvents over Redis pub/sub: publish() is a PUBLISH on "<prefix>keys" through the shared pool;
// subscribe() starts a thread with a connection of its own in SUBSCRIBE mode. The thread waits
// on the socket with a short timeout (so destruction never hangs), reconnects with back-off after
// a failure, and calls the callback once after every reconnect, since messages published while
// it was away are lost (Redis pub/sub does not queue them).
//
// Threading: thread-safe; the callback runs on the subscriber thread.
#pragma once

#include <atomic>
#include <memory>
#include <thread>

#include "control/key_events.h"
#include "store/redis/redis_client.h"

namespace gantry::store {

class RedisKeyEvents final : public control::KeyEvents {
public:
  explicit RedisKeyEvents(std::shared_ptr<RedisClient> redis);
  ~RedisKeyEvents() override;

  void publish() override;
  void subscribe(std::function<void()> on_change) override;

  uint64_t received() const { return received_.load(); } // messages and reconnects delivered

private:
  void run(std::function<void()> on_change);

  std::shared_ptr<RedisClient> redis_;
  std::string channel_;
  std::atomic<bool> stopping_{false};
  std::atomic<uint64_t> received_{0};
  std::thread thread_;
};

} // namespace gantry::store
