// /admin/v1/...: keys, projects, budgets, usage and breakers over HTTP, behind an admin token
// ($GANTRY_ADMIN_TOKEN or the file named by $GANTRY_ADMIN_TOKEN_FILE). Without a token the admin
// API answers 403 and says how to enable it.
//
// The token must be at least 32 characters (checked at start-up), and failed attempts are
// throttled per peer address and logged (audit M1).
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

#include "control/control_plane.h"
#include "core/clock.h"
#include "http/router.h"
#include "observe/error_tracker.h"

namespace gantry::server {

// The one admin-token check, shared by every /admin/* route (this file's and the jobs
// service's): nothing when `req` carries "Authorization: Bearer <token>" (compared in constant
// time); 403 when no token is configured (the admin API is disabled); 401 otherwise.
std::optional<Error> check_admin_token(const http::Request &req, const std::string &token);

// The admin token and the throttle on failed attempts: a peer address (the port ignored) with
// kMaxFailures failures within kWindow gets 429 with Retry-After, the right token included,
// until the window ends, so the token cannot be guessed online. Each failure is logged, up to the
// lock-out (so a flood cannot flood the log). The table of peers is bounded (kMaxPeers; the
// oldest window is dropped first).
//
// Threading: thread-safe (I/O threads).
class AdminAuth {
public:
  static constexpr size_t kMinTokenLength = 32;
  static constexpr int kMaxFailures = 10;
  static constexpr std::chrono::seconds kWindow{60};
  static constexpr size_t kMaxPeers = 4096;
  using Log = std::function<void(const std::string &line)>;

  // An empty token disables the admin API (403). A shorter one than kMinTokenLength is a
  // start-up error naming GANTRY_ADMIN_TOKEN.
  static Result<std::unique_ptr<AdminAuth>> create(std::string token, const Clock &clock, Log log);

  // Nothing when `req` carries the token; 403 when the admin API is disabled; 429 while the
  // peer is locked out; 401 otherwise.
  std::optional<Error> check(const http::Request &req);
  size_t tracked_peers() const;

private:
  AdminAuth(std::string token, const Clock &clock, Log log)
      : token_(std::move(token)), clock_(clock), log_(std::move(log)) {}
  struct Failures {
    std::chrono::steady_clock::time_point window_start;
    int count = 0;
  };

  const std::string token_;
  const Clock &clock_;
  const Log log_;
  mutable std::mutex mu_;
  std::unordered_map<std::string, Failures> peers_;
};

void add_admin_routes(http::Router &router, control::ControlPlane &control, AdminAuth &auth,
                      const Clock &clock, const observe::ErrorTracker *errors);

} // namespace gantry::server
