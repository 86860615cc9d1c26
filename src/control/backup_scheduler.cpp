#include "control/backup_scheduler.h"

#include "core/time_format.h"

#include <boost/json.hpp>

#include <algorithm>
#include <ctime>
#include <filesystem>

namespace gantry::control {

namespace fs = std::filesystem;

BackupScheduler::BackupScheduler(CopyTo copy_to, BackupOptions options, const Clock &clock,
                                 std::function<void(const std::string &)> log)
    : copy_to_(std::move(copy_to)), options_(std::move(options)), clock_(clock),
      log_(std::move(log)) {
  if (options_.interval.count() > 0)
    thread_ = std::thread([this] { loop(); });
}

BackupScheduler::~BackupScheduler() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable())
    thread_.join();
}

std::vector<std::string> BackupScheduler::list() const {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto &e : fs::directory_iterator(options_.dir, ec)) {
    const std::string name = e.path().filename().string();
    if (name.starts_with("gantry-") && name.ends_with(".db"))
      out.push_back(e.path().string());
  }
  // The timestamp in the name sorts chronologically.
  std::sort(out.begin(), out.end());
  return out;
}

Result<std::string> BackupScheduler::run_once() {
  std::error_code ec;
  // Backups are full copies of the database: owner-only, as the data directory (audit M5).
  // The backup files themselves are created 0600 by the adapter.
  if (fs::create_directories(options_.dir, ec))
    fs::permissions(options_.dir, fs::perms::owner_all, fs::perm_options::replace, ec);
  if (ec)
    return Err(Error::io("cannot create " + options_.dir + ": " + ec.message()));
  const std::string name = format_utc(clock_.unix_seconds(), "gantry-%Y%m%dT%H%M%SZ.db");
  const std::string path = (fs::path(options_.dir) / name).string();
  GANTRY_TRY(copy_to_(path));
  auto files = list();
  const size_t keep = static_cast<size_t>(std::max(options_.keep, 1));
  for (size_t i = 0; i + keep < files.size(); ++i)
    fs::remove(files[i], ec);
  return path;
}

void BackupScheduler::loop() {
  std::unique_lock<std::mutex> lk(mu_);
  while (!cv_.wait_for(lk, options_.interval, [&] { return stop_; })) {
    lk.unlock();
    auto r = run_once();
    if (log_) {
      log_(boost::json::serialize(
          r ? boost::json::object{{"event", "backup"}, {"file", *r}}
            : boost::json::object{{"event", "backup_failed"}, {"error", r.error().message}}));
    }
    lk.lock();
  }
}

} // namespace gantry::control
