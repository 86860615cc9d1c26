// Idempotency-Key on POST /v1/*: the first request with a key runs; a retry with the same key
// and the same body gets the stored response replayed (no second run, no second bill); the same
// key with a different body is 422; a retry while the first is still running is 409.
//
// Keys are scoped by the caller (its API key id), so two tenants cannot collide or read each
// other's responses. Entries live `ttl` (24 h, as Stripe does) and at most `max_entries`, oldest
// first out. In memory: a restart forgets them (the Redis implementation with the multi-node
// issue will not). Responses that failed with a 5xx or were cut off are not stored, so the retry
// runs again.
#pragma once

#include <chrono>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "core/clock.h"

namespace gantry::control {

struct StoredResponse {
  int status = 200;
  std::string content_type;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;                // a complete response
  bool sse = false;                // or an event stream:
  std::vector<std::string> events; // the data of each event, in order
};

class IdempotencyStore {
public:
  enum class Outcome { kFirst, kReplay, kInFlight, kMismatch };
  struct Begin {
    Outcome outcome = Outcome::kFirst;
    std::shared_ptr<const StoredResponse> response; // for kReplay
  };

  IdempotencyStore(const Clock &clock, std::chrono::seconds ttl = std::chrono::hours(24),
                   size_t max_entries = 100'000)
      : clock_(clock), ttl_(ttl), max_entries_(max_entries) {}

  // `body_digest` identifies the request body (a hash).
  Begin begin(const std::string &key, const std::string &body_digest);
  // The first request finished: keep its response for replays.
  void complete(const std::string &key, StoredResponse response);
  // The first request failed in a way a retry should redo: forget the key.
  void abandon(const std::string &key);
  size_t size();

private:
  struct Entry {
    std::string digest;
    bool done = false;
    std::shared_ptr<const StoredResponse> response;
    std::chrono::steady_clock::time_point expires{};
    std::list<std::string>::iterator order;
  };
  void expire(std::chrono::steady_clock::time_point now);

  const Clock &clock_;
  const std::chrono::seconds ttl_;
  const size_t max_entries_;
  std::mutex mu_;
  std::unordered_map<std::string, Entry> entries_;
  std::list<std::string> order_; // insertion order = expiry order (one TTL for all)
};

} // namespace gantry::control
