// The embedded ReadinessLog (dashboard/status_history.h): table readiness_samples of gantry.db,
// over its own connection.
//
// Threading: every method may be called from any thread (one mutex guards the connection).
#pragma once

#include <memory>
#include <mutex>
#include <string>

#include "dashboard/status_history.h"

namespace gantry::control {
class Db;
}

namespace gantry::dashboard {

class SqliteReadinessLog final : public ReadinessLog {
public:
  // `db_path` must already be migrated (SqliteStore::open; open_stores() does both).
  static Result<std::unique_ptr<SqliteReadinessLog>> open(const std::string &db_path);
  ~SqliteReadinessLog() override;

  Status append(const std::vector<ReadinessSample> &samples) override;
  Result<std::vector<UptimeCount>> counts(int64_t from_ms) override;
  Result<std::vector<ReadinessSample>> down_since(int64_t from_ms, size_t limit) override;
  Status purge(int64_t before_ms) override;

private:
  explicit SqliteReadinessLog(std::unique_ptr<control::Db> db);
  std::mutex mu_;
  std::unique_ptr<control::Db> db_;
};

} // namespace gantry::dashboard
