// Matmul kernels alone, one thread, no model around them (issue 16): the prefill and decode
// shapes of a 1.1B Llama's projections (2048 x 2048, 5632 x 2048, 2048 x 5632) for F16, Q8_0,
// Q4_0, Q4_K and Q6_K weights (the K-quants encoded by Gantry's simple quantizer: the kernels'
// speed does not depend on how well the values were chosen) as stored in the file (row-major) and
// repacked as the model loads them, so a change
// to one kernel can be judged on the kernel's own time rather than on a whole model's tok/s,
// which this 2-core VM moves by a third from minute to minute.
//
//   build/bench/kernels_bench --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
//   build/bench/kernels_bench --benchmark_filter='type:12/'   # one type (the TensorType number)
//
// Reports the time per matmul call and the columns x rows x tokens multiply-adds per second.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <random>
#include <vector>

#include "engine/kernels/kernels.h"
#include "engine/kernels/thread_pool.h"

namespace {

using gantry::engine::kernels::ThreadPool;
using gantry::gguf::TensorType;
namespace k = gantry::engine::kernels;

struct Weights {
  std::vector<uint8_t> data, packed;
  k::WeightView view;
};

Weights make(TensorType t, int64_t rows, int64_t cols, bool repack) {
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.0f, 0.02f);
  std::vector<float> row(static_cast<size_t>(cols));
  Weights w;
  const size_t rb = k::row_bytes(t, cols);
  w.data.resize(rb * static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r) {
    for (float &v : row)
      v = nd(rng);
    k::quantize_row(t, row.data(), w.data.data() + rb * static_cast<size_t>(r), cols);
  }
  w.view = k::make_weight_view(t, w.data.data(), rows, cols);
  if (repack && k::can_pack_rows16(w.view)) {
    w.packed.resize(k::packed_bytes(w.view));
    w.view = k::pack_rows16(w.view, w.packed.data());
  }
  return w;
}

// args: type, rows, cols, tokens, repacked
void BM_Matmul(benchmark::State &state) {
  const auto t = static_cast<TensorType>(state.range(0));
  const int64_t rows = state.range(1), cols = state.range(2), n = state.range(3);
  const Weights w = make(t, rows, cols, state.range(4) != 0);
  std::mt19937 rng(3);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(n * cols)), y(static_cast<size_t>(n * rows));
  for (float &v : x)
    v = nd(rng);
  ThreadPool pool(1);
  for (auto _ : state) {
    k::matmul(w.view, x.data(), n, y.data(), pool);
    benchmark::DoNotOptimize(y.data());
  }
  state.counters["GMAC/s"] = benchmark::Counter(static_cast<double>(rows * cols * n) * 1e-9,
                                                benchmark::Counter::kIsIterationInvariantRate);
}

void shapes(benchmark::internal::Benchmark *b) {
  for (auto t : {TensorType::kF16, TensorType::kQ8_0, TensorType::kQ4_0, TensorType::kQ4_K,
                 TensorType::kQ6_K}) {
    for (auto [rows, cols] :
         {std::pair<int64_t, int64_t>{2048, 2048}, {5632, 2048}, {2048, 5632}}) {
      for (int64_t packed : {0, 1}) {
        // Prefill, an 8-sequence decode step, one sequence decoding.
        for (int64_t tokens : {64, 8, 1})
          b->Args({static_cast<int64_t>(t), rows, cols, tokens, packed});
      }
    }
  }
}
BENCHMARK(BM_Matmul)
    ->Apply(shapes)
    ->ArgNames({"type", "rows", "cols", "tokens", "packed"})
    ->Unit(benchmark::kMillisecond);

} // namespace

BENCHMARK_MAIN();
