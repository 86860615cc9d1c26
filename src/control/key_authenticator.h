// Turns an Authorization header into the caller's identity without touching the database on the
// hot path: verified key records are cached in memory, and a watcher (refresh(), called every
// 250 ms by the ControlPlane) drops the cache whenever KeyStore::keys_generation() moves, which is
// how a `gantry keys revoke` in another process takes effect within a second.
#pragma once

#include <atomic>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "control/key_store.h"
#include "core/clock.h"

namespace gantry::control {

enum class AuthMode {
  kAuto,     // open only while no key has ever existed; closed for good once one has (audit H3)
  kRequired, // always required (no key exists yet = nobody gets in)
};

struct Principal {
  std::string key_id;
  std::string project;
  std::vector<std::string> models; // empty = all
  Limits limits;
};

class KeyAuthenticator {
public:
  using UsedCallback = std::function<void(const std::string &key_id, int64_t unix_seconds)>;

  KeyAuthenticator(KeyStore &store, std::string pepper, const Clock &clock, AuthMode mode,
                   UsedCallback on_used = nullptr);

  // nullopt when auth is not required and no key was sent. kUnauthorized for a missing, unknown,
  // wrong, revoked or expired key; the message never repeats the key. kIo when the store fails.
  Result<std::optional<Principal>> authenticate(std::optional<std::string_view> authorization);
  bool required() const;

  // Re-reads the key generation and the count of active keys; drops the cache on change.
  Status refresh();
  void invalidate(); // after a change made through this process

  const std::string &pepper() const { return pepper_; }

private:
  struct Cached {
    std::optional<ApiKey> key; // nullopt = no such id (negative cache, bounded)
  };
  Result<std::optional<ApiKey>> lookup(const std::string &id);

  KeyStore &store_;
  const std::string pepper_;
  const Clock &clock_;
  const AuthMode mode_;
  UsedCallback on_used_;
  std::atomic<int64_t> keys_ever_{0};
  std::atomic<int64_t> generation_{-1};
  std::mutex mu_;
  std::unordered_map<std::string, Cached> cache_;
};

} // namespace gantry::control
