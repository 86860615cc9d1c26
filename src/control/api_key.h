// API key strings and their hashes: "gsk_" + a 12-character public id + "_" + a 43-character
// secret (base62, about 256 bits). Only HMAC-SHA256(pepper, secret) is stored, so a copy of
// the database alone cannot be turned into working keys.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "core/result.h"

namespace gantry::control {

struct KeyParts {
  std::string id;
  std::string secret;
};

constexpr std::string_view kKeyPrefix = "gsk_";
constexpr size_t kKeyIdLength = 12;
constexpr size_t kKeySecretLength = 43;

// A fresh id and secret from the OS's CSPRNG.
KeyParts generate_key();
std::string format_key(const KeyParts &parts);
// nullopt for anything that is not exactly the shape above (no partial matches).
std::optional<KeyParts> parse_key(std::string_view key);

// Hex HMAC-SHA256 of the secret keyed by the pepper.
std::string hash_secret(std::string_view pepper, std::string_view secret);
// Constant-time comparison of two hex hashes (equal length required for a match).
bool hashes_equal(std::string_view a, std::string_view b);

// The pepper: $GANTRY_KEY_PEPPER, else the file named by $GANTRY_KEY_PEPPER_FILE, else
// <data_dir>/pepper (created with mode 0600 holding 32 random bytes when absent). Never read from
// the configuration file, which tends to be shared and committed.
Result<std::string> load_pepper(const std::string &data_dir);

// n random base62 characters.
std::string random_base62(size_t n);

} // namespace gantry::control
