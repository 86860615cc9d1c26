// Idempotency-Key on POST /v1/*: the first request with a key runs; a retry with the same key
// and the same body gets the stored response replayed (no second run, no second bill); the same
// key with a different body is 422; a retry while the first is still running is 409.
//
// Keys are scoped by the caller (its API key id), so two tenants cannot collide or read each
// other's responses. Responses that failed with a 5xx or were cut off are not stored, so the
// retry runs again.
//
// The port stores a response as one byte string (encode_stored_response), so a shared (Redis)
// adapter keeps a blob per key. A response whose encoding is over the per-entry cap
// (`max_entry_bytes`, 1 MiB by default) is not kept: its key remembers only that, and a retry
// gets kNotStored, answered 409 "use a new Idempotency-Key" — never a second run billed under
// the same key, never megabytes per replay (security audit H8: replays of one cached 4 MB stream
// under fresh keys grew memory without bound).
//
// MemoryIdempotencyStore, the embedded adapter, holds entries `ttl` (24 h, as Stripe does) and is
// bounded by bytes (`max_bytes`, 64 MiB by default: key, digest, encoded response and a fixed
// per-entry overhead, counted per key) and by `max_entries`; beyond either the least recently used
// entry goes first. A restart forgets them.
//
// Threading: adapters are thread-safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "core/clock.h"
#include "core/result.h"

namespace gantry::control {

struct StoredResponse {
  int status = 200;
  std::string content_type;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;                // a complete response
  bool sse = false;                // or an event stream:
  std::vector<std::string> events; // the data of each event, in order
  // The recorder stopped copying at its cap: what is here is incomplete and must not be kept.
  bool truncated = false;
};

// A versioned, length-prefixed binary form; decode refuses anything malformed (a shared store
// may hold bytes from another version, or corrupted ones).
std::string encode_stored_response(const StoredResponse &r);
Result<StoredResponse> decode_stored_response(std::string_view bytes);
// The size encode_stored_response(r) will have, without building it.
size_t encoded_size(const StoredResponse &r);

inline constexpr size_t kIdempotencyMaxEntryBytes = size_t{1} << 20;
inline constexpr size_t kIdempotencyMaxBytes = size_t{64} << 20;

struct IdempotencyStats {
  uint64_t entries = 0;
  uint64_t bytes = 0;     // accounted bytes (what max_bytes bounds)
  uint64_t max_bytes = 0; // 0 when the adapter cannot tell (a shared store)
  uint64_t stored = 0;    // responses kept for replay
  uint64_t too_large = 0; // responses over the per-entry cap, not kept
  uint64_t evictions = 0; // entries dropped for room before their ttl
};

class IdempotencyStore {
public:
  enum class Outcome { kFirst, kReplay, kInFlight, kMismatch, kNotStored };
  struct Begin {
    Outcome outcome = Outcome::kFirst;
    std::shared_ptr<const StoredResponse> response; // for kReplay
  };
  virtual ~IdempotencyStore() = default;

  // `body_digest` identifies the request body (a hash). kFirst claims the key for this request.
  virtual Begin begin(const std::string &key, const std::string &body_digest) = 0;
  // The first request finished: keep its response for replays (or, when it is truncated or over
  // the per-entry cap, remember only that it was not kept).
  virtual void complete(const std::string &key, const StoredResponse &response) = 0;
  // The first request failed in a way a retry should redo: forget the key.
  virtual void abandon(const std::string &key) = 0;
  virtual IdempotencyStats stats() = 0;
  // Recorders stop copying a response beyond this many encoded bytes.
  virtual size_t max_entry_bytes() const = 0;
};

struct IdempotencyLimits {
  std::chrono::seconds ttl = std::chrono::hours(24);
  size_t max_bytes = kIdempotencyMaxBytes;
  size_t max_entry_bytes = kIdempotencyMaxEntryBytes;
  size_t max_entries = 100'000;
};

class MemoryIdempotencyStore final : public IdempotencyStore {
public:
  MemoryIdempotencyStore(const Clock &clock, IdempotencyLimits limits = {});

  Begin begin(const std::string &key, const std::string &body_digest) override;
  void complete(const std::string &key, const StoredResponse &response) override;
  void abandon(const std::string &key) override;
  IdempotencyStats stats() override;
  size_t max_entry_bytes() const override { return limits_.max_entry_bytes; }
  size_t size();

  // What one entry is charged beyond its key, digest and response bytes (map and list nodes).
  static constexpr size_t kEntryOverhead = 160;

private:
  using TimePoint = std::chrono::steady_clock::time_point;
  struct Entry {
    std::string digest;
    enum class State { kInFlight, kDone, kNotStored } state = State::kInFlight;
    std::string bytes; // the encoded response when kDone
    size_t charged = 0;
    TimePoint expires{};
    std::list<std::string>::iterator lru;
  };
  using Map = std::unordered_map<std::string, Entry>;
  void erase(Map::iterator it);
  void expire(TimePoint now);
  void make_room();
  void charge(Entry &e, size_t charged);

  const Clock &clock_;
  const IdempotencyLimits limits_;
  std::mutex mu_;
  Map entries_;
  std::list<std::string> lru_;                      // front = least recently used
  std::set<std::pair<TimePoint, std::string>> ttl_; // expiry order
  uint64_t bytes_ = 0, stored_ = 0, too_large_ = 0, evictions_ = 0;
};

} // namespace gantry::control
