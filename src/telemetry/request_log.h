// One JSON line per inference call, written off the request path: callers hand a finished line
// to write(), which appends it to an in-memory buffer under a mutex (a memcpy; no allocation per
// line, no wake-up per line). A background thread writes the buffer every 50 ms, or sooner when
// 256 KiB are waiting, to stdout or to a file that rotates by size (gantry.log → gantry.log.1 →
// ... → gantry.log.<keep>). Lines are never split across files or interleaved, and when the
// buffer is full (the disk cannot keep up) lines are dropped and counted rather than blocking a
// request.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>

#include "core/result.h"

namespace gantry::telemetry {

struct RequestLogOptions {
  std::string path;                  // "" or "-" = stdout
  uint64_t max_bytes = 100ull << 20; // rotate beyond this (files only)
  int keep = 5;                      // rotated files kept
  size_t max_buffered_bytes = 64u << 20;
};

class RequestLog {
public:
  static Result<std::unique_ptr<RequestLog>> open(RequestLogOptions options);
  ~RequestLog(); // writes what is buffered, then stops

  void write(std::string_view line); // one line, without its newline
  void flush();                      // blocks until everything written before the call is out
  uint64_t written() const;
  uint64_t dropped() const;

private:
  explicit RequestLog(RequestLogOptions options) : options_(std::move(options)) {}
  Status open_file();
  void rotate();
  void emit(const char *data, size_t n);
  void write_out(const std::string &chunk);
  void run();

  RequestLogOptions options_;
  int fd_ = -1;
  bool owns_fd_ = false;
  uint64_t size_ = 0;

  mutable std::mutex mu_;
  std::condition_variable cv_, done_cv_;
  std::string buf_;
  uint64_t buffered_lines_ = 0;
  uint64_t enqueued_ = 0, written_ = 0, dropped_ = 0;
  bool flush_requested_ = false;
  bool stop_ = false;
  std::thread thread_;
};

} // namespace gantry::telemetry
