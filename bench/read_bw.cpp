// read_bw: a STREAM-like read-bandwidth probe, the ceiling that single-sequence decode is judged
// against (issue 16: "decode reaching >= 90% of the measured read bandwidth").
//
//   build/bench/read_bw [--threads 2] [--mib 1024] [--reps 5] [--json]
//
// Each thread sums its own disjoint half of one buffer far larger than the caches (1 GiB by
// default, the size of a 1.1B Q8_0 model), reading it front to back like a decode step reads its
// weights. Reports the best and the median pass in GB/s (10^9 bytes per second). Vector loads are
// 32 bytes (AVX2) when the CPU has them, which is as wide as DRAM bandwidth needs: one core can
// issue far more loads than the memory system serves.
#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

namespace {

__attribute__((target("avx2"))) uint64_t sum_avx2(const uint64_t *p, size_t n) {
  __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    a0 = _mm256_add_epi64(a0, _mm256_load_si256(reinterpret_cast<const __m256i *>(p + i)));
    a1 = _mm256_add_epi64(a1, _mm256_load_si256(reinterpret_cast<const __m256i *>(p + i + 4)));
    a2 = _mm256_add_epi64(a2, _mm256_load_si256(reinterpret_cast<const __m256i *>(p + i + 8)));
    a3 = _mm256_add_epi64(a3, _mm256_load_si256(reinterpret_cast<const __m256i *>(p + i + 12)));
  }
  alignas(32) uint64_t out[4];
  _mm256_store_si256(reinterpret_cast<__m256i *>(out),
                     _mm256_add_epi64(_mm256_add_epi64(a0, a1), _mm256_add_epi64(a2, a3)));
  uint64_t s = out[0] + out[1] + out[2] + out[3];
  for (; i < n; ++i)
    s += p[i];
  return s;
}

uint64_t sum_scalar(const uint64_t *p, size_t n) {
  uint64_t s0 = 0, s1 = 0;
  size_t i = 0;
  for (; i + 2 <= n; i += 2) {
    s0 += p[i];
    s1 += p[i + 1];
  }
  if (i < n)
    s0 += p[i];
  return s0 + s1;
}

int arg_int(int argc, char **argv, const char *name, int def) {
  for (int i = 1; i + 1 < argc; ++i) {
    if (std::strcmp(argv[i], name) == 0)
      return std::atoi(argv[i + 1]);
  }
  return def;
}

bool arg_flag(int argc, char **argv, const char *name) {
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], name) == 0)
      return true;
  }
  return false;
}

} // namespace

int main(int argc, char **argv) {
  const int threads = std::max(1, arg_int(argc, argv, "--threads", 2));
  const int mib = std::max(64, arg_int(argc, argv, "--mib", 1024));
  const int reps = std::max(1, arg_int(argc, argv, "--reps", 5));
  const bool json = arg_flag(argc, argv, "--json");
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2");

  const size_t words = static_cast<size_t>(mib) << 17; // 8-byte words
  auto *buf = static_cast<uint64_t *>(std::aligned_alloc(64, words * 8));
  if (buf == nullptr) {
    std::fprintf(stderr, "read_bw: cannot allocate %d MiB\n", mib);
    return 1;
  }
  // Each thread touches (and so places) the half it will read.
  const size_t per = (words / static_cast<size_t>(threads) + 7) / 8 * 8;
  std::atomic<uint64_t> sink{0};
  auto run_all = [&](auto &&fn) {
    std::vector<std::thread> ts;
    for (int t = 0; t < threads; ++t) {
      const size_t b = std::min(words, per * static_cast<size_t>(t));
      const size_t e = std::min(words, b + per);
      ts.emplace_back([&, b, e] { fn(b, e); });
    }
    for (auto &t : ts)
      t.join();
  };
  run_all([&](size_t b, size_t e) {
    for (size_t i = b; i < e; ++i)
      buf[i] = i;
  });

  // Threads start each pass together (a spin barrier) so that the pass time is the slowest
  // thread's read of its half, not thread start-up.
  std::vector<double> gbps;
  for (int r = 0; r < reps + 1; ++r) {
    std::atomic<int> ready{0};
    std::atomic<bool> go{false};
    std::vector<double> secs(static_cast<size_t>(threads));
    std::vector<std::thread> ts;
    for (int t = 0; t < threads; ++t) {
      const size_t b = std::min(words, per * static_cast<size_t>(t));
      const size_t e = std::min(words, b + per);
      ts.emplace_back([&, b, e, t] {
        ready.fetch_add(1);
        while (!go.load(std::memory_order_acquire)) {
        }
        const auto start = std::chrono::steady_clock::now();
        const uint64_t s = avx2 ? sum_avx2(buf + b, e - b) : sum_scalar(buf + b, e - b);
        secs[static_cast<size_t>(t)] =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        sink.fetch_add(s, std::memory_order_relaxed);
      });
    }
    while (ready.load() < threads) {
    }
    go.store(true, std::memory_order_release);
    for (auto &t : ts)
      t.join();
    if (r == 0)
      continue; // warm-up pass
    const double slowest = *std::max_element(secs.begin(), secs.end());
    gbps.push_back(static_cast<double>(words) * 8 / 1e9 / slowest);
  }
  std::free(buf);
  std::vector<double> sorted = gbps;
  std::sort(sorted.begin(), sorted.end());
  const double best = sorted.back(), median = sorted[sorted.size() / 2];
  if (json) {
    std::printf("{\"threads\":%d,\"mib\":%d,\"reps\":%d,\"best_gbps\":%.2f,\"median_gbps\":%.2f,"
                "\"checksum\":%llu}\n",
                threads, mib, reps, best, median,
                static_cast<unsigned long long>(sink.load() & 0xFFFF));
  } else {
    std::printf("read bandwidth, %d threads, %d MiB: best %.2f GB/s, median %.2f GB/s\n", threads,
                mib, best, median);
  }
  return 0;
}
