// /admin/v1/...: keys, projects, budgets, usage and breakers over HTTP, behind an admin token
// ($GANTRY_ADMIN_TOKEN or the file named by $GANTRY_ADMIN_TOKEN_FILE). Without a token the admin
// API answers 403 and says how to enable it.
#pragma once

#include <optional>
#include <string>

#include "control/control_plane.h"
#include "core/clock.h"
#include "http/router.h"
#include "observe/error_tracker.h"

namespace gantry::server {

// The one admin-token check, shared by every /admin/* route (this file's and the jobs
// service's): nothing when `req` carries "Authorization: Bearer <token>" (compared in constant
// time); 403 when no token is configured (the admin API is disabled); 401 otherwise.
std::optional<Error> check_admin_token(const http::Request &req, const std::string &token);

void add_admin_routes(http::Router &router, control::ControlPlane &control,
                      const std::string &admin_token, const Clock &clock,
                      const observe::ErrorTracker *errors);

} // namespace gantry::server
