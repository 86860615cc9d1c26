#include "control/ledger_writer.h"

#include <cstdio>
#include <iterator>
#include <stdexcept>
#include <utility>
#include <vector>

#include "core/thread_guard.h"

namespace gantry::control {

LedgerWriter::LedgerWriter(UsageLedger &ledger, KeyStore &keys, LedgerWriterOptions options)
    : ledger_(ledger), keys_(keys), options_(std::move(options)) {
  if (options_.max_batch == 0 || options_.max_pending < options_.max_batch) {
    throw std::invalid_argument("LedgerWriter: need 0 < max_batch <= max_pending");
  }
  thread_ = std::thread([this] {
    guarded_loop(
        "ledger.writer", [this] { run(); },
        [this] {
          std::lock_guard lock(mu_);
          return stop_;
        });
  });
}

LedgerWriter::~LedgerWriter() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  wake_.notify_one();
  thread_.join();
  if (!flush()) {
    log("usage ledger: " + std::to_string(pending()) +
        " rows could not be written before shutdown and are lost");
  }
}

void LedgerWriter::record(UsageRecord row) {
  bool wake = false;
  {
    std::lock_guard lock(mu_);
    queue_.push_back(std::move(row));
    drop_overflow();
    wake = queue_.size() % options_.max_batch == 0;
  }
  if (wake)
    wake_.notify_one();
}

void LedgerWriter::touched(const std::string &key_id, int64_t unix_seconds) {
  std::lock_guard lock(mu_);
  auto [it, inserted] = touches_.try_emplace(key_id, unix_seconds);
  if (!inserted && it->second < unix_seconds)
    it->second = unix_seconds;
}

Status LedgerWriter::flush() { return write(Mode::kEverything); }

size_t LedgerWriter::pending() const {
  std::lock_guard lock(mu_);
  return queue_.size() + in_flight_;
}

void LedgerWriter::drop_overflow() {
  while (queue_.size() + in_flight_ > options_.max_pending && !queue_.empty()) {
    queue_.pop_front();
    dropped_.fetch_add(1);
  }
}

void LedgerWriter::log(const std::string &line) const {
  if (options_.log) {
    options_.log(line);
  } else {
    std::fprintf(stderr, "%s\n", line.c_str());
  }
}

namespace {

// A store adapter that throws (a bug, or bad_alloc) must cost a retry, not the rows: the
// exception is reported and becomes a failed write, so the batch goes back to the queue.
template <class Call> Status guarded_call(const char *what, Call &&call) {
  try {
    return call();
  } catch (const std::exception &e) {
    report_failure("ledger.writer", e);
    return Err(ErrorCode::kInternal, std::string(what) + " threw: " + e.what());
  } catch (...) {
    report_unknown_failure("ledger.writer");
    return Err(ErrorCode::kInternal, std::string(what) + " threw");
  }
}

} // namespace

Status LedgerWriter::write(Mode mode) {
  std::lock_guard writing(write_mu_);
  Status result = Ok();

  std::unordered_map<std::string, int64_t> touches;
  {
    std::lock_guard lock(mu_);
    touches.swap(touches_);
  }
  if (!touches.empty()) {
    std::vector<std::pair<std::string, int64_t>> list(touches.begin(), touches.end());
    if (auto st = guarded_call("touch_keys", [&] { return keys_.touch_keys(list); }); !st) {
      failures_.fetch_add(1);
      std::lock_guard lock(mu_);
      for (auto &[id, at] : touches) {
        auto [it, inserted] = touches_.try_emplace(id, at);
        if (!inserted && it->second < at)
          it->second = at;
      }
      result = std::move(st);
    }
  }

  for (;;) {
    std::vector<UsageRecord> batch;
    {
      std::lock_guard lock(mu_);
      const size_t waiting = queue_.size();
      if (waiting == 0 || (mode == Mode::kFullBatches && waiting < options_.max_batch))
        break;
      const size_t n = std::min(waiting, options_.max_batch);
      batch.assign(std::make_move_iterator(queue_.begin()),
                   std::make_move_iterator(queue_.begin() + static_cast<ptrdiff_t>(n)));
      queue_.erase(queue_.begin(), queue_.begin() + static_cast<ptrdiff_t>(n));
      in_flight_ = n;
    }
    Status st = guarded_call("append_usage", [&] { return ledger_.append_usage(batch); });
    std::lock_guard lock(mu_);
    in_flight_ = 0;
    if (!st) {
      failures_.fetch_add(1);
      // Back to the front, ahead of rows recorded meanwhile, so the oldest are written first.
      queue_.insert(queue_.begin(), std::make_move_iterator(batch.begin()),
                    std::make_move_iterator(batch.end()));
      drop_overflow();
      result = std::move(st);
      break;
    }
    rows_written_.fetch_add(batch.size());
    batches_.fetch_add(1);
  }

  if (!result && !failing_) {
    failing_ = true;
    log("usage ledger: write failed, " + std::to_string(pending()) +
        " rows kept for retry: " + result.error().message);
  } else if (result && failing_) {
    failing_ = false;
    log("usage ledger: writes recovered (" + std::to_string(dropped()) +
        " rows dropped in total while failing)");
  }
  return result;
}

Status LedgerWriter::prune() {
  if (options_.retention.count() <= 0 || !options_.now_ms)
    return Ok();
  auto n = ledger_.prune_usage(options_.now_ms() - options_.retention.count());
  if (!n) {
    log("usage ledger: pruning rows past retention failed: " + n.error().message);
    return Err(n.take_error());
  }
  pruned_ += static_cast<uint64_t>(*n);
  return Ok();
}

void LedgerWriter::run() {
  bool last_failed = false;
  // Pruning runs on this thread between flushes, counted in flush intervals (no clock here).
  const int64_t prune_ticks = std::max<int64_t>(
      1, options_.prune_every.count() / std::max<int64_t>(1, options_.flush_interval.count()));
  int64_t ticks = prune_ticks - 1; // once soon after start, then every prune_every
  std::unique_lock lock(mu_);
  while (!stop_) {
    // After a failure wait the whole interval, so a store that is down is not retried in a loop.
    const bool full = wake_.wait_for(lock, options_.flush_interval, [&] {
      return stop_ || (!last_failed && queue_.size() >= options_.max_batch);
    });
    if (stop_)
      break;
    lock.unlock();
    last_failed = !write(full ? Mode::kFullBatches : Mode::kEverything).ok();
    if (++ticks >= prune_ticks) {
      ticks = 0;
      (void)prune(); // logged; retried at the next turn
    }
    lock.lock();
  }
}

} // namespace gantry::control
