// For contract suites: one redis-server per test binary (started on first use) and a client with
// a fresh key prefix per call, so every store a suite makes starts empty and alone.
#pragma once

#include <memory>
#include <stdexcept>
#include <string>

#include "store/redis/redis_client.h"
#include "support/redis_process.h"

namespace gantry::testing {

inline std::shared_ptr<store::RedisClient> fresh_redis_client(const Clock &clock) {
  static std::unique_ptr<RedisProcess> redis = RedisProcess::start_new();
  if (!redis)
    throw std::runtime_error("redis-server did not start (scripts/bootstrap.sh installs it)");
  static int n = 0;
  auto opts = store::parse_redis_url(redis->url());
  if (!opts)
    throw std::runtime_error(opts.error().message);
  opts->prefix = "contract" + std::to_string(++n) + ":";
  auto client = store::RedisClient::connect(*opts, clock);
  if (!client)
    throw std::runtime_error(client.error().message);
  return std::shared_ptr<store::RedisClient>(std::move(client).value());
}

} // namespace gantry::testing
