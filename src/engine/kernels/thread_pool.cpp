#include "engine/kernels/thread_pool.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace gantry::engine::kernels {
namespace {

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#else
  std::this_thread::yield();
#endif
}

// How long a worker polls for the next job before sleeping. Between two matmuls of a layer the
// engine thread does ~10-100 us of serial work (norms, attention); polling across that gap is
// what keeps dispatch at a few microseconds. ~20k pauses is ~100-600 us depending on the CPU.
constexpr int kWorkerSpins = 20000;
// How long the caller polls for stragglers before yielding its core (on a machine with more
// runnable threads than cores, a descheduled worker needs the core the caller spins on).
constexpr int kCallerSpins = 4000;

} // namespace

ThreadPool::ThreadPool(int n_threads) {
  if (n_threads <= 0)
    n_threads = static_cast<int>(std::thread::hardware_concurrency());
  n_threads_ = std::max(1, n_threads);
  workers_.reserve(static_cast<size_t>(n_threads_ - 1));
  for (int i = 1; i < n_threads_; ++i)
    workers_.emplace_back([this, i] { worker_loop(i); });
}

ThreadPool::~ThreadPool() {
  stop_.store(true, std::memory_order_relaxed);
  generation_.store(++last_generation_, std::memory_order_seq_cst);
  { std::lock_guard<std::mutex> lk(sleep_mu_); }
  sleep_cv_.notify_all();
  for (auto &t : workers_)
    t.join();
}

namespace {
constexpr uint64_t kMandatory = 1ull << 31; // every worker must run it (run())
constexpr uint64_t kClosed = 1ull << 30;    // no more workers may join (parallel_for)
constexpr uint64_t kCountMask = kClosed - 1;
} // namespace

void ThreadPool::publish(uint64_t gate) {
  gate_.store(gate, std::memory_order_release);
  // seq_cst pairs with the worker's sleepers_ increment: either the worker sees the new
  // generation before sleeping or we see it asleep and pay for the wake-up.
  generation_.store(last_generation_, std::memory_order_seq_cst);
  if (sleepers_.load(std::memory_order_seq_cst) > 0) {
    // Taking the mutex orders this notify after a worker that counted itself as a sleeper has
    // either seen the new generation or entered the wait (libstdc++ 12's atomic::wait lost
    // wake-ups here and hung the engine).
    { std::lock_guard<std::mutex> lk(sleep_mu_); }
    sleep_cv_.notify_all();
  }
}

void ThreadPool::run(FunctionRef<void(int)> fn) {
  if (n_threads_ == 1) {
    fn(0);
    return;
  }
  job_ = &fn;
  done_.store(0, std::memory_order_relaxed);
  ++last_generation_;
  publish((static_cast<uint64_t>(last_generation_) << 32) | kMandatory);
  fn(0);
  for (int spins = 0; done_.load(std::memory_order_acquire) != n_threads_ - 1; ++spins) {
    if (spins < kCallerSpins) {
      cpu_relax();
    } else {
      std::this_thread::yield();
    }
  }
  job_ = nullptr;
}

void ThreadPool::work_chunks(int thread) {
  if (chunk_guided_) { // parallel_for_guided: chunk_grain_ is the alignment
    const int64_t align = chunk_grain_, parts = 2 * static_cast<int64_t>(n_threads_);
    int64_t b = next_.load(std::memory_order_relaxed);
    while (b < chunk_n_) {
      const int64_t want = ((chunk_n_ - b) / parts + align - 1) / align * align;
      const int64_t e = std::min(chunk_n_, b + std::max(want, align));
      if (!next_.compare_exchange_weak(b, e, std::memory_order_relaxed))
        continue; // b now holds the current value
      (*chunk_fn_)(b, e, thread);
      b = next_.load(std::memory_order_relaxed);
    }
    return;
  }
  for (;;) {
    const int64_t b = next_.fetch_add(chunk_grain_, std::memory_order_relaxed);
    if (b >= chunk_n_)
      break;
    (*chunk_fn_)(b, std::min(chunk_n_, b + chunk_grain_), thread);
  }
}

void ThreadPool::run_chunks(int64_t n, int64_t grain, ChunkFn fn, bool guided) {
  chunk_fn_ = &fn;
  chunk_n_ = n;
  chunk_grain_ = grain;
  chunk_guided_ = guided;
  next_.store(0, std::memory_order_relaxed);
  done_.store(0, std::memory_order_relaxed);
  ++last_generation_;
  publish(static_cast<uint64_t>(last_generation_) << 32);
  work_chunks(0);
  // Every chunk is claimed: close the gate and wait only for the workers already inside.
  const uint64_t s = gate_.fetch_or(kClosed, std::memory_order_acq_rel);
  const int joined = static_cast<int>(s & kCountMask);
  for (int spins = 0; done_.load(std::memory_order_acquire) != joined; ++spins) {
    if (spins < kCallerSpins) {
      cpu_relax();
    } else {
      std::this_thread::yield();
    }
  }
  chunk_fn_ = nullptr;
}

void ThreadPool::worker_loop(int index) {
  // Not generation_.load(): a job may already be published before this thread got going.
  uint32_t seen = 0;
  for (;;) {
    uint32_t gen = generation_.load(std::memory_order_acquire);
    for (int spins = 0; gen == seen && spins < kWorkerSpins; ++spins) {
      cpu_relax();
      gen = generation_.load(std::memory_order_acquire);
    }
    if (gen == seen) {
      std::unique_lock<std::mutex> lk(sleep_mu_);
      sleepers_.fetch_add(1, std::memory_order_seq_cst);
      while ((gen = generation_.load(std::memory_order_seq_cst)) == seen)
        sleep_cv_.wait(lk);
      sleepers_.fetch_sub(1, std::memory_order_relaxed);
    }
    if (stop_.load(std::memory_order_relaxed))
      return;
    uint64_t s = gate_.load(std::memory_order_acquire);
    seen = static_cast<uint32_t>(s >> 32);
    if (s & kMandatory) {
      (*job_)(index);
      done_.fetch_add(1, std::memory_order_release);
      continue;
    }
    // Join the parallel_for if it is still open; the CAS fails if the gate changed (another
    // worker joined: retry; the caller closed it or moved on: skip).
    bool joined = false;
    while ((s >> 32) == seen && !(s & kClosed)) {
      if (gate_.compare_exchange_weak(s, s + 1, std::memory_order_acq_rel)) {
        joined = true;
        break;
      }
    }
    if (joined) {
      work_chunks(index);
      done_.fetch_add(1, std::memory_order_release);
    }
  }
}

} // namespace gantry::engine::kernels
