#include "store/redis/redis_job_events.h"

#include "jobs/job_ids.h"

namespace gantry::store {
namespace {

// Job ids are ~30 bytes; anything longer on the channel is not ours.
constexpr std::size_t kMaxPayload = 512;

} // namespace

RedisJobEvents::RedisJobEvents(std::shared_ptr<RedisClient> redis, const Clock &clock,
                               size_t max_waiters)
    : redis_(std::move(redis)), channel_(redis_->prefix() + "jobs"),
      origin_(jobs::JobIds().next("node-")), local_(clock, max_waiters),
      subscriber_(std::make_unique<RedisSubscriber>(
          redis_, channel_, [this](std::string_view p) { on_message(p); }, nullptr)) {}

RedisJobEvents::~RedisJobEvents() { subscriber_.reset(); }

void RedisJobEvents::publish(const jobs::JobEvent &event) {
  local_.publish(event);
  const char kind = event.kind == jobs::JobEventKind::kCanceled ? 'x' : 'c';
  // Best effort: without Redis the other nodes miss it (see the header), nothing else does.
  (void)redis_->command({"PUBLISH", channel_, origin_ + ' ' + kind + ' ' + event.job_id});
}

void RedisJobEvents::on_message(std::string_view p) {
  if (p.size() > kMaxPayload)
    return;
  const auto a = p.find(' ');
  if (a == std::string_view::npos || a + 3 > p.size() || p[a + 2] != ' ')
    return;
  if (p.substr(0, a) == origin_)
    return; // delivered locally when published
  const char kind = p[a + 1];
  if (kind != 'c' && kind != 'x')
    return;
  jobs::JobEvent e;
  e.job_id = std::string(p.substr(a + 3));
  if (e.job_id.empty())
    return;
  e.kind = kind == 'x' ? jobs::JobEventKind::kCanceled : jobs::JobEventKind::kCompleted;
  ++remote_;
  local_.publish(e);
}

Result<uint64_t> RedisJobEvents::wait(std::string_view job_id, int64_t deadline_ms,
                                      WaitCallback done) {
  return local_.wait(job_id, deadline_ms, std::move(done));
}

bool RedisJobEvents::cancel_wait(uint64_t handle) { return local_.cancel_wait(handle); }

void RedisJobEvents::listen(Listener listener) { local_.listen(std::move(listener)); }

int64_t RedisJobEvents::expire_due() { return local_.expire_due(); }

void RedisJobEvents::shutdown() { local_.shutdown(); }

} // namespace gantry::store
