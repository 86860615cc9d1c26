// A fixed pool of compute threads for the engine's kernels (matmul, quantization).
//
// Thread ownership: a ThreadPool is owned and driven by exactly one thread (the engine thread);
// run()/parallel_for() must not be called concurrently or from inside a job. That thread takes
// part in every job as thread index 0, so a pool of N threads starts N-1 workers. Workers spin
// briefly after each job (a forward pass dispatches hundreds of jobs per token, so waking from a
// futex each time would cost more than the work) and then sleep on a futex until the next job.
#pragma once

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

namespace gantry::engine::kernels {

// A non-owning reference to a callable, so that dispatch never allocates (std::function may).
template <typename Sig> class FunctionRef;
template <typename R, typename... Args> class FunctionRef<R(Args...)> {
public:
  template <typename F, typename = std::enable_if_t<!std::is_same_v<std::decay_t<F>, FunctionRef>>>
  FunctionRef(F &&f) // NOLINT(google-explicit-constructor): used like a function parameter
      : obj_(const_cast<void *>(static_cast<const void *>(&f))),
        call_([](void *obj, Args... args) -> R {
          return (*static_cast<std::remove_reference_t<F> *>(obj))(std::forward<Args>(args)...);
        }) {}
  R operator()(Args... args) const { return call_(obj_, std::forward<Args>(args)...); }

private:
  void *obj_;
  R (*call_)(void *, Args...);
};

class ThreadPool {
public:
  // n_threads <= 0 means one thread per hardware thread (std::thread::hardware_concurrency).
  explicit ThreadPool(int n_threads = 0);
  ~ThreadPool();
  ThreadPool(const ThreadPool &) = delete;
  ThreadPool &operator=(const ThreadPool &) = delete;

  // Total threads taking part in a job, the calling thread included.
  int size() const { return n_threads_; }

  // Runs fn(thread) once on every thread, thread in [0, size()), the caller being 0; returns
  // when all have finished.
  void run(FunctionRef<void(int)> fn);

  // Splits [0, n) into chunks of `grain` items (the last may be shorter) handed out dynamically,
  // so a thread that was descheduled on a busy machine does not hold everyone back. Calls
  // fn(begin, end, thread) for each chunk. Runs inline when a single chunk covers n.
  template <typename F> void parallel_for(int64_t n, int64_t grain, F &&fn) {
    if (n <= 0)
      return;
    grain = std::max<int64_t>(grain, 1);
    if (n <= grain || n_threads_ == 1) {
      for (int64_t b = 0; b < n; b += grain)
        fn(b, std::min(n, b + grain), 0);
      return;
    }
    run_chunks(n, grain, fn);
  }

  // Like parallel_for, but chunks shrink as the work runs out: each takes 1/(2 x threads) of what
  // is left, rounded up to a multiple of `align` (at least `align`), so that the threads finish
  // within one small chunk of each other.
  template <typename F> void parallel_for_guided(int64_t n, int64_t align, F &&fn) {
    if (n <= 0)
      return;
    align = std::max<int64_t>(align, 1);
    if (n <= align || n_threads_ == 1) {
      fn(int64_t{0}, n, 0);
      return;
    }
    run_chunks(n, align, fn, /*guided=*/true);
  }

  // Like parallel_for with a grain chosen to give each thread a few chunks.
  template <typename F> void parallel_for(int64_t n, F &&fn) {
    const int64_t chunks = static_cast<int64_t>(n_threads_) * 4;
    parallel_for(n, (n + chunks - 1) / chunks, std::forward<F>(fn));
  }

private:
  using ChunkFn = FunctionRef<void(int64_t, int64_t, int)>;
  // parallel_for's engine: workers join only while chunks remain, and the caller waits only for
  // workers that joined. On a machine with more runnable threads than cores a descheduled worker
  // then costs nothing: the caller does its share instead of waiting for it to wake up.
  // guided: grain is the alignment of chunks that shrink (parallel_for_guided).
  void run_chunks(int64_t n, int64_t grain, ChunkFn fn, bool guided = false);
  void publish(uint64_t gate);
  void work_chunks(int thread);
  void worker_loop(int index);

  int n_threads_ = 1;
  std::vector<std::thread> workers_;
  // Bumped once per job; workers wait for it to change.
  alignas(64) std::atomic<uint32_t> generation_{0};
  alignas(64) std::atomic<int> sleepers_{0};
  // The current job: (generation << 32) | kMandatory | kClosed | joined workers. Workers act
  // only on what the gate says, so a late worker can never run a job twice or touch a job
  // whose caller has moved on.
  alignas(64) std::atomic<uint64_t> gate_{0};
  alignas(64) std::atomic<int> done_{0};     // workers finished with the current job
  alignas(64) std::atomic<int64_t> next_{0}; // next chunk start of a parallel_for
  uint32_t last_generation_ = 0;             // caller only
  const ChunkFn *chunk_fn_ = nullptr;
  int64_t chunk_n_ = 0;
  int64_t chunk_grain_ = 0;
  bool chunk_guided_ = false;
  std::atomic<bool> stop_{false};
  std::mutex sleep_mu_;
  std::condition_variable sleep_cv_;
  const FunctionRef<void(int)> *job_ = nullptr;
};

} // namespace gantry::engine::kernels
