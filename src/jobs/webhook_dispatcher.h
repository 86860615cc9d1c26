// Delivers job events to the job's webhook URL, signed per Standard Webhooks with the project's
// secrets (every valid secret signs during a rotation). Each event is one persisted Delivery
// whose id is the webhook-id header, derived from the job and the event so it stays the same
// across retries and across re-executions of the job (receivers deduplicate on it).
//
// Retries: exponential backoff from `retry_base` (×4 per attempt, capped at `retry_max`) with
// ±20% jitter, until `give_up_after` since the event (a day by default). A 410 Gone disables the
// endpoint for the project that registered it: that project's later deliveries to it are not
// attempted.
//
// Fairness (audit L4): `workers` threads send; a project has at most `per_project_in_flight`
// deliveries queued or in flight, so one tenant's blackhole receiver holds at most that many
// workers while the others keep delivering. Each attempt is bounded by the Post (a total
// deadline, DNS included).
//
// What a tenant sees (audit H6, the oracle): last_error is a coarse class, never the client's
// text: the Post's Error::param when it is one of kErrorClasses, else "connect_failed"; a non-2xx
// answer records "non_2xx:4xx" (the status class).
//
// Threading: a scheduler thread reads due deliveries and hands them to the worker threads;
// enqueue() may be called from any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "core/clock.h"
#include "core/result.h"
#include "jobs/job_queue.h"
#include "jobs/job_records.h"

namespace gantry::jobs {

struct WebhookOptions {
  std::chrono::milliseconds retry_base{5'000};
  std::chrono::milliseconds retry_max{std::chrono::hours(6)};
  std::chrono::milliseconds give_up_after{std::chrono::hours(24)};
  int workers = 4;
  int per_project_in_flight = 2;
};

// The error classes a delivery records (Post errors carry one in Error::param).
inline constexpr const char *kErrorClasses[] = {"blocked_destination", "connect_failed", "timeout",
                                                "tls_failed", "bad_response"};

// The delay before attempt `attempts + 1` of delivery `id` (deterministic jitter from the id, so
// no random source is needed and retries of many deliveries still spread out).
std::chrono::milliseconds webhook_retry_delay(const WebhookOptions &o, std::string_view id,
                                              int attempts);

struct WebhookCounters {
  std::atomic<uint64_t> delivered{0}, failed_attempts{0}, gave_up{0}, disabled{0};
};

class WebhookDispatcher {
public:
  // Sends one signed body within its own total deadline; the HTTP status, or an error whose
  // param is its class (kErrorClasses). Called from several worker threads at once.
  using Post = std::function<Result<int>(const std::string &url, const std::string &body,
                                         const std::vector<std::pair<std::string, std::string>> &)>;
  // The Standard Webhooks headers for a body, signed with the project's secrets.
  using Sign = std::function<Result<std::vector<std::pair<std::string, std::string>>>(
      const Delivery &d, int64_t unix_seconds)>;

  WebhookDispatcher(JobRecords &records, WebhookOptions options, const Clock &clock, Post post,
                    Sign sign);
  ~WebhookDispatcher();

  void start();
  void stop();
  // Records the event's delivery when the job asked for it; the payload is `payload_json`.
  Status enqueue(const Job &job, std::string_view event, const std::string &payload_json);
  const WebhookCounters &counters() const { return counters_; }

private:
  void schedule();
  void work();
  void deliver(Delivery d);

  JobRecords &records_;
  const WebhookOptions options_;
  const Clock &clock_;
  Post post_;
  Sign sign_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  bool dirty_ = false;
  std::deque<Delivery> ready_;                         // handed to workers; bounded by the cap
  std::unordered_set<std::string> taken_;              // ids queued or in flight
  std::unordered_map<std::string, int> project_taken_; // per project: queued + in flight
  // Ids whose attempt ended while the scheduler read the due rows without the lock: that read may
  // still list them as due, and taking them again would deliver twice. Cleared at each scan, so
  // bounded by the attempts that end during one scan (at most kMaxTaken).
  std::unordered_set<std::string> ended_during_scan_;
  // Endpoints (project + URL) with an attempt queued or in flight: one at a time each, so a
  // job's "started" reaches a receiver before its "completed", and a 410 from the first attempt
  // disables the endpoint before a second one is sent (at most kMaxTaken entries).
  std::unordered_set<std::string> endpoint_taken_;
  WebhookCounters counters_;
  std::thread scheduler_;
  std::vector<std::thread> workers_;
};

} // namespace gantry::jobs
