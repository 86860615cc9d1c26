#include <gtest/gtest.h>

#include "store/redis/redis_client.h"
#include "support/fake_clock.h"
#include "support/redis_process.h"

namespace gantry::store {
namespace {

TEST(RedisUrl, ParsesHostPortPasswordDbAndPrefix) {
  auto o = parse_redis_url("redis://:s3cret@127.0.0.1:6380/2?prefix=eu1:");
  ASSERT_TRUE(o) << o.error().message;
  EXPECT_EQ(o->host, "127.0.0.1");
  EXPECT_EQ(o->port, 6380);
  EXPECT_EQ(o->password, "s3cret");
  EXPECT_EQ(o->username, "");
  EXPECT_EQ(o->db, 2);
  EXPECT_EQ(o->prefix, "eu1:");
  auto d = parse_redis_url("redis://localhost");
  ASSERT_TRUE(d);
  EXPECT_EQ(d->port, 6379);
  EXPECT_EQ(d->db, 0);
  EXPECT_EQ(d->prefix, "gantry:");
  auto acl = parse_redis_url("redis://gantry:pw@127.0.0.1");
  ASSERT_TRUE(acl);
  EXPECT_EQ(acl->username, "gantry");
  EXPECT_EQ(acl->password, "pw");
}

TEST(RedisUrl, RefusesWhatItCannotHonour) {
  for (const char *bad :
       {"127.0.0.1:6379", "http://127.0.0.1", "redis://", "rediss://127.0.0.1",
        "redis://127.0.0.1/16", "redis://127.0.0.1/x", "redis://127.0.0.1?timeout=1"}) {
    auto o = parse_redis_url(bad);
    EXPECT_FALSE(o) << bad;
    if (!o) {
      EXPECT_EQ(o.error().code, ErrorCode::kInvalidArgument);
      EXPECT_NE(o.error().message.find("Redis"), std::string::npos) << o.error().message;
    }
  }
}

TEST(RedisUrl, RedactionHidesThePassword) {
  const std::string r = redact_redis_url("redis://:s3cret@127.0.0.1:6380/1");
  EXPECT_EQ(r.find("s3cret"), std::string::npos) << r;
  EXPECT_NE(r.find("127.0.0.1:6380"), std::string::npos) << r;
}

TEST(RedisClient, StartUpErrorsNameRedisAndTheCause) {
  FakeClock clock;
  // Nothing listens on a port that was just free: connection refused.
  auto closed = testing::RedisProcess::start_new();
  ASSERT_TRUE(closed);
  auto opts = parse_redis_url(closed->url());
  closed.reset(); // stopped: the port is free again
  ASSERT_TRUE(opts);
  opts->connect_timeout = std::chrono::milliseconds(300);
  auto refused = RedisClient::connect(*opts, clock);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, ErrorCode::kIo);
  EXPECT_NE(refused.error().message.find("Redis at 127.0.0.1"), std::string::npos)
      << refused.error().message;

  // A wrong password is a configuration error with Redis's own words, not an outage.
  auto locked = testing::RedisProcess::start_new({"--requirepass", "right-password"});
  ASSERT_TRUE(locked);
  auto wrong =
      parse_redis_url("redis://:wrong-password@127.0.0.1:" + std::to_string(locked->port()));
  ASSERT_TRUE(wrong);
  auto denied = RedisClient::connect(*wrong, clock);
  ASSERT_FALSE(denied);
  EXPECT_EQ(denied.error().code, ErrorCode::kInvalidArgument);
  EXPECT_NE(denied.error().message.find("refused"), std::string::npos) << denied.error().message;
  EXPECT_EQ(denied.error().message.find("wrong-password"), std::string::npos);
  auto right =
      parse_redis_url("redis://:right-password@127.0.0.1:" + std::to_string(locked->port()) + "/3");
  ASSERT_TRUE(right);
  auto ok = RedisClient::connect(*right, clock);
  ASSERT_TRUE(ok) << ok.error().message;
  auto pong = (*ok)->command({"SET", "k", "v"});
  ASSERT_TRUE(pong);
  EXPECT_EQ(pong->str, "OK");
}

TEST(RedisClient, ReconnectsAfterARestartWithBackOff) {
  FakeClock clock;
  auto redis = testing::RedisProcess::start_new();
  ASSERT_TRUE(redis);
  auto opts = parse_redis_url(redis->url());
  ASSERT_TRUE(opts);
  auto client = RedisClient::connect(*opts, clock);
  ASSERT_TRUE(client);
  auto &c = **client;
  ASSERT_TRUE(c.command({"SET", "a", "1"}));
  redis->kill();
  auto down = c.command({"GET", "a"});
  ASSERT_FALSE(down);
  EXPECT_EQ(down.error().code, ErrorCode::kIo);
  auto again = c.command({"GET", "a"}); // connecting fails: the back-off starts
  ASSERT_FALSE(again);
  EXPECT_FALSE(c.reachable());
  ASSERT_TRUE(redis->start());
  // Inside the back-off a call fails at once without trying; after it, the pool reconnects.
  EXPECT_FALSE(c.command({"PING"}));
  clock.advance(std::chrono::seconds(3));
  auto back = c.command({"PING"});
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_EQ(back->str, "PONG");
  EXPECT_TRUE(c.reachable());
}

TEST(RedisClient, ScriptsRunByHashAndReloadAfterAFlush) {
  FakeClock clock;
  auto redis = testing::RedisProcess::start_new();
  ASSERT_TRUE(redis);
  auto client = RedisClient::connect(*parse_redis_url(redis->url()), clock);
  ASSERT_TRUE(client);
  const RedisScript add("return tonumber(ARGV[1]) + tonumber(ARGV[2])");
  auto r = (*client)->eval(add, {}, {"2", "40"});
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->integer, 42);
  ASSERT_TRUE((*client)->command({"SCRIPT", "FLUSH"}));
  auto again = (*client)->eval(add, {}, {"1", "1"});
  ASSERT_TRUE(again) << again.error().message;
  EXPECT_EQ(again->integer, 2);
  auto bad = (*client)->eval(RedisScript("return redis.call('NOPE')"), {}, {});
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code, ErrorCode::kInternal);
  auto piped = (*client)->pipeline({{"SET", "x", "1"}, {"INCR", "x"}, {"GET", "x"}});
  ASSERT_TRUE(piped);
  ASSERT_EQ(piped->size(), 3u);
  EXPECT_EQ((*piped)[1].integer, 2);
  EXPECT_EQ((*piped)[2].as_int(), 2);
}

} // namespace
} // namespace gantry::store
