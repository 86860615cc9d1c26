// read_bw: a STREAM-like read-bandwidth probe, the ceiling that single-sequence decode is judged
// against (issue 16: "decode reaching >= 90% of the measured read bandwidth").
//
//   build/bench/read_bw [--threads 2] [--mib 1024] [--reps 5] [--json]
//
// Each thread sums its own disjoint half of one buffer far larger than the caches (1 GiB by
// default, the size of a 1.1B Q8_0 model), reading it front to back like a decode step reads its
// weights. The ceiling is the best of several ways to read: one sequential stream per thread
// reads well below what the memory system gives on some machines (on the 2-core Zen 3 VM of
// 2026-12, 26-35 GB/s against 42-46 with four streams and a software prefetch), because one
// stream keeps too few cache misses in flight; decode kernels that stream several weight groups
// side by side got more than that one-stream figure, so a probe that only reads one way is not
// a ceiling. The patterns take turns pass by pass, so a host whose bandwidth drifts over a minute
// (shared VMs do) moves all of them alike. Reports, for the best pattern (by median), its best
// and median pass in GB/s (10^9 bytes per second), and every pattern's median.
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

#include <sys/mman.h>

#include "engine/kernels/kernels.h"

namespace {

namespace k = gantry::engine::kernels;

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

double median_of(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

} // namespace

int main(int argc, char **argv) {
  const int threads = std::max(1, arg_int(argc, argv, "--threads", 2));
  const int mib = std::max(64, arg_int(argc, argv, "--mib", 1024));
  const int reps = std::max(1, arg_int(argc, argv, "--reps", 5));
  const bool json = arg_flag(argc, argv, "--json");
  // The scalar ISA reads one way only (GANTRY_NO_AVX2=1, or a CPU without AVX2).
  const auto patterns = k::read_patterns();
  const size_t npat = patterns.size();

  const size_t bytes = static_cast<size_t>(mib) << 20;
  // An anonymous mapping with huge pages advised, as the engine's packed weight arena has.
  void *map = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (map == MAP_FAILED) {
    std::fprintf(stderr, "read_bw: cannot map %d MiB\n", mib);
    return 1;
  }
  (void)madvise(map, bytes, MADV_HUGEPAGE);
  auto *buf = static_cast<uint8_t *>(map);
  const size_t per = bytes / static_cast<size_t>(threads) / 64 * 64;
  std::atomic<uint64_t> sink{0};
  {
    // Each thread touches (and so places) the share it will read.
    std::vector<std::thread> ts;
    for (int t = 0; t < threads; ++t) {
      ts.emplace_back([&, t] {
        auto *w = reinterpret_cast<uint64_t *>(buf + per * static_cast<size_t>(t));
        for (size_t i = 0; i < per / 8; ++i)
          w[i] = i;
      });
    }
    for (auto &t : ts)
      t.join();
  }

  // Threads start each pass together (a spin barrier) so that the pass time is the slowest
  // thread's read of its share, not thread start-up.
  auto pass = [&](k::ReadPattern pat) {
    std::atomic<int> ready{0};
    std::atomic<bool> go{false};
    std::vector<double> secs(static_cast<size_t>(threads));
    std::vector<std::thread> ts;
    for (int t = 0; t < threads; ++t) {
      ts.emplace_back([&, t] {
        const uint8_t *p = buf + per * static_cast<size_t>(t);
        ready.fetch_add(1);
        while (!go.load(std::memory_order_acquire)) {
        }
        const auto start = std::chrono::steady_clock::now();
        const uint64_t s = k::read_bytes(p, per, pat);
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
    const double slowest = *std::max_element(secs.begin(), secs.end());
    return static_cast<double>(per) * threads / 1e9 / slowest;
  };

  std::vector<std::vector<double>> gbps(npat);
  for (size_t i = 0; i < npat; ++i)
    (void)pass(patterns[i]); // warm-up
  for (int r = 0; r < reps; ++r) {
    for (size_t i = 0; i < npat; ++i)
      gbps[i].push_back(pass(patterns[i]));
  }
  munmap(map, bytes);

  size_t top = 0;
  std::vector<double> med(npat);
  for (size_t i = 0; i < npat; ++i) {
    med[i] = median_of(gbps[i]);
    if (med[i] > med[top])
      top = i;
  }
  const double best = *std::max_element(gbps[top].begin(), gbps[top].end());
  auto name = [&](size_t i) { return k::read_pattern_name(patterns[i]); };
  if (json) {
    std::string per_pattern;
    for (size_t i = 0; i < npat; ++i) {
      char b[96];
      std::snprintf(b, sizeof b, "%s\"%s\":%.2f", i ? "," : "", name(i).c_str(), med[i]);
      per_pattern += b;
    }
    std::printf("{\"threads\":%d,\"mib\":%d,\"reps\":%d,\"best_gbps\":%.2f,\"median_gbps\":%.2f,"
                "\"pattern\":\"%s\",\"pattern_median_gbps\":{%s},\"checksum\":%llu}\n",
                threads, mib, reps, best, med[top], name(top).c_str(), per_pattern.c_str(),
                static_cast<unsigned long long>(sink.load() & 0xFFFF));
  } else {
    std::printf("read bandwidth, %d threads, %d MiB: best %.2f GB/s, median %.2f GB/s (%s)\n",
                threads, mib, best, med[top], name(top).c_str());
    for (size_t i = 0; i < npat; ++i)
      std::printf("  %-10s median %.2f GB/s\n", name(i).c_str(), med[i]);
  }
  return 0;
}
