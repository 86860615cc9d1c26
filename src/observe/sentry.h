// Optional forwarding of captured errors to Sentry through its envelope endpoint
// (POST {scheme}://{host}/api/{project}/envelope/). The HTTP transport is injected as an
// HttpPoster so that this module decides what and when to send, and an adapter
// (observe/http_poster.h) decides how.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>

#include "core/clock.h"
#include "core/result.h"
#include "http/request.h"
#include "observe/error_tracker.h"

namespace gantry::observe {

// {scheme}://{public_key}[:{secret}]@{host}[:{port}][/{path}]/{project_id}. Immutable.
struct SentryDsn {
  std::string raw;
  std::string scheme; // "http" or "https"
  std::string public_key;
  std::string host;
  std::uint16_t port = 0; // 0 = the scheme's default
  std::string path;       // a path prefix before the project id ("" or "/sentry")
  std::string project_id;

  // {scheme}://{host}[:{port}]{path}/api/{project_id}/envelope/
  std::string envelope_url() const;
  // "Sentry sentry_version=7, sentry_client=<client>, sentry_key=<public_key>"
  std::string auth_header(std::string_view client) const;
};

// kInvalidArgument naming what is wrong (scheme, key, host, project id).
Result<SentryDsn> parse_dsn(std::string_view dsn);

inline constexpr std::string_view kSentryClient = "gantry/0.1";

// Describes this process in every event. Part of the immutable forwarder config.
struct SentryEventContext {
  std::string release = "gantry@0.1.0";
  std::string environment = "production";
  std::string server_name; // empty: omitted
  std::string logger = "gantry";
};

// One event envelope: the envelope header line, the item header line and the event payload,
// each followed by "\n". `event_id` is 32 lowercase hex digits; `unix_millis` stamps both
// sent_at and the event timestamp.
std::string build_envelope(const SentryDsn &dsn, const SentryEventContext &context,
                           const ErrorEvent &event, std::string_view fingerprint,
                           std::string_view event_id, std::int64_t unix_millis);

// "2023-11-14T22:13:20.123Z"
std::string rfc3339_millis(std::int64_t unix_millis);

// 32 hex digits from the OS's CSPRNG (a UUIDv4 without dashes).
std::string random_event_id();

// What the transport reports back: enough to honour Sentry's rate limiting.
struct PostResponse {
  int status = 0;
  std::string retry_after;        // Retry-After header, "" when absent
  std::string sentry_rate_limits; // X-Sentry-Rate-Limits header, "" when absent
};

using HttpPoster = std::function<Result<PostResponse>(
    const std::string &url, const std::string &body, const http::Headers &headers)>;

// How long a 429 asks us to stay quiet: the longest X-Sentry-Rate-Limits entry that covers
// errors (no categories, "error" or "default"), else a numeric Retry-After, else `fallback`.
std::chrono::seconds rate_limit_pause(const PostResponse &response, std::chrono::seconds fallback);

struct SentryOptions {
  SentryEventContext context;
  std::size_t queue_capacity = 256;          // beyond this, events are dropped and counted
  std::chrono::seconds repeat_interval{60};  // at most one event per group per interval
  std::chrono::seconds default_pause{60};    // 429 without a usable Retry-After
  std::size_t max_tracked_groups = 4096;     // bound on the per-group last-sent table
  std::function<std::string()> new_event_id; // default: random_event_id
};

struct SentryStats {
  std::uint64_t enqueued = 0;
  std::uint64_t sent = 0;                // 2xx
  std::uint64_t failed = 0;              // transport error or non-2xx other than 429
  std::uint64_t rate_limited = 0;        // 429 responses
  std::uint64_t dropped_queue_full = 0;  // queue at capacity
  std::uint64_t dropped_paused = 0;      // offered or dequeued while a 429 pause lasts
  std::uint64_t suppressed_repeats = 0;  // same group within repeat_interval
  std::uint64_t dropped_at_shutdown = 0; // still queued when the forwarder was destroyed
};

// on_error() runs on capturing threads and only decides and enqueues (never blocks on the
// network); one owned background thread builds envelopes and calls the poster. Destroying the
// forwarder stops that thread after the post in flight, if any; queued events are dropped
// unless flush() drained them first.
class SentryForwarder final : public ErrorSink {
public:
  // `clock` (rate limits, pauses, timestamps) must outlive the forwarder.
  SentryForwarder(SentryDsn dsn, SentryOptions options, HttpPoster poster, const Clock &clock);
  ~SentryForwarder() override;
  SentryForwarder(const SentryForwarder &) = delete;
  SentryForwarder &operator=(const SentryForwarder &) = delete;

  // Forwards a new group's first event, then at most one event per group per repeat_interval.
  void on_error(const ErrorEvent &event, const CaptureResult &capture) override;

  // Waits (wall clock, up to `timeout`) until the queue is empty and no post is in flight;
  // true if that happened. For graceful shutdown and for tests.
  bool flush(std::chrono::milliseconds timeout);

  SentryStats stats() const;

private:
  struct Item {
    ErrorEvent event;
    std::string fingerprint;
  };

  void loop();
  bool paused_locked() const;
  void forget_stale_groups_locked();

  const SentryDsn dsn_;
  const SentryOptions options_;
  const HttpPoster poster_;
  const Clock &clock_;
  const std::string url_;
  const http::Headers headers_;

  mutable std::mutex mu_;
  std::condition_variable wake_; // the worker: an item or stop
  std::condition_variable idle_; // flush(): queue drained
  std::deque<Item> queue_;
  bool in_flight_ = false;
  bool stop_ = false;
  std::chrono::steady_clock::time_point paused_until_{};
  std::unordered_map<std::string, std::chrono::steady_clock::time_point> last_sent_;
  SentryStats stats_;
  std::thread thread_; // last: started after everything it reads exists
};

} // namespace gantry::observe
