#include "telemetry/request_log.h"

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <sys/stat.h>
#include <unistd.h>

namespace gantry::telemetry {
namespace {

constexpr size_t kWakeBytes = 256 << 10;
constexpr auto kInterval = std::chrono::milliseconds(50);

} // namespace

Result<std::unique_ptr<RequestLog>> RequestLog::open(RequestLogOptions options) {
  std::unique_ptr<RequestLog> log(new RequestLog(std::move(options)));
  if (log->options_.path.empty() || log->options_.path == "-") {
    log->fd_ = STDOUT_FILENO;
  } else {
    GANTRY_TRY(log->open_file());
  }
  log->buf_.reserve(kWakeBytes * 2);
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

void RequestLog::write(std::string_view line) {
  bool wake = false;
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (buf_.size() + line.size() + 1 > options_.max_buffered_bytes) {
      ++dropped_;
      return;
    }
    buf_.append(line);
    buf_.push_back('\n');
    ++buffered_lines_;
    ++enqueued_;
    wake = buf_.size() >= kWakeBytes && buf_.size() - line.size() - 1 < kWakeBytes;
  }
  if (wake)
    cv_.notify_one();
}

void RequestLog::flush() {
  std::unique_lock<std::mutex> lk(mu_);
  const uint64_t target = enqueued_;
  flush_requested_ = true;
  cv_.notify_one();
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

void RequestLog::emit(const char *data, size_t n) {
  size_ += n;
  if (fd_ < 0)
    return;
  size_t off = 0;
  while (off < n) {
    ssize_t w = ::write(fd_, data + off, n - off);
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0)
      return;
    off += static_cast<size_t>(w);
  }
}

// Writes whole lines, rotating between lines whenever the file would grow past max_bytes.
void RequestLog::write_out(const std::string &chunk) {
  size_t pos = 0;
  while (pos < chunk.size()) {
    size_t end = chunk.size();
    if (owns_fd_ && size_ + (end - pos) > options_.max_bytes) {
      // The longest run of whole lines that still fits; at least one line when the file is empty.
      const size_t room = options_.max_bytes > size_ ? options_.max_bytes - size_ : 0;
      const size_t limit = pos + room;
      size_t cut = chunk.rfind('\n', limit > 0 ? limit - 1 : 0);
      if (cut == std::string::npos || cut < pos || limit <= pos) {
        if (size_ > 0) {
          rotate();
          continue;
        }
        cut = chunk.find('\n', pos);
      }
      end = cut + 1;
      emit(chunk.data() + pos, end - pos);
      pos = end;
      if (pos < chunk.size())
        rotate();
      continue;
    }
    emit(chunk.data() + pos, end - pos);
    pos = end;
  }
}

void RequestLog::run() {
  std::string chunk;
  chunk.reserve(kWakeBytes * 2);
  std::unique_lock<std::mutex> lk(mu_);
  for (;;) {
    cv_.wait_for(lk, kInterval,
                 [&] { return stop_ || flush_requested_ || buf_.size() >= kWakeBytes; });
    flush_requested_ = false;
    const bool stopping = stop_;
    chunk.clear();
    chunk.swap(buf_);
    const uint64_t n = buffered_lines_;
    buffered_lines_ = 0;
    lk.unlock();
    if (!chunk.empty())
      write_out(chunk);
    lk.lock();
    written_ += n;
    done_cv_.notify_all();
    if (stopping && buf_.empty())
      break;
  }
}

} // namespace gantry::telemetry
