// Secrets the server must read back (the per-project webhook signing secrets) are stored sealed,
// not in plaintext (audit M5): AES-256-GCM under a key derived from the key pepper
// (HMAC-SHA256(pepper, "gantry secret box v1")), which lives outside the database (a 0600 file or
// GANTRY_KEY_PEPPER), so a copy of the database or of a backup does not give away the secrets.
// Every node sharing a database shares the pepper already (keys are HMACs under it).
//
// Stored form: "gs1:" + hex(12-byte random nonce | ciphertext | 16-byte tag). A value without
// the prefix is a secret written before sealing existed and is read as it is; the next rotation
// replaces it with a sealed one.
//
// Threading: immutable after construction; seal() and open() may run on any thread.
#pragma once

#include <array>
#include <string>
#include <string_view>

#include "core/result.h"

namespace gantry::control {

class SecretBox {
public:
  explicit SecretBox(std::string_view pepper);

  // Throws std::runtime_error when the CSPRNG or the cipher fails (nothing sane can follow).
  std::string seal(std::string_view plain) const;
  // kCorrupt when a sealed value is malformed, was altered, or was sealed under another pepper.
  Result<std::string> open(std::string_view stored) const;
  static bool is_sealed(std::string_view stored);

private:
  std::array<unsigned char, 32> key_{};
};

} // namespace gantry::control
