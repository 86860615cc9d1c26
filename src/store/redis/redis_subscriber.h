// One Redis pub/sub subscription on a connection of its own (SUBSCRIBE mode cannot share the
// pool's connections): a thread waits on the socket with a short timeout (so destruction never
// hangs), hands each message's payload to `on_message`, reconnects with back-off after a
// failure, and calls `on_reconnect` after every reconnect but the first, since messages published
// while it was away are lost (Redis pub/sub does not queue them).
//
// Threading: the callbacks run on the subscriber thread; the destructor stops and joins it.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <thread>

#include "store/redis/redis_client.h"

namespace gantry::store {

class RedisSubscriber {
public:
  using OnMessage = std::function<void(std::string_view payload)>;
  RedisSubscriber(std::shared_ptr<RedisClient> redis, std::string channel, OnMessage on_message,
                  std::function<void()> on_reconnect);
  ~RedisSubscriber();
  RedisSubscriber(const RedisSubscriber &) = delete;
  RedisSubscriber &operator=(const RedisSubscriber &) = delete;

  uint64_t received() const { return received_.load(); } // messages and reconnects delivered

private:
  void run();

  std::shared_ptr<RedisClient> redis_;
  const std::string channel_;
  const OnMessage on_message_;
  const std::function<void()> on_reconnect_;
  std::atomic<bool> stopping_{false};
  std::atomic<uint64_t> received_{0};
  std::thread thread_; // last: started once everything it reads is set
};

} // namespace gantry::store
