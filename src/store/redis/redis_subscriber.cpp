#include "store/redis/redis_subscriber.h"

#include <hiredis/hiredis.h>
#include <sys/select.h>
#include <unistd.h>

#include <algorithm>
#include <vector>

namespace gantry::store {
namespace {

// Waits until `fd` is readable or `ms` passed; true when readable.
bool readable(int fd, int ms) {
  fd_set in;
  FD_ZERO(&in);
  FD_SET(fd, &in);
  timeval tv{ms / 1000, (ms % 1000) * 1000};
  return ::select(fd + 1, &in, nullptr, nullptr, &tv) > 0;
}

} // namespace

RedisSubscriber::RedisSubscriber(std::shared_ptr<RedisClient> redis, std::string channel,
                                 OnMessage on_message, std::function<void()> on_reconnect)
    : redis_(std::move(redis)), channel_(std::move(channel)), on_message_(std::move(on_message)),
      on_reconnect_(std::move(on_reconnect)), thread_([this] { run(); }) {}

RedisSubscriber::~RedisSubscriber() {
  stopping_.store(true);
  if (thread_.joinable())
    thread_.join();
}

void RedisSubscriber::run() {
  const RedisOptions &o = redis_->options();
  int backoff_ms = 50;
  bool first = true;
  // A reply is a message when it is ["message", channel, payload].
  auto deliver = [this](redisReply *r) {
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 3 || !r->element[2] ||
        r->element[2]->type != REDIS_REPLY_STRING)
      return;
    ++received_;
    if (on_message_)
      on_message_(std::string_view(r->element[2]->str, r->element[2]->len));
  };
  while (!stopping_.load()) {
    timeval ct{static_cast<time_t>(o.connect_timeout.count() / 1000),
               static_cast<suseconds_t>((o.connect_timeout.count() % 1000) * 1000)};
    redisContext *c = redisConnectWithTimeout(o.host.c_str(), o.port, ct);
    bool ok = c && !c->err;
    auto call = [&](std::vector<const char *> argv) {
      if (!ok)
        return;
      auto *r = static_cast<redisReply *>(
          redisCommandArgv(c, static_cast<int>(argv.size()), argv.data(), nullptr));
      ok = r && r->type != REDIS_REPLY_ERROR;
      if (r)
        freeReplyObject(r);
    };
    if (!o.password.empty()) {
      if (o.username.empty())
        call({"AUTH", o.password.c_str()});
      else
        call({"AUTH", o.username.c_str(), o.password.c_str()});
    }
    call({"SUBSCRIBE", channel_.c_str()}); // the reply is the subscription confirmation
    if (ok) {
      backoff_ms = 50;
      if (!first) {
        ++received_;
        if (on_reconnect_)
          on_reconnect_(); // back after an outage: something may have happened meanwhile
      }
      first = false;
    }
    while (ok && !stopping_.load()) {
      if (!readable(c->fd, 200))
        continue;
      void *raw = nullptr;
      if (redisGetReply(c, &raw) != REDIS_OK) {
        ok = false;
        break;
      }
      auto *r = static_cast<redisReply *>(raw);
      deliver(r);
      if (r)
        freeReplyObject(r);
      // While the reader holds more complete replies, take them before waiting on the socket.
      while (ok && !stopping_.load()) {
        void *more = nullptr;
        if (redisReaderGetReply(c->reader, &more) != REDIS_OK) {
          ok = false;
          break;
        }
        if (!more)
          break;
        auto *m = static_cast<redisReply *>(more);
        deliver(m);
        freeReplyObject(m);
      }
    }
    if (c)
      redisFree(c);
    if (stopping_.load())
      break;
    // Back-off before reconnecting, in short sleeps so destruction stays prompt.
    for (int waited = 0; waited < backoff_ms && !stopping_.load(); waited += 50)
      ::usleep(50'000);
    backoff_ms = std::min(backoff_ms * 2, 2000);
  }
}

} // namespace gantry::store
