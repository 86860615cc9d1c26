// Optional scheduled online backups: every `interval`, Store::backup_to writes
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

#include "control/store.h"
#include "core/clock.h"

namespace gantry::control {

struct BackupOptions {
  std::chrono::seconds interval{0}; // 0 = off
  int keep = 7;
  std::string dir;
};

class BackupScheduler {
public:
  BackupScheduler(Store &store, BackupOptions options, const Clock &clock,
                  std::function<void(const std::string &)> log);
  ~BackupScheduler();

  // One backup now plus pruning; returns the file written.
  Result<std::string> run_once();
  std::vector<std::string> list() const; // oldest first

private:
  void loop();

  Store &store_;
  BackupOptions options_;
  const Clock &clock_;
  std::function<void(const std::string &)> log_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};

} // namespace gantry::control
