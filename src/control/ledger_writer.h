// Batches usage rows and key last-used times off the request path into UsageLedger and KeyStore
// writes.
//
// A request thread calls record() / touched(): a push under a mutex, never a disk wait. A
// background thread writes the rows, one UsageLedger::append_usage transaction per max_batch rows,
// every flush_interval or as soon as max_batch rows wait. A failed write keeps its rows and
// retries after the next interval; the ledger ignores request ids it already has, so a retry never
// counts a row twice. While the store stays down the queue is bounded: beyond max_pending the
// oldest rows are dropped and counted.
//
// Threading: record(), touched(), flush() and the counters may be called from any thread. The
// writer thread is owned by the object; the destructor stops it and flushes once more.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>

#include "control/key_store.h"
#include "control/usage_ledger.h"

namespace gantry::control {

struct LedgerWriterOptions {
  std::chrono::milliseconds flush_interval{200};
  size_t max_batch = 512;       // rows per transaction; this many waiting wakes the writer
  size_t max_pending = 100'000; // rows kept while the store fails; the oldest go first
  // Retention of the raw rows (roll-ups are kept): every prune_every the writer deletes rows
  // older than `retention` before now_ms(). 0 or no now_ms = keep everything.
  std::chrono::milliseconds retention{0};
  std::chrono::milliseconds prune_every{std::chrono::hours(1)};
  std::function<int64_t()> now_ms;
  // Told when writes start failing (once, not on every retry) and when they recover. Called on
  // the writing thread (the writer's, or flush()'s caller). Default: a line on stderr.
  std::function<void(std::string_view)> log;
};

class LedgerWriter {
public:
  // Throws std::invalid_argument unless 0 < max_batch <= max_pending (a start-up mistake).
  LedgerWriter(UsageLedger &ledger, KeyStore &keys, LedgerWriterOptions options = {});
  ~LedgerWriter();

  LedgerWriter(const LedgerWriter &) = delete;
  LedgerWriter &operator=(const LedgerWriter &) = delete;

  void record(UsageRecord row);
  // The key was used at `unix_seconds`; only the latest time per key is kept until written.
  void touched(const std::string &key_id, int64_t unix_seconds);

  // Writes everything recorded before the call, waiting for a write in progress first. On error
  // the unwritten rows stay pending for the next attempt.
  Status flush();

  uint64_t rows_written() const { return rows_written_.load(); } // rows in committed batches
  uint64_t batches() const { return batches_.load(); }           // committed append_usage calls
  uint64_t failures() const { return failures_.load(); }         // failed append/touch calls
  uint64_t dropped() const { return dropped_.load(); }           // rows lost to max_pending
  uint64_t pruned() const { return pruned_.load(); }             // rows deleted by retention
  // Deletes the rows past retention now (the writer's hourly task; tests call it).
  Status prune();
  size_t pending() const; // recorded, not yet committed (including a batch being written)

private:
  enum class Mode { kFullBatches, kEverything };
  Status write(Mode mode);
  void run();
  void drop_overflow(); // requires mu_
  void log(const std::string &line) const;

  UsageLedger &ledger_;
  KeyStore &keys_;
  const LedgerWriterOptions options_;

  mutable std::mutex mu_; // guards the fields down to stop_
  std::condition_variable wake_;
  std::deque<UsageRecord> queue_;
  std::unordered_map<std::string, int64_t> touches_;
  size_t in_flight_ = 0;
  bool stop_ = false;

  std::mutex write_mu_;  // one writer at a time: the thread or a flush() caller
  bool failing_ = false; // guarded by write_mu_; so a failure is logged once, not per retry

  std::atomic<uint64_t> rows_written_{0};
  std::atomic<uint64_t> batches_{0};
  std::atomic<uint64_t> failures_{0};
  std::atomic<uint64_t> dropped_{0};
  std::atomic<uint64_t> pruned_{0};

  std::thread thread_; // last: starts after every field above is ready
};

} // namespace gantry::control
