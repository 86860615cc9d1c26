#include "store/redis/redis_key_events.h"

namespace gantry::store {

RedisKeyEvents::RedisKeyEvents(std::shared_ptr<RedisClient> redis)
    : redis_(std::move(redis)), channel_(redis_->prefix() + "keys") {}

RedisKeyEvents::~RedisKeyEvents() = default; // the subscriber stops and joins its thread

void RedisKeyEvents::publish() { (void)redis_->command({"PUBLISH", channel_, "changed"}); }

void RedisKeyEvents::subscribe(std::function<void()> on_change) {
  subscriber_ = std::make_unique<RedisSubscriber>(
      redis_, channel_, [on_change](std::string_view) { on_change(); }, on_change);
}

} // namespace gantry::store
