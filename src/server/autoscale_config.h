// `[autoscale.<model>]`: one scaling policy per model (issue 14, docs/AUTOSCALING.md), read
// through toml_keys.h like every other table. Only the config readers include this header, so
// toml++ stays out of config.h's users.
#pragma once

#include <toml++/toml.h>

#include <string>

#include "server/config.h"

namespace gantry::server {

// Reads the `autoscale` table: each member is a model's table of knobs. Unknown knobs are errors
// naming them ("autoscale.llama.max_replica").
Status read_autoscale(const toml::node &n, ServerConfig &c, const std::string &key);

// Each policy's knobs (autoscale::validate) and that it names a configured model.
Status validate_autoscale(const ServerConfig &c);

} // namespace gantry::server
