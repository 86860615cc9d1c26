// Optional scheduled online backups: every `interval`, the given copy function (the SQLite
// adapter's backup_to; a backend without file copies has no scheduler) writes
// <dir>/gantry-YYYYmmddTHHMMSSZ.db (consistent while the server writes) and all but the newest
// `keep` such files are deleted. Failures are logged and retried at the next interval.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "core/clock.h"
#include "core/result.h"

namespace gantry::control {

struct BackupOptions {
  std::chrono::seconds interval{0}; // 0 = off
  int keep = 7;
  std::string dir;
};

class BackupScheduler {
public:
  // Writes a consistent copy of the live database at the path, or fails.
  using CopyTo = std::function<Status(const std::string &path)>;

  BackupScheduler(CopyTo copy_to, BackupOptions options, const Clock &clock,
                  std::function<void(const std::string &)> log);
  ~BackupScheduler();

  // One backup now plus pruning; returns the file written.
  Result<std::string> run_once();
  std::vector<std::string> list() const; // oldest first

private:
  void loop();

  CopyTo copy_to_;
  BackupOptions options_;
  const Clock &clock_;
  std::function<void(const std::string &)> log_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};

} // namespace gantry::control
