// The KeyStore port: projects and API keys, the aggregate that authentication reads. The embedded
// adapter is SQLite (store/sqlite/sqlite_store.h); PostgreSQL is next. What every adapter must do
// is tests/contract/key_store_contract_test.cpp.
//
// Threading: every method is thread-safe and may block (see store.h).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "control/store.h"
#include "core/result.h"

namespace gantry::control {

class KeyStore {
public:
  virtual ~KeyStore() = default;

  virtual Status put_project(const Project &project) = 0; // insert or update
  virtual Result<std::optional<Project>> get_project(std::string_view id) = 0;
  virtual Result<std::vector<Project>> list_projects() = 0;

  virtual Status insert_key(const ApiKey &key) = 0; // kInvalidArgument if the id exists
  // kNotFound if absent. last_used_at never moves backwards: the larger of the stored and the
  // given value is kept.
  virtual Status update_key(const ApiKey &key) = 0;
  virtual Result<std::optional<ApiKey>> get_key(std::string_view id) = 0;
  virtual Result<std::vector<ApiKey>> list_keys(std::string_view project = {}) = 0; // "" = all
  // Keys neither revoked nor expired at `now` (unix seconds).
  virtual Result<int64_t> count_active_keys(int64_t now) = 0;
  // Every key row ever inserted, revoked and expired included (keys are never deleted). In
  // `auth = "auto"` a key is required once this is > 0, so revoking the last key never reopens
  // the API (audit H3).
  virtual Result<int64_t> count_keys_ever() = 0;
  // Batched last-used updates: (key id, unix seconds); a time never moves backwards.
  virtual Status touch_keys(const std::vector<std::pair<std::string, int64_t>> &last_used) = 0;
  // A number that changes whenever any process inserts or updates a key or puts a project, so a
  // server can drop its key cache within a poll interval when `gantry keys revoke` runs beside
  // it.
  virtual Result<int64_t> keys_generation() = 0;

  // A read and a write round trip to the backend, for /readyz.
  virtual Status check() = 0;
};

} // namespace gantry::control
