// What authenticating an API call decided. Replaces std::optional<std::optional<Principal>>,
// whose two layers ("refused" vs "no key needed") read the same at every call site.
#pragma once

#include <optional>
#include <utility>

#include "control/key_authenticator.h"

namespace gantry::server {

struct AuthOutcome {
  // False: the call was refused and the 401/403 has already been answered; stop.
  bool allowed = false;
  // The key's principal; empty when the server needs no key (an open server).
  std::optional<control::Principal> principal;

  static AuthOutcome refused() { return {}; }
  static AuthOutcome allow(std::optional<control::Principal> p) { return {true, std::move(p)}; }

  // Call sites read `if (!auth) return;` and `*auth` for the (optional) principal.
  explicit operator bool() const { return allowed; }
  const std::optional<control::Principal> &operator*() const & { return principal; }
  std::optional<control::Principal> &&operator*() && { return std::move(principal); }
  std::optional<control::Principal> &operator*() & { return principal; }
  const std::optional<control::Principal> *operator->() const { return &principal; }
};

} // namespace gantry::server
