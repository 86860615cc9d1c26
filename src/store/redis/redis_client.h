// A small synchronous Redis client over hiredis (Debian's libhiredis 0.14): a bounded pool of
// connections shared by the I/O threads, a reply type without hiredis in it, scripts run with
// EVALSHA (loaded on NOSCRIPT), and reconnection with back-off. The only header that names Redis
// connections; adapters of the state ports (store/redis/*) build on it.
//
// Why synchronous: admission runs on I/O threads that already wait for it (one round trip on
// loopback or a LAN is tens of microseconds), and a pooled blocking call keeps the adapters as
// plain code. Every call is bounded by the command timeout, so a hung Redis costs a request at
// most that long, and while Redis is down calls fail at once (the back-off) instead of each
// trying to connect.
//
// Threading: thread-safe; each call takes one pooled connection for its duration.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "core/clock.h"
#include "core/result.h"

struct redisContext;

namespace gantry::store {

struct RedisOptions {
  std::string host = "127.0.0.1";
  int port = 6379;
  std::string username; // Redis 6 ACL user; empty = the default user
  std::string password;
  int db = 0;
  std::chrono::milliseconds connect_timeout{1000};
  std::chrono::milliseconds command_timeout{1000};
  size_t pool_size = 16;          // connections at most; a caller beyond them waits for one
  std::string prefix = "gantry:"; // every key this process writes starts with it
};

// redis://[[user]:password@]host[:port][/db]. The password may also come from the options
// afterwards (a file or env, never the URL in a config file).
Result<RedisOptions> parse_redis_url(std::string_view url);
// The URL without its password, for logs and errors.
std::string redact_redis_url(std::string_view url);

struct RedisReply {
  enum class Kind { kNil, kInteger, kString, kStatus, kArray, kError };
  Kind kind = Kind::kNil;
  int64_t integer = 0;
  std::string str; // string, status or error text
  std::vector<RedisReply> elements;

  bool is_nil() const { return kind == Kind::kNil; }
  // The integer of an integer reply, or a decimal string's value; `fallback` otherwise.
  int64_t as_int(int64_t fallback = 0) const;
  double as_double(double fallback = 0) const;
};

// A Lua script and its SHA-1, so calls send the 40-byte hash instead of the source.
struct RedisScript {
  explicit RedisScript(std::string source);
  std::string source;
  std::string sha1;
};

class RedisClient {
public:
  // Connects once and PINGs: a wrong host, port, password or db is a start-up error that names
  // Redis and the (redacted) address.
  static Result<std::unique_ptr<RedisClient>> connect(RedisOptions options, const Clock &clock);
  ~RedisClient();
  RedisClient(const RedisClient &) = delete;
  RedisClient &operator=(const RedisClient &) = delete;

  // One command. kIo when Redis cannot be reached or the call timed out; an error reply from
  // Redis is a reply of Kind::kError (the caller decides what it means).
  Result<RedisReply> command(const std::vector<std::string> &argv);
  // Several commands in one round trip (pipelined); one reply each.
  Result<std::vector<RedisReply>> pipeline(const std::vector<std::vector<std::string>> &commands);
  // EVALSHA, loading the script when Redis does not know it yet (first call, or after a restart
  // or SCRIPT FLUSH). A Lua error comes back as kInternal with Redis's message.
  Result<RedisReply> eval(const RedisScript &script, const std::vector<std::string> &keys,
                          const std::vector<std::string> &args);

  const RedisOptions &options() const { return options_; }
  const std::string &prefix() const { return options_.prefix; }
  std::string address() const;
  // Whether the last attempt to reach Redis failed (for /readyz); cheap, no round trip.
  bool reachable() const;

private:
  RedisClient(RedisOptions options, const Clock &clock)
      : options_(std::move(options)), clock_(clock) {}
  Result<redisContext *> open_connection(bool first);
  Result<redisContext *> take();
  void give_back(redisContext *c, bool broken);
  Result<std::vector<RedisReply>> run(const std::vector<std::vector<std::string>> &commands);

  RedisOptions options_;
  const Clock &clock_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<redisContext *> idle_;
  size_t open_ = 0; // connections existing (idle or taken)
  // Back-off after a failed connect: calls fail at once until retry_at_.
  std::chrono::steady_clock::time_point retry_at_{};
  std::chrono::milliseconds backoff_{0};
  bool reachable_ = true;
};

} // namespace gantry::store
