// /admin/v1/...: keys, projects, budgets, usage and breakers over HTTP, behind an admin token
// ($GANTRY_ADMIN_TOKEN or the file named by $GANTRY_ADMIN_TOKEN_FILE). Without a token the admin
// API answers 403 and says how to enable it.
#pragma once

#include <string>

#include "control/control_plane.h"
#include "core/clock.h"
#include "http/router.h"
#include "observe/error_tracker.h"

namespace gantry::server {

void add_admin_routes(http::Router &router, control::ControlPlane &control,
                      const std::string &admin_token, const Clock &clock,
                      const observe::ErrorTracker *errors);

} // namespace gantry::server
