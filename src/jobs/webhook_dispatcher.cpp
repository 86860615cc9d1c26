#include "jobs/webhook_dispatcher.h"

#include <algorithm>
#include <cstdio>

#include "core/thread_guard.h"

namespace gantry::jobs {

std::chrono::milliseconds webhook_retry_delay(const WebhookOptions &o, std::string_view id,
                                              int attempts) {
  double d = static_cast<double>(o.retry_base.count());
  for (int i = 1; i < attempts; ++i)
    d = std::min(d * 4, static_cast<double>(o.retry_max.count()));
  // FNV-1a of id and attempt → a factor in [0.8, 1.2).
  uint64_t h = 1469598103934665603ull;
  for (char c : id)
    h = (h ^ static_cast<unsigned char>(c)) * 1099511628211ull;
  h = (h ^ static_cast<uint64_t>(attempts)) * 1099511628211ull;
  const double jitter = 0.8 + 0.4 * static_cast<double>(h % 10'000) / 10'000.0;
  return std::chrono::milliseconds(static_cast<int64_t>(d * jitter));
}

WebhookDispatcher::WebhookDispatcher(JobRecords &records, WebhookOptions options,
                                     const Clock &clock, Post post, Sign sign)
    : records_(records), options_(options), clock_(clock), post_(std::move(post)),
      sign_(std::move(sign)) {}

WebhookDispatcher::~WebhookDispatcher() { stop(); }

void WebhookDispatcher::start() {
  auto stopping = [this] {
    std::lock_guard<std::mutex> lk(mu_);
    return stopping_;
  };
  scheduler_ = std::thread([this, stopping] {
    guarded_loop(
        "webhooks.scheduler", [this] { schedule(); }, stopping);
  });
  for (int i = 0; i < std::max(1, options_.workers); ++i)
    workers_.emplace_back([this, stopping] {
      guarded_loop(
          "webhooks.worker", [this] { work(); }, stopping);
    });
}

void WebhookDispatcher::stop() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (scheduler_.joinable())
    scheduler_.join();
  for (auto &w : workers_) {
    if (w.joinable())
      w.join();
  }
  workers_.clear();
}

Status WebhookDispatcher::enqueue(const Job &job, std::string_view event,
                                  const std::string &payload_json) {
  if (job.webhook_url.empty())
    return Ok();
  const std::string short_event(event);
  if (std::find(job.webhook_events.begin(), job.webhook_events.end(), short_event) ==
      job.webhook_events.end()) {
    return Ok();
  }
  Delivery d;
  d.id = "msg_" + job.id + "_" + short_event;
  d.job_id = job.id;
  d.project = job.project;
  d.url = job.webhook_url;
  d.event = "job." + short_event;
  d.payload = payload_json;
  d.created_ms = clock_.unix_millis();
  d.next_at_ms = d.created_ms;
  GANTRY_TRY(records_.add_delivery(d));
  {
    std::lock_guard<std::mutex> lk(mu_);
    dirty_ = true;
  }
  cv_.notify_all();
  return Ok();
}

namespace {
constexpr int kScanLimit = 256;
// The receiver a delivery goes to, as endpoint_taken_ keys it.
std::string endpoint_of(const Delivery &d) { return d.project + '\n' + d.url; }
constexpr size_t kMaxTaken = 256; // deliveries queued or in flight, all projects together
} // namespace

void WebhookDispatcher::schedule() {
  const int cap = std::max(1, options_.per_project_in_flight);
  std::unique_lock<std::mutex> lk(mu_);
  while (!stopping_) {
    dirty_ = false;
    ended_during_scan_.clear();
    lk.unlock();
    const int64_t now = clock_.unix_millis();
    auto due = records_.due_deliveries(now, cap, kScanLimit);
    if (!due)
      std::fprintf(stderr, "jobs: webhook deliveries: %s\n", due.error().message.c_str());
    auto next = records_.next_delivery_at();
    lk.lock();
    bool added = false, held_back = false;
    if (due) {
      for (auto &d : *due) {
        if (taken_.count(d.id) || ended_during_scan_.count(d.id))
          continue; // queued or in flight already, or its attempt ended after the read
        if (endpoint_taken_.count(endpoint_of(d)))
          continue; // its endpoint's attempt in flight hands it on (dirty_) when it ends
        int &n = project_taken_[d.project];
        if (n >= cap || taken_.size() >= kMaxTaken) {
          held_back = true;
          if (n == 0)
            project_taken_.erase(d.project);
          continue;
        }
        ++n;
        taken_.insert(d.id);
        endpoint_taken_.insert(endpoint_of(d));
        ready_.push_back(std::move(d));
        added = true;
      }
    }
    if (added)
      cv_.notify_all();
    if (stopping_ || dirty_ || (added && due && due->size() == kScanLimit))
      continue;
    // Sleep until the next retry is due, a new event arrives or a worker frees a slot. Rows
    // that are due but queued or in flight wake us through their worker (dirty_).
    auto wait = std::chrono::milliseconds(60'000);
    if (next && *next > now)
      wait = std::chrono::milliseconds(*next - now);
    else if ((next && *next > 0) || held_back)
      wait = std::chrono::milliseconds(1'000);
    cv_.wait_for(lk, wait, [&] { return stopping_ || dirty_; });
  }
}

void WebhookDispatcher::work() {
  std::unique_lock<std::mutex> lk(mu_);
  while (true) {
    cv_.wait(lk, [&] { return stopping_ || !ready_.empty(); });
    if (stopping_)
      return;
    Delivery d = std::move(ready_.front());
    ready_.pop_front();
    const std::string id = d.id, project = d.project, endpoint = endpoint_of(d);
    lk.unlock();
    // A delivery that throws keeps its row (the store still says when it is due), and its slot
    // is given back below so the scheduler can take it again.
    run_reporting("webhooks.worker", [&] { deliver(std::move(d)); });
    lk.lock();
    taken_.erase(id);
    ended_during_scan_.insert(id);
    endpoint_taken_.erase(endpoint);
    if (auto it = project_taken_.find(project); it != project_taken_.end() && --it->second <= 0)
      project_taken_.erase(it);
    dirty_ = true; // the scheduler may hand out this project's next delivery
    cv_.notify_all();
  }
}

namespace {
// The coarse class of a failed attempt; the raw text (addresses, ports, resolver messages)
// stays out of what the tenant can read.
std::string error_class(const Error &e) {
  for (const char *c : kErrorClasses) {
    if (e.param == c)
      return c;
  }
  return "connect_failed";
}
} // namespace

void WebhookDispatcher::deliver(Delivery d) {
  const int64_t now = clock_.unix_millis();
  if (auto off = records_.endpoint_disabled(d.project, d.url); off && *off) {
    d.status = "disabled";
    d.last_error = "the endpoint answered 410 Gone earlier and is disabled";
    counters_.disabled++;
    (void)records_.update_delivery(d);
    return;
  }
  d.attempts++;
  auto headers = sign_(d, now / 1000);
  Result<int> status =
      headers ? post_(d.url, d.payload, *headers) : Result<int>(Err(headers.error()));
  if (status && *status >= 200 && *status < 300) {
    d.status = "delivered";
    d.last_status = *status;
    d.last_error.clear();
    d.delivered_ms = now;
    counters_.delivered++;
  } else if (status && *status == 410) {
    d.status = "disabled";
    d.last_status = 410;
    d.last_error = "410 Gone: endpoint disabled";
    counters_.disabled++;
    (void)records_.disable_endpoint(d.project, d.url, now);
  } else {
    d.last_status = status ? *status : 0;
    d.last_error =
        status ? "non_2xx:" + std::to_string(*status / 100) + "xx" : error_class(status.error());
    counters_.failed_attempts++;
    const auto delay = webhook_retry_delay(options_, d.id, d.attempts);
    if (now + delay.count() - d.created_ms > options_.give_up_after.count()) {
      d.status = "failed";
      counters_.gave_up++;
    } else {
      d.next_at_ms = now + delay.count();
    }
  }
  if (auto st = records_.update_delivery(d); !st)
    std::fprintf(stderr, "jobs: webhook delivery %s: %s\n", d.id.c_str(),
                 st.error().message.c_str());
}

} // namespace gantry::jobs
