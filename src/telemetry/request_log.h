// One JSON line per inference call, written off the request path: callers hand a finished line
// to write() (a push under a mutex); a background thread appends batches to stdout or to a file
// that rotates by size (gantry.log → gantry.log.1 → ... → gantry.log.<keep>). Lines are never
// split or interleaved, and a full queue drops lines (counted) rather than blocking a request.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <thread>

#include "core/result.h"

namespace gantry::telemetry {

struct RequestLogOptions {
  std::string path;                  // "" or "-" = stdout
  uint64_t max_bytes = 100ull << 20; // rotate beyond this (files only)
  int keep = 5;                      // rotated files kept
  size_t max_queued = 100'000;
};

class RequestLog {
public:
  static Result<std::unique_ptr<RequestLog>> open(RequestLogOptions options);
  ~RequestLog(); // writes what is queued, then stops

  void write(std::string line);
  void flush(); // blocks until everything queued so far is written
  uint64_t written() const;
  uint64_t dropped() const;

private:
  explicit RequestLog(RequestLogOptions options) : options_(std::move(options)) {}
  Status open_file();
  void rotate();
  void run();

  RequestLogOptions options_;
  int fd_ = -1;
  bool owns_fd_ = false;
  uint64_t size_ = 0;

  mutable std::mutex mu_;
  std::condition_variable cv_, done_cv_;
  std::deque<std::string> queue_;
  uint64_t enqueued_ = 0, written_ = 0, dropped_ = 0;
  bool stop_ = false;
  std::thread thread_;
};

} // namespace gantry::telemetry
