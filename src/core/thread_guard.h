// Background threads and the exceptions that escape them (issue 15, item 4).
//
// An exception that leaves a std::thread's function calls std::terminate: the process ends with
// nothing in the error tracker and nothing in the log but "terminate called...". Every long-lived
// background thread (engine, job runner, ledger writer, webhook dispatcher, settlement, key and
// alert loops) therefore runs its body through guarded_loop(): an escaped exception is reported
// to the process's failure reporter and the body is entered again after a pause, unless the
// thread is stopping. The server installs a reporter that captures into its ErrorTracker; before
// that (and in tools) failures go to stderr.
//
// Threading: ScopedFailureReporter and report_failure() may be called from any thread; a report
// runs the reporter under a mutex, so the reporter must be quick and must not report itself.
#pragma once

#include <chrono>
#include <cstdint>
#include <exception>
#include <functional>
#include <stdexcept>
#include <string_view>
#include <thread>

namespace gantry {

using FailureReporter = std::function<void(std::string_view site, const std::exception &error)>;

// Installs a reporter for its lifetime. Scopes may nest and end in any order; the newest one
// still alive receives the reports, and with none alive they go to stderr. The reporter must
// stay valid until the scope ends (a server holds the scope next to its error tracker).
class ScopedFailureReporter {
public:
  explicit ScopedFailureReporter(FailureReporter reporter);
  ~ScopedFailureReporter();
  ScopedFailureReporter(const ScopedFailureReporter &) = delete;
  ScopedFailureReporter &operator=(const ScopedFailureReporter &) = delete;

private:
  std::uint64_t id_;
};

// Tells the reporter (or stderr) that `error` escaped the work of `site` ("engine: tiny",
// "jobs.worker", "ledger.writer"). Never throws.
void report_failure(std::string_view site, const std::exception &error) noexcept;
// For an exception that is not a std::exception (caught by `...`).
void report_unknown_failure(std::string_view site) noexcept;

// Runs one unit of work (a queued task, a callback) and reports an exception instead of letting
// it end the thread. Returns false when it threw.
template <class Work> bool run_reporting(std::string_view site, Work &&work) noexcept {
  try {
    work();
    return true;
  } catch (const std::exception &e) {
    report_failure(site, e);
  } catch (...) {
    report_unknown_failure(site);
  }
  return false;
}

// Calls body() until it returns normally. When it throws, the exception is reported and, unless
// stopping() says the thread should end, body() is called again after `pause` (waited in short
// slices so a stop is seen quickly). body() must leave its object in a state from which running
// it again is safe: the loops this wraps keep their state in members guarded by their own locks.
template <class Body, class Stopping>
void guarded_loop(std::string_view site, Body &&body, Stopping &&stopping,
                  std::chrono::milliseconds pause = std::chrono::milliseconds(200)) {
  for (;;) {
    try {
      body();
      return;
    } catch (const std::exception &e) {
      report_failure(site, e);
    } catch (...) {
      report_unknown_failure(site);
    }
    // Sliced so a stop requested during the pause ends the thread within ~10 ms; sleeping does
    // not read the time, so this stays off the Clock port.
    for (auto left = pause; left.count() > 0 && !stopping();
         left -= std::chrono::milliseconds(10)) {
      std::this_thread::sleep_for(std::min(left, std::chrono::milliseconds(10)));
    }
    if (stopping())
      return;
  }
}

} // namespace gantry
