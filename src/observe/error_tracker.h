// Error tracking (issue 6): every 5xx, engine failure and unexpected exception is captured with
// its tags and grouped by fingerprint, so that operators see "this failure, N times, since T"
// instead of a stream of log lines. GET /admin/v1/errors renders the groups; an optional
// ErrorSink (SentryForwarder) forwards them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <exception>
#include <list>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "core/clock.h"
#include "core/result.h"

namespace gantry::observe {

// One failure as the caller saw it. Plain value, built on whichever thread failed.
struct ErrorEvent {
  std::string type;     // "internal_error", "std::bad_alloc", "engine.kv_exhausted", ...
  std::string message;  // the full message; keys in it are redacted on capture
  std::string location; // "file:line" or a logical site like "gateway.inference"
  int status = 500;
  std::map<std::string, std::string> tags; // model, project, key_id, request_id, endpoint
};

// An event for an Error value: type = its code name ("internal_error"), status = its status.
ErrorEvent error_event(const Error &error, std::string location);
// An event for an exception caught at a boundary: type = the demangled dynamic type.
ErrorEvent exception_event(const std::exception &e, std::string location);

// The message with its volatile parts replaced, so that "KV cache full after 812 tokens" and
// "KV cache full after 90 tokens" group together: quoted strings → <s>, UUIDs, 0x.., hex runs of
// 8+ characters and long random ids → <id>, numbers → <n>, gsk_ keys → gsk_<id>.
std::string message_template(std::string_view message);
// Replaces every API key (gsk_ + 12-character id + _ + 43-character secret) with
// gsk_<its id>_***: the id is public (it is the key_id tag), the secret never leaves here.
std::string redact_secrets(std::string_view text);
// 16 hex digits of SHA-256 over (type, template, location); stable across runs and builds.
std::string error_fingerprint(std::string_view type, std::string_view message_template,
                              std::string_view location);

struct TagCount {
  std::string value;
  std::uint64_t count = 0;
};

struct TagCounts {
  std::string key;              // "model", "endpoint"
  std::vector<TagCount> values; // highest count first in snapshots
};

struct ErrorGroup {
  std::string fingerprint;
  std::string type;
  std::string message_template;
  std::string location;
  std::uint64_t count = 0;
  std::int64_t first_seen = 0; // unix seconds
  std::int64_t last_seen = 0;
  ErrorEvent sample; // the most recent event, redacted
  std::vector<TagCounts> tag_counts;
};

struct CaptureResult {
  std::string fingerprint;
  bool new_group = false;
  std::uint64_t count = 0; // the group's count including this event
};

// Receives each captured event after the tracker's lock is released, on the capturing thread.
// Implementations must not block (SentryForwarder only enqueues).
class ErrorSink {
public:
  virtual ~ErrorSink() = default;
  virtual void on_error(const ErrorEvent &event, const CaptureResult &capture) = 0;
};

struct ErrorTrackerOptions {
  std::size_t max_groups = 1000;   // beyond this the least recently seen group is evicted
  std::size_t max_tag_values = 10; // per counted tag and group
  std::vector<std::string> counted_tags = {"model", "endpoint"};
};

struct ErrorTrackerStats {
  std::uint64_t captured = 0;
  std::uint64_t groups = 0;
  std::uint64_t groups_evicted = 0;      // dropped by the max_groups bound
  std::uint64_t tag_values_replaced = 0; // tag values that displaced a rarer one (top-k bound)
};

// Thread-safe: capture() may run on any I/O or engine thread. Normalizing, redacting and hashing
// happen before the lock; under it only a hash lookup, a list splice and a few counters, so a
// capture never waits on anything slower than another capture.
class ErrorTracker {
public:
  // `clock` and `sink` (optional) must outlive the tracker.
  explicit ErrorTracker(const Clock &clock, ErrorTrackerOptions options = {},
                        ErrorSink *sink = nullptr);
  ErrorTracker(const ErrorTracker &) = delete;
  ErrorTracker &operator=(const ErrorTracker &) = delete;

  CaptureResult capture(ErrorEvent event);

  // Snapshot, most recently seen first.
  std::vector<ErrorGroup> groups(std::size_t limit = SIZE_MAX) const;
  // {"object":"list","data":[group...],"has_more":bool}, most recently seen first.
  std::string render_json(std::size_t limit = 100) const;
  ErrorTrackerStats stats() const;

private:
  void count_tags(ErrorGroup &group, const std::map<std::string, std::string> &tags);

  const Clock &clock_;
  const ErrorTrackerOptions options_;
  ErrorSink *const sink_;

  mutable std::mutex mu_;
  std::list<ErrorGroup> lru_; // front = most recently seen
  std::unordered_map<std::string, std::list<ErrorGroup>::iterator> by_fingerprint_;
  ErrorTrackerStats stats_;
};

} // namespace gantry::observe
