#include "store/redis/redis_client.h"

#include <hiredis/hiredis.h>
#include <openssl/sha.h>

#include <boost/url/parse.hpp>
#include <boost/url/url.hpp>

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <cstdlib>

namespace gantry::store {
namespace {

constexpr auto kMaxBackoff = std::chrono::milliseconds(2000);
constexpr auto kFirstBackoff = std::chrono::milliseconds(50);

RedisReply convert(const redisReply *r) {
  RedisReply out;
  if (!r)
    return out;
  switch (r->type) {
  case REDIS_REPLY_INTEGER:
    out.kind = RedisReply::Kind::kInteger;
    out.integer = r->integer;
    break;
  case REDIS_REPLY_STRING:
    out.kind = RedisReply::Kind::kString;
    out.str.assign(r->str, r->len);
    break;
  case REDIS_REPLY_STATUS:
    out.kind = RedisReply::Kind::kStatus;
    out.str.assign(r->str, r->len);
    break;
  case REDIS_REPLY_ERROR:
    out.kind = RedisReply::Kind::kError;
    out.str.assign(r->str, r->len);
    break;
  case REDIS_REPLY_ARRAY:
    out.kind = RedisReply::Kind::kArray;
    out.elements.reserve(r->elements);
    for (size_t i = 0; i < r->elements; ++i)
      out.elements.push_back(convert(r->element[i]));
    break;
  default: break; // nil
  }
  return out;
}

timeval to_timeval(std::chrono::milliseconds ms) {
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(ms.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((ms.count() % 1000) * 1000);
  return tv;
}

Error io_error(const RedisOptions &o, const std::string &what) {
  return Error{ErrorCode::kIo,
               "Redis at " + o.host + ":" + std::to_string(o.port) + " is unreachable: " + what,
               ""};
}

void append(redisContext *c, const std::vector<std::string> &argv) {
  std::vector<const char *> ptrs;
  std::vector<size_t> lens;
  ptrs.reserve(argv.size());
  lens.reserve(argv.size());
  for (const auto &a : argv) {
    ptrs.push_back(a.data());
    lens.push_back(a.size());
  }
  redisAppendCommandArgv(c, static_cast<int>(argv.size()), ptrs.data(), lens.data());
}

} // namespace

int64_t RedisReply::as_int(int64_t fallback) const {
  if (kind == Kind::kInteger)
    return integer;
  if (kind == Kind::kString || kind == Kind::kStatus) {
    int64_t v = 0;
    auto [p, ec] = std::from_chars(str.data(), str.data() + str.size(), v);
    if (ec == std::errc() && p == str.data() + str.size())
      return v;
  }
  return fallback;
}

double RedisReply::as_double(double fallback) const {
  if (kind == Kind::kInteger)
    return static_cast<double>(integer);
  if (kind == Kind::kString || kind == Kind::kStatus) {
    char *end = nullptr;
    const double v = std::strtod(str.c_str(), &end);
    if (end && *end == '\0' && !str.empty())
      return v;
  }
  return fallback;
}

RedisScript::RedisScript(std::string src) : source(std::move(src)) {
  unsigned char digest[SHA_DIGEST_LENGTH];
  SHA1(reinterpret_cast<const unsigned char *>(source.data()), source.size(), digest);
  char hex[2 * SHA_DIGEST_LENGTH + 1];
  for (int i = 0; i < SHA_DIGEST_LENGTH; ++i)
    std::snprintf(hex + 2 * i, 3, "%02x", digest[i]);
  sha1.assign(hex, 2 * SHA_DIGEST_LENGTH);
}

Result<RedisOptions> parse_redis_url(std::string_view url) {
  auto u = boost::urls::parse_absolute_uri(url);
  if (!u)
    return Err(ErrorCode::kInvalidArgument,
               "the Redis URL is not a URL (expected redis://[:password@]host[:port][/db])");
  if (u->scheme() != "redis")
    return Err(ErrorCode::kInvalidArgument,
               "the Redis URL must start with redis:// (TLS rediss:// is not supported yet)");
  RedisOptions o;
  if (u->host().empty())
    return Err(ErrorCode::kInvalidArgument, "the Redis URL has no host");
  o.host = u->host_address();
  if (u->has_port()) {
    const int port = static_cast<int>(u->port_number());
    if (port <= 0 || port > 65535)
      return Err(ErrorCode::kInvalidArgument, "the Redis URL's port is out of range");
    o.port = port;
  }
  if (u->has_userinfo()) {
    o.username = u->user();
    o.password = u->password();
  }
  std::string path = u->path();
  if (!path.empty() && path != "/") {
    path.erase(0, 1);
    int db = -1;
    auto [p, ec] = std::from_chars(path.data(), path.data() + path.size(), db);
    if (ec != std::errc() || p != path.data() + path.size() || db < 0 || db > 15)
      return Err(ErrorCode::kInvalidArgument,
                 "the Redis URL's path must be a database number 0-15, got '/" + path + "'");
    o.db = db;
  }
  for (auto param : u->params()) {
    if (param.key == "prefix" && param.has_value)
      o.prefix = param.value;
    else
      return Err(ErrorCode::kInvalidArgument,
                 "unknown Redis URL parameter '" + std::string(param.key) + "' (known: prefix)");
  }
  return o;
}

std::string redact_redis_url(std::string_view url) {
  auto u = boost::urls::parse_absolute_uri(url);
  if (!u)
    return "(an unparsable URL)";
  boost::urls::url copy(*u);
  if (copy.has_password())
    copy.set_password("***");
  return std::string(copy.buffer());
}

Result<std::unique_ptr<RedisClient>> RedisClient::connect(RedisOptions options,
                                                          const Clock &clock) {
  std::unique_ptr<RedisClient> c(new RedisClient(std::move(options), clock));
  GANTRY_ASSIGN_OR_RETURN(redisContext * first, c->open_connection(true));
  c->open_ = 1;
  c->give_back(first, false);
  return c;
}

RedisClient::~RedisClient() {
  for (redisContext *c : idle_)
    redisFree(c);
}

std::string RedisClient::address() const {
  return options_.host + ":" + std::to_string(options_.port) + "/" + std::to_string(options_.db);
}

bool RedisClient::reachable() const {
  std::lock_guard<std::mutex> lk(mu_);
  return reachable_;
}

Result<redisContext *> RedisClient::open_connection(bool first) {
  const RedisOptions &o = options_;
  const timeval ct = to_timeval(o.connect_timeout);
  redisContext *c = redisConnectWithTimeout(o.host.c_str(), o.port, ct);
  if (!c)
    return Err(io_error(o, "out of memory"));
  if (c->err) {
    std::string why = c->errstr;
    redisFree(c);
    return Err(io_error(o, why));
  }
  redisSetTimeout(c, to_timeval(o.command_timeout));
  redisEnableKeepAlive(c);
  // AUTH and SELECT, then PING: one round trip.
  std::vector<std::vector<std::string>> hello;
  if (!o.password.empty()) {
    if (o.username.empty())
      hello.push_back({"AUTH", o.password});
    else
      hello.push_back({"AUTH", o.username, o.password});
  }
  if (o.db != 0)
    hello.push_back({"SELECT", std::to_string(o.db)});
  hello.push_back({"PING"});
  for (const auto &cmd : hello)
    append(c, cmd);
  for (size_t i = 0; i < hello.size(); ++i) {
    void *raw = nullptr;
    if (redisGetReply(c, &raw) != REDIS_OK) {
      std::string why = c->errstr;
      redisFree(c);
      return Err(io_error(o, why));
    }
    RedisReply r = convert(static_cast<redisReply *>(raw));
    freeReplyObject(raw);
    if (r.kind == RedisReply::Kind::kError) {
      redisFree(c);
      // A wrong password or db is a configuration error, not an outage: say what Redis said.
      return Err(ErrorCode::kInvalidArgument, "Redis at " + o.host + ":" + std::to_string(o.port) +
                                                  " refused the connection" +
                                                  (first ? " at start-up" : "") + ": " + r.str);
    }
  }
  return c;
}

Result<redisContext *> RedisClient::take() {
  std::unique_lock<std::mutex> lk(mu_);
  for (;;) {
    if (!idle_.empty()) {
      redisContext *c = idle_.back();
      idle_.pop_back();
      return c;
    }
    if (open_ < options_.pool_size)
      break;
    // Every connection is busy: wait for one, bounded by the command timeout.
    if (!cv_.wait_for(lk, options_.command_timeout, [&] { return !idle_.empty(); }))
      return Err(io_error(options_, "every pooled connection stayed busy for the command timeout"));
  }
  if (backoff_.count() > 0 && clock_.now() < retry_at_)
    return Err(io_error(options_, "reconnecting (back-off after a failed attempt)"));
  ++open_;
  lk.unlock();
  auto c = open_connection(false);
  lk.lock();
  if (!c) {
    --open_;
    backoff_ = backoff_.count() == 0 ? kFirstBackoff : std::min(backoff_ * 2, kMaxBackoff);
    retry_at_ = clock_.now() + backoff_;
    reachable_ = false;
    return Err(c.take_error());
  }
  backoff_ = std::chrono::milliseconds(0);
  reachable_ = true;
  return *c;
}

void RedisClient::give_back(redisContext *c, bool broken) {
  std::lock_guard<std::mutex> lk(mu_);
  if (broken) {
    redisFree(c);
    --open_;
    reachable_ = false;
  } else {
    idle_.push_back(c);
    reachable_ = true;
  }
  cv_.notify_one();
}

Result<std::vector<RedisReply>>
RedisClient::run(const std::vector<std::vector<std::string>> &commands) {
  GANTRY_ASSIGN_OR_RETURN(redisContext * c, take());
  for (const auto &cmd : commands)
    append(c, cmd);
  std::vector<RedisReply> out;
  out.reserve(commands.size());
  for (size_t i = 0; i < commands.size(); ++i) {
    void *raw = nullptr;
    if (redisGetReply(c, &raw) != REDIS_OK) {
      // A broken or timed-out connection cannot be reused: its next reply could be this one's.
      std::string why = c->errstr[0] ? c->errstr : "connection lost";
      give_back(c, true);
      return Err(io_error(options_, why));
    }
    out.push_back(convert(static_cast<redisReply *>(raw)));
    freeReplyObject(raw);
  }
  give_back(c, false);
  return out;
}

Result<RedisReply> RedisClient::command(const std::vector<std::string> &argv) {
  GANTRY_ASSIGN_OR_RETURN(auto replies, run({argv}));
  return std::move(replies.front());
}

Result<std::vector<RedisReply>>
RedisClient::pipeline(const std::vector<std::vector<std::string>> &commands) {
  if (commands.empty())
    return std::vector<RedisReply>{};
  return run(commands);
}

Result<RedisReply> RedisClient::eval(const RedisScript &script,
                                     const std::vector<std::string> &keys,
                                     const std::vector<std::string> &args) {
  std::vector<std::string> argv;
  argv.reserve(3 + keys.size() + args.size());
  argv.push_back("EVALSHA");
  argv.push_back(script.sha1);
  argv.push_back(std::to_string(keys.size()));
  argv.insert(argv.end(), keys.begin(), keys.end());
  argv.insert(argv.end(), args.begin(), args.end());
  GANTRY_ASSIGN_OR_RETURN(RedisReply r, command(argv));
  if (r.kind == RedisReply::Kind::kError && r.str.rfind("NOSCRIPT", 0) == 0) {
    argv[0] = "EVAL";
    argv[1] = script.source;
    GANTRY_ASSIGN_OR_RETURN(r, command(argv));
  }
  if (r.kind == RedisReply::Kind::kError)
    return Err(ErrorCode::kInternal, "Redis script failed: " + r.str);
  return r;
}

} // namespace gantry::store
