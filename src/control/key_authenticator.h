// Turns an Authorization header into the caller's identity without touching the database on the
// hot path: verified key records are cached in memory, and a watcher (refresh(), called every
// 250 ms by the ControlPlane) drops the cache whenever KeyStore::keys_generation() moves, which is
// how a `gantry keys revoke` in another process takes effect within a second.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
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
  kOff,      // never checked, every call anonymous: local development only (loud warning)
};

// "auto" | "required" | "off"; nullopt for anything else.
std::optional<AuthMode> auth_mode_from_name(std::string_view name);

// The start-up warning for a server whose /v1 API answers without a key (audit H3): `auth =
// "off"`, or "auto" before any key exists. nullopt when keys are required. `host` is the listen
// address; a non-loopback one makes the warning say that the network can reach it.
std::optional<std::string> open_api_warning(AuthMode mode, bool keys_required,
                                            std::string_view host);

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
    // Shared, immutable: a request reads the record without copying its strings (a key is
    // checked on every call). Null = no such id (negative cache, bounded).
    std::shared_ptr<const ApiKey> key;
  };
  Result<std::shared_ptr<const ApiKey>> lookup(const std::string &id);

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
