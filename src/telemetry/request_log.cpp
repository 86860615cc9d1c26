#include "telemetry/request_log.h"

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <sys/stat.h>
#include <unistd.h>

namespace gantry::telemetry {

Result<std::unique_ptr<RequestLog>> RequestLog::open(RequestLogOptions options) {
  std::unique_ptr<RequestLog> log(new RequestLog(std::move(options)));
  if (log->options_.path.empty() || log->options_.path == "-") {
    log->fd_ = STDOUT_FILENO;
  } else {
    GANTRY_TRY(log->open_file());
  }
  log->thread_ = std::thread([p = log.get()] { p->run(); });
  return log;
}

Status RequestLog::open_file() {
  std::error_code ec;
  auto parent = std::filesystem::path(options_.path).parent_path();
  if (!parent.empty())
    std::filesystem::create_directories(parent, ec);
  fd_ = ::open(options_.path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
  if (fd_ < 0) {
    return Err(
        Error::io("cannot open the request log " + options_.path + ": " + std::strerror(errno)));
  }
  owns_fd_ = true;
  struct stat st {};
  size_ = ::fstat(fd_, &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;
  return Ok();
}

RequestLog::~RequestLog() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable())
    thread_.join();
  if (owns_fd_ && fd_ >= 0)
    ::close(fd_);
}

void RequestLog::write(std::string line) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (queue_.size() >= options_.max_queued) {
      ++dropped_;
      return;
    }
    line.push_back('\n');
    queue_.push_back(std::move(line));
    ++enqueued_;
  }
  cv_.notify_one();
}

void RequestLog::flush() {
  std::unique_lock<std::mutex> lk(mu_);
  const uint64_t target = enqueued_;
  done_cv_.wait(lk, [&] { return written_ + dropped_ >= target || stop_; });
}

uint64_t RequestLog::written() const {
  std::lock_guard<std::mutex> lk(mu_);
  return written_;
}

uint64_t RequestLog::dropped() const {
  std::lock_guard<std::mutex> lk(mu_);
  return dropped_;
}

void RequestLog::rotate() {
  if (!owns_fd_)
    return;
  ::close(fd_);
  namespace fs = std::filesystem;
  std::error_code ec;
  const std::string &p = options_.path;
  fs::remove(p + "." + std::to_string(options_.keep), ec);
  for (int i = options_.keep - 1; i >= 1; --i) {
    fs::rename(p + "." + std::to_string(i), p + "." + std::to_string(i + 1), ec);
  }
  if (options_.keep >= 1) {
    fs::rename(p, p + ".1", ec);
  } else {
    fs::remove(p, ec);
  }
  if (!open_file())
    fd_ = -1;
  size_ = 0;
}

void RequestLog::run() {
  std::unique_lock<std::mutex> lk(mu_);
  for (;;) {
    cv_.wait(lk, [&] { return stop_ || !queue_.empty(); });
    if (queue_.empty() && stop_)
      break;
    std::deque<std::string> batch;
    batch.swap(queue_);
    lk.unlock();
    std::string buf;
    uint64_t n = 0;
    auto emit = [&] {
      if (buf.empty() || fd_ < 0)
        return;
      size_t off = 0;
      while (off < buf.size()) {
        ssize_t w = ::write(fd_, buf.data() + off, buf.size() - off);
        if (w < 0 && errno == EINTR)
          continue;
        if (w <= 0)
          break;
        off += static_cast<size_t>(w);
      }
      size_ += buf.size();
      buf.clear();
    };
    for (auto &line : batch) {
      // Rotate between lines, never inside one.
      if (owns_fd_ && size_ + buf.size() + line.size() > options_.max_bytes &&
          size_ + buf.size() > 0) {
        emit();
        rotate();
      }
      buf += line;
      ++n;
    }
    emit();
    lk.lock();
    written_ += n;
    done_cv_.notify_all();
  }
  done_cv_.notify_all();
}

} // namespace gantry::telemetry
