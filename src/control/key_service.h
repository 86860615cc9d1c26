// The key operations shared by `gantry keys ...` and the admin HTTP API, so both behave the same:
// create (the secret is returned once and never stored), rotate with a grace period, revoke.
#pragma once

#include <boost/json/object.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "control/key_store.h"

namespace gantry::control {

struct CreateKeyOptions {
  std::string project;
  std::string name;
  std::vector<std::string> models;
  Limits limits;
  int64_t expires_in_s = 0; // 0 = never
};

struct IssuedKey {
  ApiKey record;
  std::string key; // "gsk_..." — shown once
};

// Longer expiries and grace periods are cut to this (100 years), so `now + d` cannot overflow
// whatever number the admin API is sent (audit I).
inline constexpr int64_t kMaxDurationS = int64_t{100} * 365 * 86400;

// "30d", "24h", "90m", "45s", plain seconds; kInvalidArgument otherwise.
Result<int64_t> parse_duration_s(std::string_view text);

Result<IssuedKey> create_key(KeyStore &store, const std::string &pepper,
                             const CreateKeyOptions &options, int64_t now);
// The new secret works at once; the old one keeps working for `grace_s` seconds.
Result<IssuedKey> rotate_key(KeyStore &store, const std::string &pepper, const std::string &id,
                             int64_t grace_s, int64_t now);
Result<ApiKey> revoke_key(KeyStore &store, const std::string &id, int64_t now);

// The public view of a key (no hash, no secret).
boost::json::object key_json(const ApiKey &key, int64_t now);

} // namespace gantry::control
