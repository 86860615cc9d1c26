#include "jobs/job_runner.h"

#include <cstdio>
#include <future>

#include "core/thread_guard.h"

namespace gantry::jobs {
namespace {

// The usage object's numbers from an OpenAI response body, without a JSON dependency here:
// "prompt_tokens": N and "completion_tokens": N appear once, in "usage".
int64_t json_int_after(const std::string &body, std::string_view key) {
  const auto at = body.rfind(key);
  if (at == std::string::npos)
    return 0;
  size_t i = at + key.size();
  while (i < body.size() && (body[i] == '"' || body[i] == ':' || body[i] == ' '))
    ++i;
  int64_t v = 0;
  while (i < body.size() && body[i] >= '0' && body[i] <= '9')
    v = v * 10 + (body[i++] - '0');
  return v;
}

} // namespace

JobRunner::JobRunner(JobQueue &queue, JobExecutor &executor, RunnerOptions options,
                     EventHook on_event)
    : queue_(queue), executor_(executor), options_(options), on_event_(std::move(on_event)) {}

JobRunner::~JobRunner() { stop(); }

void JobRunner::start() {
  for (int i = 0; i < options_.workers; ++i)
    threads_.emplace_back([this, i] {
      guarded_loop(
          "jobs.worker", [this, i] { work(i); }, [this] { return stopping_.load(); });
    });
  maintenance_ = std::thread([this] {
    guarded_loop(
        "jobs.maintenance", [this] { maintain(); }, [this] { return stopping_.load(); });
  });
}

void JobRunner::stop_leasing() {
  stopping_.store(true);
  queue_.wake_all();
  cv_.notify_all();
}

void JobRunner::stop() { (void)drain(std::chrono::milliseconds(0)); }

int JobRunner::drain(std::chrono::milliseconds grace) {
  stop_leasing();
  if (joined_)
    return 0;
  joined_ = true;
  std::vector<Running> cut;
  {
    std::unique_lock<std::mutex> lk(mu_);
    cv_.wait_for(lk, grace, [&] { return active_ == 0; });
    for (auto &[id, r] : running_)
      cut.push_back(r);
  }
  // The lease goes back before the execution is cancelled: whatever the cancelled execution then
  // reports, its complete() is refused, so the job runs to completion once, on another node.
  int handed_back = 0;
  for (auto &r : cut) {
    auto released = queue_.release(r.lease, "handed back: the node running it was draining");
    if (released && *released) {
      ++handed_back;
      counters_.released++;
    } else if (!released) {
      std::fprintf(stderr, "jobs: release %s: %s\n", r.lease.job.id.c_str(),
                   released.error().message.c_str());
    }
    r.cancel();
  }
  for (auto &t : threads_)
    t.join();
  threads_.clear();
  if (maintenance_.joinable())
    maintenance_.join();
  return handed_back;
}

bool JobRunner::cancel(const std::string &job_id) {
  std::function<void()> c;
  {
    std::lock_guard<std::mutex> lk(mu_);
    auto it = running_.find(job_id);
    if (it == running_.end())
      return false;
    c = it->second.cancel;
  }
  c();
  return true;
}

void JobRunner::work(int index) {
  const std::string name = "worker-" + std::to_string(index);
  while (!stopping_.load()) {
    auto leased = queue_.lease(name, options_.visibility, std::chrono::seconds(1));
    if (!leased) {
      std::fprintf(stderr, "jobs: lease failed: %s\n", leased.error().message.c_str());
      std::unique_lock<std::mutex> lk(mu_);
      cv_.wait_for(lk, std::chrono::milliseconds(200), [&] { return stopping_.load(); });
      continue;
    }
    if (!*leased)
      continue;
    const Lease lease = std::move(**leased);
    {
      std::lock_guard<std::mutex> lk(mu_);
      ++active_;
    }
    const bool ran = run_reporting("jobs.worker", [&] { run_leased(lease); });
    {
      std::lock_guard<std::mutex> lk(mu_);
      --active_;
      if (!ran)
        running_.erase(lease.job.id);
    }
    cv_.notify_all(); // a drain waits for active_ to reach 0
    if (!ran) {
      // Hand the job back now (as a failed attempt) rather than leave it leased until the
      // visibility timeout; a job that keeps failing this way ends after max_attempts.
      (void)queue_.retry(lease, "the job runner failed unexpectedly", options_.retry_base, true);
    }
  }
}

void JobRunner::run_leased(const Lease &lease) {
  counters_.started++;
  if (on_event_)
    on_event_(lease.job, "started");
  auto promise = std::make_shared<std::promise<ExecResult>>();
  auto fut = promise->get_future();
  auto once = std::make_shared<std::atomic<bool>>(false);
  auto cancel = executor_.start(lease.job, [promise, once](ExecResult r) {
    if (!once->exchange(true))
      promise->set_value(std::move(r));
  });
  {
    std::lock_guard<std::mutex> lk(mu_);
    running_[lease.job.id] = Running{lease, cancel};
  }
  bool cancelled = false;
  while (fut.wait_for(options_.visibility / 3) != std::future_status::ready) {
    auto renewed = queue_.renew(lease, options_.visibility);
    if (renewed && !*renewed && !cancelled) {
      // Canceled, expired or reclaimed: the result could not be recorded anyway.
      cancelled = true;
      cancel();
    }
  }
  {
    std::lock_guard<std::mutex> lk(mu_);
    running_.erase(lease.job.id);
  }
  finish(lease, fut.get());
}

void JobRunner::finish(const Lease &lease, const ExecResult &r) {
  auto report = [&] {
    if (!on_event_)
      return;
    if (auto j = queue_.get(lease.job.id); j && *j)
      on_event_(**j, "completed");
  };
  if (r.status >= 200 && r.status < 300) {
    JobOutcome o;
    o.success = true;
    o.status = r.status;
    o.body = r.body;
    o.input_tokens = json_int_after(r.body, "\"prompt_tokens\"");
    o.output_tokens = json_int_after(r.body, "\"completion_tokens\"");
    o.cost_usd = r.cost_usd;
    auto won = queue_.complete(lease, o);
    if (won && *won) {
      counters_.succeeded++;
      report();
    } else {
      counters_.lost_leases++;
      if (!won)
        std::fprintf(stderr, "jobs: complete %s: %s\n", lease.job.id.c_str(),
                     won.error().message.c_str());
    }
    return;
  }
  const bool overload =
      (r.status == 429 && r.body.find("insufficient_quota") == std::string::npos) ||
      r.status == 503;
  if (stopping_.load()) {
    // Cut off by the drain (or refused because this node is draining): not the job's fault.
    auto released = queue_.release(lease, "handed back: the node running it was draining");
    if (released && *released)
      counters_.released++;
    return;
  }
  if (overload) {
    counters_.deferred++;
    const auto delay = std::chrono::milliseconds(std::max<int64_t>(r.retry_after_ms, 100));
    (void)queue_.retry(lease, "deferred: HTTP " + std::to_string(r.status), delay, false);
    return;
  }
  if (r.status >= 400 && r.status < 500) {
    JobOutcome o;
    o.status = r.status;
    o.body = r.body;
    o.error = "the request failed with HTTP " + std::to_string(r.status);
    auto won = queue_.complete(lease, o);
    if (won && *won) {
      counters_.failed++;
      report();
    }
    return;
  }
  auto delay = options_.retry_base;
  for (int i = 1; i < lease.attempt && delay < options_.retry_max; ++i)
    delay *= 2;
  const std::string why = r.status == 0
                              ? std::string("no response")
                              : "HTTP " + std::to_string(r.status) + ": " + r.body.substr(0, 200);
  auto changed = queue_.retry(lease, why, std::min(delay, options_.retry_max), true);
  if (changed && *changed) {
    if (lease.attempt >= lease.job.max_attempts) {
      counters_.failed++;
      report();
    } else {
      counters_.retried++;
    }
  }
}

void JobRunner::maintain() {
  std::unique_lock<std::mutex> lk(mu_);
  while (!stopping_.load()) {
    cv_.wait_for(lk, options_.maintenance, [&] { return stopping_.load(); });
    if (stopping_.load())
      break;
    lk.unlock();
    auto r = queue_.reclaim();
    if (!r) {
      std::fprintf(stderr, "jobs: reclaim: %s\n", r.error().message.c_str());
    } else {
      counters_.reclaimed += r->requeued.size() + r->failed.size();
      counters_.expired += r->expired.size();
      for (const auto &j : r->expired) {
        cancel(j.id);
        if (on_event_)
          on_event_(j, "completed");
      }
      for (const auto &j : r->failed) {
        if (on_event_)
          on_event_(j, "completed");
      }
    }
    lk.lock();
  }
}

} // namespace gantry::jobs
