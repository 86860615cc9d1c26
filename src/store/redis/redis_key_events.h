// KeyEvents over Redis pub/sub: publish() is a PUBLISH on "<prefix>keys" through the shared pool;
// subscribe() starts a RedisSubscriber on that channel, which calls the callback for every
// message and once after every reconnect (messages published while it was away are lost).
//
// Threading: thread-safe; the callback runs on the subscriber thread.
#pragma once

#include <memory>

#include "control/key_events.h"
#include "store/redis/redis_client.h"
#include "store/redis/redis_subscriber.h"

namespace gantry::store {

class RedisKeyEvents final : public control::KeyEvents {
public:
  explicit RedisKeyEvents(std::shared_ptr<RedisClient> redis);
  ~RedisKeyEvents() override;

  void publish() override;
  void subscribe(std::function<void()> on_change) override;

private:
  std::shared_ptr<RedisClient> redis_;
  std::string channel_;
  std::unique_ptr<RedisSubscriber> subscriber_;
};

} // namespace gantry::store
