// The SQLite schema as data, and how list-valued fields are stored in a column. Kept apart from
// the adapters (store/sqlite/) so the schema reads on its own.
#pragma once

#include <span>
#include <string>
#include <vector>

#include "control/store.h"
#include "core/result.h"

namespace gantry::control {

// Migration i takes `PRAGMA user_version` i to i + 1; their count is the current version.
std::span<const char *const> sqlite_migrations();

// api_keys.models: a JSON array of names ("[]" = all models).
std::string models_json(const std::vector<std::string> &models);
// The names as SQLite's json_each yields them, joined by U+001F (the api_keys query in
// sqlite_key_store.cpp).
std::vector<std::string> split_models(const std::string &joined);

} // namespace gantry::control
