// Throughput of matmul on TinyLlama-sized matrices. Disabled by default: it takes seconds and its
// numbers mean something only on a quiet machine. Run with
//   kernels_test --gtest_also_run_disabled_tests --gtest_filter='*DISABLED_Perf*'
#include <atomic>
#include <chrono>
#include <cstdio>
#include <vector>

#include <gtest/gtest.h>

#include "engine/kernels/kernels.h"
#include "kernels_test_util.h"

namespace gantry::engine::kernels {
namespace {

using testing::random_floats;

double seconds_per_call(const WeightView &w, const float *x, int64_t n, float *y, ThreadPool &pool,
                        double min_seconds) {
  matmul(w, x, n, y, pool); // warm up caches, scratch and workers
  int reps = 0;
  const auto start = std::chrono::steady_clock::now();
  double elapsed = 0;
  do {
    matmul(w, x, n, y, pool);
    ++reps;
    elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  } while (elapsed < min_seconds);
  return elapsed / reps;
}

TEST(KernelsPerf, DISABLED_PerfTinyLlamaFfn) {
  const int64_t rows = 5632, cols = 2048;
  ThreadPool pool(2);
  auto wf = random_floats(rows * cols, 1, 0.05f);
  auto x = random_floats(512 * cols, 2);
  std::vector<float> y(static_cast<size_t>(512 * rows));
  std::printf("isa=%s threads=%d, W = %lld x %lld\n", testing::isa_name(active_isa()), pool.size(),
              static_cast<long long>(rows), static_cast<long long>(cols));
  {
    // What the memory system gives two threads, to judge the n=1 numbers against.
    const std::vector<float> big(size_t{64} << 20, 1.0f);
    const int64_t n = static_cast<int64_t>(big.size());
    std::atomic<int64_t> sink{0};
    auto read_all = [&] {
      pool.parallel_for(n, n / 8, [&](int64_t b, int64_t e, int) {
        sink += static_cast<int64_t>(dot_f32(big.data() + b, big.data() + b, e - b) > 0);
      });
    };
    read_all();
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < 5; ++i)
      read_all();
    const double s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() / 5;
    std::printf("read bandwidth (dot_f32, 256 MB): %.1f GB/s\n",
                static_cast<double>(n) * 4 / 1e9 / s);
  }
  for (TensorType t :
       {TensorType::kQ8_0, TensorType::kQ4_0, TensorType::kF16, TensorType::kQ4_1,
        TensorType::kQ5_0, TensorType::kQ5_1, TensorType::kIQ4_NL, TensorType::kQ2_K,
        TensorType::kQ3_K, TensorType::kQ4_K, TensorType::kQ5_K, TensorType::kQ6_K}) {
    const size_t rb = row_bytes(t, cols);
    std::vector<uint8_t> data(rb * static_cast<size_t>(rows));
    for (int64_t r = 0; r < rows; ++r) {
      quantize_row(t, wf.data() + r * cols, data.data() + static_cast<size_t>(r) * rb, cols);
    }
    const WeightView w = make_weight_view(t, data.data(), rows, cols);
    const double s1 = seconds_per_call(w, x.data(), 1, y.data(), pool, 0.5);
    const double s8 = seconds_per_call(w, x.data(), 8, y.data(), pool, 0.5);
    const double s512 = seconds_per_call(w, x.data(), 512, y.data(), pool, 1.0);
    const double gb = static_cast<double>(data.size()) / 1e9;
    const double gmac = static_cast<double>(rows * cols) * 512 / 1e9;
    std::printf("%-5s n=1: %7.3f ms %6.1f GB/s | n=8: %7.3f ms | n=512: %8.1f ms %6.1f GMAC/s\n",
                std::string(gguf::type_traits(t).name).c_str(), s1 * 1e3, gb / s1, s8 * 1e3,
                s512 * 1e3, gmac / s512);
  }
}

} // namespace
} // namespace gantry::engine::kernels
