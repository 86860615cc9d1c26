// The TOML side of remote models (only config_file.cpp and remote_models_config.cpp include it, so
// toml++ stays out of config.h's users).
#pragma once

#include <toml++/toml.h>

#include "server/remote_models_config.h"

namespace gantry::server {

// Reads one `[[models]]` table that has `backends` (`prefix`, "models[i].", names it in errors).
Result<RemoteModelSpec> read_remote_model_table(const toml::table &t, const std::string &prefix);

} // namespace gantry::server
