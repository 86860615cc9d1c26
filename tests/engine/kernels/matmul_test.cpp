// matmul against a double-precision reference on dequantized weights, for every weight type,
// both instruction sets, several token counts and thread counts.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "engine/kernels/kernels.h"
#include "kernels_test_util.h"

namespace gantry::engine::kernels {
namespace {

using testing::available_isas;
using testing::isa_name;
using testing::random_floats;
using testing::ScopedIsa;

const TensorType kAllTypes[] = {
    TensorType::kF32,  TensorType::kF16,  TensorType::kBF16, TensorType::kQ8_0,   TensorType::kQ4_0,
    TensorType::kQ4_1, TensorType::kQ5_0, TensorType::kQ5_1, TensorType::kIQ4_NL, TensorType::kQ2_K,
    TensorType::kQ3_K, TensorType::kQ4_K, TensorType::kQ5_K, TensorType::kQ6_K};

// Byte offsets of the fp16 scales (and mins) in a block of each quantized type.
std::vector<size_t> fp16_fields(TensorType t) {
  switch (t) {
  case TensorType::kQ8_0:
  case TensorType::kQ4_0:
  case TensorType::kQ5_0:
  case TensorType::kIQ4_NL: return {0};
  case TensorType::kQ4_1:
  case TensorType::kQ5_1:
  case TensorType::kQ4_K:
  case TensorType::kQ5_K: return {0, 2};
  case TensorType::kQ2_K: return {80, 82};
  case TensorType::kQ3_K: return {108};
  case TensorType::kQ6_K: return {208};
  default: return {};
  }
}

std::string name(TensorType t) { return std::string(gguf::type_traits(t).name); }

// A weight matrix built by quantizing random floats (or, for `raw`, from random bytes with
// sane block scales, so that every bit pattern of the quants and packed scales is exercised).
struct Matrix {
  TensorType type;
  int64_t rows, cols;
  std::vector<uint8_t> data;
  std::vector<float> dequant; // rows x cols, what the kernels should be computing with

  WeightView view() const { return make_weight_view(type, data.data(), rows, cols); }
};

Matrix make_matrix(TensorType t, int64_t rows, int64_t cols, uint32_t seed, bool raw) {
  Matrix m{t, rows, cols, {}, {}};
  const size_t rb = row_bytes(t, cols);
  m.data.resize(rb * static_cast<size_t>(rows));
  if (raw && t != TensorType::kF32 && t != TensorType::kF16 && t != TensorType::kBF16) {
    std::mt19937 rng(seed);
    for (auto &b : m.data)
      b = static_cast<uint8_t>(rng());
    // Overwrite the fp16 scales with small positive/negative values.
    const auto tr = gguf::type_traits(t);
    std::uniform_real_distribution<float> dist(-0.02f, 0.02f);
    for (size_t off = 0; off < m.data.size(); off += tr.block_bytes) {
      auto put = [&](size_t at) {
        const uint16_t h = fp32_to_fp16(dist(rng));
        std::memcpy(&m.data[off + at], &h, 2);
      };
      for (size_t at : fp16_fields(t))
        put(at);
    }
  } else {
    auto w = random_floats(rows * cols, seed, 0.05f);
    for (int64_t r = 0; r < rows; ++r) {
      quantize_row(t, w.data() + r * cols, m.data.data() + static_cast<size_t>(r) * rb, cols);
    }
  }
  m.dequant.resize(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r) {
    dequantize_row(t, m.data.data() + static_cast<size_t>(r) * rb, m.dequant.data() + r * cols,
                   cols);
  }
  return m;
}

// |error| allowed for one output: activation quantization error (half a step of the 8-bit
// block scale, summed over |w|) plus float accumulation error.
double tolerance(const Matrix &m, int64_t r, const float *x, bool quantized_acts) {
  const int64_t block = gguf::type_traits(m.type).block_elems == 256 ? 256 : 32;
  double tol = 0, mag = 0;
  for (int64_t b = 0; b < m.cols; b += block) {
    double amax = 0, wsum = 0;
    for (int64_t i = b; i < std::min(b + block, m.cols); ++i) {
      amax = std::max(amax, std::fabs(static_cast<double>(x[i])));
      wsum += std::fabs(static_cast<double>(m.dequant[static_cast<size_t>(r * m.cols + i)]));
      mag += std::fabs(static_cast<double>(m.dequant[static_cast<size_t>(r * m.cols + i)]) * x[i]);
    }
    if (quantized_acts)
      tol += wsum * amax / 127.0 * 0.5;
  }
  return tol * 1.01 + mag * 2e-5 + 1e-6;
}

void check_matmul(const Matrix &m, int64_t n_tokens, ThreadPool &pool, uint32_t seed,
                  const std::string &what) {
  auto x = random_floats(n_tokens * m.cols, seed);
  const int64_t ldy = m.rows + 3; // also checks that the padding is left alone
  std::vector<float> y(static_cast<size_t>(n_tokens * ldy), -777.0f);
  matmul(m.view(), x.data(), n_tokens, y.data(), ldy, pool);
  const bool quantized =
      m.type != TensorType::kF32 && m.type != TensorType::kF16 && m.type != TensorType::kBF16;
  for (int64_t t = 0; t < n_tokens; ++t) {
    const float *xt = x.data() + t * m.cols;
    for (int64_t r = 0; r < m.rows; ++r) {
      double want = 0;
      for (int64_t i = 0; i < m.cols; ++i) {
        want += static_cast<double>(m.dequant[static_cast<size_t>(r * m.cols + i)]) * xt[i];
      }
      const float got = y[static_cast<size_t>(t * ldy + r)];
      ASSERT_NEAR(got, want, tolerance(m, r, xt, quantized))
          << what << " token " << t << " row " << r;
    }
    for (int64_t r = m.rows; r < ldy; ++r) {
      ASSERT_EQ(y[static_cast<size_t>(t * ldy + r)], -777.0f) << what << " wrote padding";
    }
  }
}

TEST(MatmulTest, AllTypesTokenCountsAndIsas) {
  ThreadPool pool(2);
  for (Isa isa : available_isas()) {
    ScopedIsa scope(isa);
    for (TensorType t : kAllTypes) {
      for (bool raw : {false, true}) {
        for (int64_t rows : {int64_t{1}, int64_t{7}, int64_t{37}}) {
          const Matrix m = make_matrix(t, rows, 512, static_cast<uint32_t>(rows) + 1, raw);
          for (int64_t n : {1, 3, 8, 33}) {
            check_matmul(m, n, pool, static_cast<uint32_t>(n) * 13,
                         std::string(isa_name(isa)) + " " + name(t) + (raw ? " raw" : "") +
                             " rows=" + std::to_string(rows) + " n=" + std::to_string(n));
          }
        }
      }
    }
  }
}

// Odd shapes against the float reference on every instruction set: row counts that are not
// multiples of any row tile, the fewest blocks a row can have and an odd number of them, every
// batch size from 1 to 9 (9 starts a second 8-token group).
TEST(MatmulTest, OddShapesEveryBatchSize) {
  ThreadPool pool(2);
  for (Isa isa : available_isas()) {
    ScopedIsa scope(isa);
    for (TensorType t : kAllTypes) {
      const int64_t block = gguf::type_traits(t).block_elems;
      const int64_t k = block == 256 ? 256 : 32;
      for (auto [rows, blocks] : {std::pair<int64_t, int64_t>{1, 1}, {13, 3}, {75, 1}, {9, 5}}) {
        const int64_t cols = blocks * k;
        for (bool raw : {false, true}) {
          const Matrix m = make_matrix(t, rows, cols, static_cast<uint32_t>(rows * 31 + cols), raw);
          for (int64_t n = 1; n <= 9; ++n) {
            check_matmul(m, n, pool, static_cast<uint32_t>(n * 7 + rows),
                         std::string(isa_name(isa)) + " " + name(t) + (raw ? " raw" : "") + " " +
                             std::to_string(rows) + "x" + std::to_string(cols) +
                             " n=" + std::to_string(n));
          }
        }
      }
    }
  }
}

// Big enough to be split across threads and across token chunks.
TEST(MatmulTest, ThreadedAndChunked) {
  for (int threads : {1, 3}) {
    ThreadPool pool(threads);
    for (Isa isa : available_isas()) {
      ScopedIsa scope(isa);
      for (TensorType t : kAllTypes) {
        const Matrix m = make_matrix(t, 101, 768, 7, false);
        for (int64_t n : {2, 70}) {
          check_matmul(m, n, pool, 99,
                       std::string(isa_name(isa)) + " " + name(t) +
                           " threads=" + std::to_string(threads) + " n=" + std::to_string(n));
        }
      }
    }
  }
}

// The tiny bundled model: 64-wide F32 matrices.
TEST(MatmulTest, TinyF32) {
  ThreadPool pool(2);
  for (Isa isa : available_isas()) {
    ScopedIsa scope(isa);
    const Matrix m = make_matrix(TensorType::kF32, 64, 64, 3, false);
    for (int64_t n : {1, 5})
      check_matmul(m, n, pool, 5, isa_name(isa));
    const Matrix odd = make_matrix(TensorType::kF32, 5, 13, 3, false);
    check_matmul(odd, 3, pool, 5, std::string(isa_name(isa)) + " 5x13");
  }
}

// The server promises that a request gives the same greedy text alone or batched with others,
// so an output must not depend on how many tokens share the call, where the token sits in it,
// or which tile or thread computed it: bit for bit, for every type and instruction set.
TEST(MatmulTest, SameBitsAloneOrBatched) {
  ThreadPool pool1(1), pool3(3);
  for (Isa isa : available_isas()) {
    ScopedIsa scope(isa);
    for (TensorType t : kAllTypes) {
      for (auto [rows, cols] : {std::pair<int64_t, int64_t>{37, 512}, {101, 768}}) {
        const Matrix m = make_matrix(t, rows, cols, 5, true);
        const int64_t n_max = 70;
        auto x = random_floats(n_max * cols, 23);
        std::vector<float> alone(static_cast<size_t>(n_max * rows));
        for (int64_t tok = 0; tok < n_max; ++tok) {
          matmul(m.view(), x.data() + tok * cols, 1, alone.data() + tok * rows, pool1);
        }
        for (int64_t n : {2, 3, 4, 5, 6, 7, 8, 9, 33, 70}) {
          for (ThreadPool *pool : {&pool1, &pool3}) {
            // Start at token 1 too, so that tokens move to other positions within a group.
            for (int64_t first : {int64_t{0}, int64_t{1}}) {
              if (first + n > n_max)
                continue;
              std::vector<float> y(static_cast<size_t>(n * rows));
              matmul(m.view(), x.data() + first * cols, n, y.data(), *pool);
              for (int64_t i = 0; i < n * rows; ++i) {
                const float want = alone[static_cast<size_t>(first * rows + i)];
                const float got = y[static_cast<size_t>(i)];
                ASSERT_EQ(std::memcmp(&got, &want, sizeof got), 0)
                    << isa_name(isa) << " " << name(t) << " " << rows << "x" << cols << " n=" << n
                    << " first=" << first << " threads=" << pool->size() << ": token " << i / rows
                    << " row " << i % rows << " gave " << got << " batched but " << want
                    << " alone";
              }
            }
          }
        }
      }
    }
  }
}

// The AVX2 path must agree with the scalar one far more closely than with the float reference:
// both see the same quantized activations.
TEST(MatmulTest, Avx2MatchesScalar) {
  if (detected_isa() < Isa::kAvx2)
    GTEST_SKIP() << "no AVX2 on this CPU";
  ThreadPool pool(2);
  for (TensorType t : kAllTypes) {
    const Matrix m = make_matrix(t, 19, 1024, 11, true);
    const int64_t n = 9;
    auto x = random_floats(n * m.cols, 17);
    std::vector<float> ys(static_cast<size_t>(n * m.rows)), yv(ys.size());
    {
      ScopedIsa scope(Isa::kScalar);
      matmul(m.view(), x.data(), n, ys.data(), pool);
    }
    {
      ScopedIsa scope(Isa::kAvx2);
      matmul(m.view(), x.data(), n, yv.data(), pool);
    }
    // K-quants reduce each super-block to exact integers before any float operation, in the
    // same order on every path: the very same bits.
    const bool k_quant = gguf::type_traits(t).block_elems == 256;
    for (size_t i = 0; i < ys.size(); ++i) {
      ASSERT_NEAR(yv[i], ys[i], 1e-4 * std::fabs(ys[i]) + 1e-4) << name(t) << " at " << i;
      if (k_quant) {
        ASSERT_EQ(std::memcmp(&yv[i], &ys[i], sizeof(float)), 0)
            << name(t) << " at " << i << ": avx2 " << yv[i] << " scalar " << ys[i];
      }
    }
  }
}

// The VNNI tiles against the scalar path (same quantized activations, so only float rounding
// differs) and against the AVX2 path (bit for bit: same int32 block sums, same float ops), on
// odd shapes: row counts that leave 2-row and 1-row tails after the 8-row tiles, column counts
// of one and of an odd number of blocks, token counts that are not whole 8-token groups, and
// a token chunk starting mid-group (first = 1 via an offset y). Raw matrices put every byte
// value in the weights, Q8_0's -128 included.
TEST(MatmulTest, Avx512VnniMatchesScalarAndAvx2) {
  if (detected_isa() < Isa::kAvx512Vnni)
    GTEST_SKIP() << "no AVX-512 VNNI on this CPU (or GANTRY_NO_AVX512 is set)";
  ThreadPool pool1(1), pool2(2);
  const std::pair<int64_t, int64_t> shapes[] = {{1, 32},    {3, 96},   {11, 32}, {13, 224},
                                                {19, 1024}, {42, 288}, {75, 544}};
  for (TensorType t : kAllTypes) {
    for (bool raw : {false, true}) {
      for (auto [rows, cols] : shapes) {
        if (cols % gguf::type_traits(t).block_elems != 0)
          continue;
        const Matrix m = make_matrix(t, rows, cols, static_cast<uint32_t>(rows * 7 + cols), raw);
        for (int64_t n : {1, 4, 5, 8, 9, 15, 17, 70}) {
          auto x = random_floats(n * cols, static_cast<uint32_t>(n + rows));
          std::vector<float> ys(static_cast<size_t>(n * rows)), ya(ys.size()), yv(ys.size());
          for (ThreadPool *pool : {&pool1, &pool2}) {
            {
              ScopedIsa scope(Isa::kScalar);
              matmul(m.view(), x.data(), n, ys.data(), *pool);
            }
            {
              ScopedIsa scope(Isa::kAvx2);
              matmul(m.view(), x.data(), n, ya.data(), *pool);
            }
            {
              ScopedIsa scope(Isa::kAvx512Vnni);
              ASSERT_EQ(active_isa(), Isa::kAvx512Vnni);
              matmul(m.view(), x.data(), n, yv.data(), *pool);
            }
            const std::string what = name(t) + (raw ? " raw " : " ") + std::to_string(rows) + "x" +
                                     std::to_string(cols) + " n=" + std::to_string(n) +
                                     " threads=" + std::to_string(pool->size());
            // F16/BF16 sum in another order under AVX2 (kernels_avx2_half.cpp): not compared.
            const bool half = t == TensorType::kF16 || t == TensorType::kBF16;
            for (size_t i = 0; i < ys.size(); ++i) {
              ASSERT_NEAR(yv[i], ys[i], 1e-4 * std::fabs(ys[i]) + 1e-4) << what << " at " << i;
              if (!half) {
                ASSERT_EQ(std::memcmp(&yv[i], &ya[i], sizeof(float)), 0)
                    << what << " at " << i << ": vnni " << yv[i] << " avx2 " << ya[i];
              }
            }
          }
        }
      }
    }
  }
}

// The decode kernels (kernels_avx512_gemv.cpp) on matrices large enough to be split across
// threads, with row counts that leave partial 16-row tiles in every chunk: the AVX2 bits, and
// near the float reference.
TEST(MatmulTest, Avx512GemvThreadedMatchesAvx2) {
  if (detected_isa() < Isa::kAvx512Vnni)
    GTEST_SKIP() << "no AVX-512 VNNI on this CPU (or GANTRY_NO_AVX512 is set)";
  ThreadPool pool2(2), pool3(3);
  for (TensorType t : {TensorType::kQ8_0, TensorType::kQ4_0, TensorType::kF16, TensorType::kF32,
                       TensorType::kBF16}) {
    for (auto [rows, cols] : {std::pair<int64_t, int64_t>{309, 1024}, {77, 2048}, {250, 1056}}) {
      const Matrix m = make_matrix(t, rows, cols, static_cast<uint32_t>(rows + cols), true);
      for (int64_t n : {1, 2, 3}) {
        for (ThreadPool *pool : {&pool2, &pool3}) {
          check_matmul(m, n, *pool, static_cast<uint32_t>(n + 3),
                       name(t) + " gemv " + std::to_string(rows) + "x" + std::to_string(cols));
          auto x = random_floats(n * cols, static_cast<uint32_t>(n + 11));
          std::vector<float> ya(static_cast<size_t>(n * rows)), yv(ya.size());
          {
            ScopedIsa scope(Isa::kAvx2);
            matmul(m.view(), x.data(), n, ya.data(), *pool);
          }
          matmul(m.view(), x.data(), n, yv.data(), *pool);
          // F16/BF16 sum in another order under AVX2 (kernels_avx2_half.cpp): check_matmul
          // above holds them to the reference.
          if (t == TensorType::kF16 || t == TensorType::kBF16)
            continue;
          for (size_t i = 0; i < ya.size(); ++i) {
            ASSERT_EQ(std::memcmp(&yv[i], &ya[i], sizeof(float)), 0)
                << name(t) << " " << rows << "x" << cols << " n=" << n << " at " << i;
          }
        }
      }
    }
  }
}

// The K-quant decode kernels (kernels_avx512_kgemv.cpp, Q4_K and Q6_K x 1-3 tokens) give every
// output the bits of the AVX2 and scalar dot products and of the VNNI batch tiles (the same token
// inside a batch of 4 or more), on row counts that leave partial 16-row tiles in every thread's
// chunk, one to eight super-blocks per row, raw and quantized matrices, and 1-3 threads.
TEST(MatmulTest, Avx512KGemvSameBitsAsTilesAndAvx2) {
  if (detected_isa() < Isa::kAvx512Vnni)
    GTEST_SKIP() << "no AVX-512 VNNI on this CPU (or GANTRY_NO_AVX512 is set)";
  ThreadPool pool1(1), pool2(2), pool3(3);
  const std::pair<int64_t, int64_t> shapes[] = {{1, 256},  {15, 512},   {17, 256},
                                                {33, 768}, {309, 1024}, {250, 2048}};
  for (TensorType t : {TensorType::kQ4_K, TensorType::kQ6_K}) {
    for (bool raw : {false, true}) {
      for (auto [rows, cols] : shapes) {
        const Matrix m = make_matrix(t, rows, cols, static_cast<uint32_t>(rows * 3 + cols), raw);
        // Tokens 0..3 alone, then inside an 8-token batch (the VNNI tiles) as tokens 2..5.
        const int64_t n_max = 8;
        auto x = random_floats(n_max * cols, static_cast<uint32_t>(rows + cols + raw));
        std::vector<float> batch(static_cast<size_t>(n_max * rows));
        matmul(m.view(), x.data(), n_max, batch.data(), pool2);
        for (int64_t n : {1, 2, 3, 4}) {
          for (ThreadPool *pool : {&pool1, &pool2, &pool3}) {
            const int64_t first = 2;
            std::vector<float> ys(static_cast<size_t>(n * rows)), ya(ys.size()), yv(ys.size());
            {
              ScopedIsa scope(Isa::kScalar);
              matmul(m.view(), x.data() + first * cols, n, ys.data(), *pool);
            }
            {
              ScopedIsa scope(Isa::kAvx2);
              matmul(m.view(), x.data() + first * cols, n, ya.data(), *pool);
            }
            matmul(m.view(), x.data() + first * cols, n, yv.data(), *pool);
            const std::string what = name(t) + (raw ? " raw " : " ") + std::to_string(rows) + "x" +
                                     std::to_string(cols) + " n=" + std::to_string(n) +
                                     " threads=" + std::to_string(pool->size());
            for (size_t i = 0; i < yv.size(); ++i) {
              const float tiles = batch[static_cast<size_t>(first * rows) + i];
              ASSERT_EQ(std::memcmp(&yv[i], &ya[i], sizeof(float)), 0)
                  << what << " at " << i << ": vnni " << yv[i] << " avx2 " << ya[i];
              ASSERT_EQ(std::memcmp(&yv[i], &ys[i], sizeof(float)), 0)
                  << what << " at " << i << ": vnni " << yv[i] << " scalar " << ys[i];
              ASSERT_EQ(std::memcmp(&yv[i], &tiles, sizeof(float)), 0)
                  << what << " at " << i << ": alone " << yv[i] << " in a batch of 8 " << tiles;
            }
          }
          check_matmul(m, n, pool2, static_cast<uint32_t>(n + rows),
                       name(t) + " kgemv " + std::to_string(rows) + "x" + std::to_string(cols));
        }
      }
    }
  }
}

// matmul_multi (Q/K/V and gate/up in one call) gives every output the bits matmul() of its own
// matrix gives, whatever the row counts (chunks then straddle the matrices' boundaries), token
// count, thread count and instruction set.
TEST(MatmulTest, MultiSameBitsAsSeparate) {
  ThreadPool pool1(1), pool3(3);
  for (Isa isa : available_isas()) {
    ScopedIsa scope(isa);
    for (TensorType t : kAllTypes) {
      const int64_t cols = gguf::type_traits(t).block_elems == 256 ? 512 : 288;
      const Matrix m0 = make_matrix(t, 37, cols, 41, true);
      const Matrix m1 = make_matrix(t, 7, cols, 42, false);
      const Matrix m2 = make_matrix(t, 101, cols, 43, true);
      const WeightView v[3] = {m0.view(), m1.view(), m2.view()};
      ASSERT_TRUE(can_share_activations(v[0], v[2]));
      for (int64_t n : {1, 2, 3, 4, 9, 33}) {
        auto x = random_floats(n * cols, static_cast<uint32_t>(n) + 5);
        for (ThreadPool *pool : {&pool1, &pool3}) {
          std::vector<float> sep[3], multi[3];
          MatmulOut outs[3];
          for (int i = 0; i < 3; ++i) {
            sep[i].assign(static_cast<size_t>(n * v[i].rows), 0.0f);
            multi[i].assign(static_cast<size_t>(n * (v[i].rows + 2)), -777.0f);
            matmul(v[i], x.data(), n, sep[i].data(), *pool);
            outs[i].w = &v[i];
            outs[i].y = multi[i].data();
            outs[i].ldy = v[i].rows + 2;
          }
          matmul_multi(outs, 3, x.data(), n, *pool);
          for (int i = 0; i < 3; ++i) {
            for (int64_t tok = 0; tok < n; ++tok) {
              for (int64_t r = 0; r < v[i].rows + 2; ++r) {
                const float got = multi[i][static_cast<size_t>(tok * (v[i].rows + 2) + r)];
                if (r >= v[i].rows) {
                  ASSERT_EQ(got, -777.0f) << "padding written";
                  continue;
                }
                const float want = sep[i][static_cast<size_t>(tok * v[i].rows + r)];
                ASSERT_EQ(std::memcmp(&got, &want, sizeof got), 0)
                    << isa_name(isa) << " " << name(t) << " n=" << n << " threads=" << pool->size()
                    << " matrix " << i << " token " << tok << " row " << r;
              }
            }
          }
        }
      }
    }
  }
}

// GANTRY_NO_AVX512 and set_active_isa() clamp as documented: asking for more than the CPU
// offers gives what it does offer.
TEST(MatmulTest, SetActiveIsaClampsToDetected) {
  ScopedIsa scope(Isa::kAvx512Vnni);
  EXPECT_EQ(active_isa(), detected_isa());
  set_active_isa(Isa::kScalar);
  EXPECT_EQ(active_isa(), Isa::kScalar);
}

// Q8_0/Q4_0/Q4_1/Q5_0/Q5_1/IQ4_NL/Q4_K/Q5_K/Q6_K/F16/BF16 matrices repacked into the 16-row layouts
// (kernels.h, "repacked weights"): the layout round-trips row by row, and matmul over the packed
// view gives the row-major view's bits for decode (1-3 tokens) and batches, on one to three
// threads, odd block counts and row ranges of a packed matrix (fused Q/K/V); under AVX2 the packed
// view runs on unpacked rows, same bits. Then the same under AVX2, whose kernels read every packed
// type in place for up to 8 tokens (kernels_avx2_packed.cpp, kernels_avx2_kpacked.cpp), Q2_K and
// Q3_K too (which only AVX2 packs), and every integer type for 4 tokens or more (the packed
// prefill kernels' 4-token blocks, and remainders of 1, 2 and 3 tokens).
void packed_rows_give_the_row_major_bits(Isa isa) {
  ScopedIsa scoped(isa);
  ThreadPool pool1(1), pool2(2), pool3(3);
  const std::pair<int64_t, int64_t> shapes[] = {{16, 32},   {48, 96},  {272, 1024}, {64, 2080},
                                                {160, 544}, {32, 256}, {48, 768},   {64, 2304}};
  for (TensorType t : {TensorType::kQ8_0, TensorType::kQ4_0, TensorType::kQ4_1, TensorType::kQ5_0,
                       TensorType::kQ5_1, TensorType::kIQ4_NL, TensorType::kQ2_K, TensorType::kQ3_K,
                       TensorType::kQ4_K, TensorType::kQ5_K, TensorType::kQ6_K, TensorType::kF16,
                       TensorType::kBF16}) {
    for (bool raw : {false, true}) {
      for (auto [rows, cols] : shapes) {
        if (cols % gguf::type_traits(t).block_elems != 0)
          continue;
        const Matrix m = make_matrix(t, rows, cols, static_cast<uint32_t>(rows * 3 + cols), raw);
        const std::string what = name(t) + (raw ? " raw " : " ") + std::to_string(rows) + "x" +
                                 std::to_string(cols) + (isa == Isa::kAvx2 ? " (AVX2)" : "");
        if (isa == Isa::kAvx512Vnni && (t == TensorType::kQ2_K || t == TensorType::kQ3_K)) {
          // No AVX-512 kernels read them packed.
          ASSERT_FALSE(can_pack_rows16(m.view())) << what;
          continue;
        }
        ASSERT_TRUE(can_pack_rows16(m.view())) << what;
        ASSERT_EQ(packed_bytes(m.view()), m.data.size());
        std::vector<uint8_t> buf(m.data.size());
        const WeightView p = pack_rows16(m.view(), buf.data());
        ASSERT_TRUE(p.packed16);
        EXPECT_FALSE(can_pack_rows16(p)) << "packed twice";
        const size_t rb = row_bytes(t, cols);
        std::vector<uint8_t> row(rb);
        for (int64_t r = 0; r < rows; ++r) {
          unpack_row16(p, r, row.data());
          ASSERT_EQ(std::memcmp(row.data(), m.data.data() + r * rb, rb), 0) << what << " row " << r;
        }
        // Several rows at once: whole groups, and a range off the group boundary.
        for (auto [r0, r1] : {std::pair<int64_t, int64_t>{0, rows}, {16, rows}, {3, rows - 1}}) {
          if (r1 <= r0)
            continue;
          std::vector<uint8_t> some(static_cast<size_t>(r1 - r0) * rb);
          unpack_rows16(p, r0, r1, some.data());
          ASSERT_EQ(std::memcmp(some.data(), m.data.data() + r0 * rb, some.size()), 0)
              << what << " rows " << r0 << ".." << r1;
        }
        for (int64_t n : {1, 2, 3, 4, 5, 7, 8, 9, 17, 70}) {
          auto x = random_floats(n * cols, static_cast<uint32_t>(n + rows));
          std::vector<float> want(static_cast<size_t>(n * rows)), got(want.size());
          for (ThreadPool *pool : {&pool1, &pool2, &pool3}) {
            matmul(m.view(), x.data(), n, want.data(), *pool);
            std::fill(got.begin(), got.end(), -1.0f);
            matmul(p, x.data(), n, got.data(), *pool);
            const std::string at =
                what + " n=" + std::to_string(n) + " threads=" + std::to_string(pool->size());
            ASSERT_EQ(std::memcmp(got.data(), want.data(), want.size() * sizeof(float)), 0) << at;
            // Q/K/V as three row ranges of the one packed matrix (rows split at multiples of 16),
            // in one matmul_multi call: each part gives its rows' bits.
            if (rows >= 48) {
              const int64_t a_rows = rows / 16 / 2 * 16, b_rows = 16;
              WeightView parts[3] = {p, p, p};
              parts[0].rows = a_rows;
              parts[1].data = static_cast<const char *>(p.data) + a_rows * p.row_stride;
              parts[1].rows = b_rows;
              parts[2].data = static_cast<const char *>(p.data) + (a_rows + b_rows) * p.row_stride;
              parts[2].rows = rows - a_rows - b_rows;
              std::vector<float> multi(want.size(), -1.0f);
              MatmulOut outs[3];
              int64_t first = 0;
              for (int i = 0; i < 3; ++i) {
                outs[i] = {&parts[i], multi.data() + first, rows};
                first += parts[i].rows;
              }
              matmul_multi(outs, 3, x.data(), n, *pool);
              ASSERT_EQ(std::memcmp(multi.data(), want.data(), want.size() * sizeof(float)), 0)
                  << at << " (row ranges)";
            }
          }
          ScopedIsa avx2(Isa::kAvx2);
          matmul(m.view(), x.data(), n, want.data(), pool2);
          std::fill(got.begin(), got.end(), -1.0f);
          matmul(p, x.data(), n, got.data(), pool2);
          ASSERT_EQ(std::memcmp(got.data(), want.data(), want.size() * sizeof(float)), 0)
              << what << " n=" << n << " under AVX2";
        }
      }
    }
  }
}

TEST(MatmulTest, PackedRowsGiveTheRowMajorBits) {
  if (detected_isa() < Isa::kAvx512Vnni)
    GTEST_SKIP() << "no AVX-512 VNNI on this CPU (or GANTRY_NO_AVX512 is set)";
  packed_rows_give_the_row_major_bits(Isa::kAvx512Vnni);
}

TEST(MatmulTest, PackedRowsGiveTheRowMajorBitsUnderAvx2) {
  if (detected_isa() < Isa::kAvx2)
    GTEST_SKIP() << "no AVX2 on this CPU";
  packed_rows_give_the_row_major_bits(Isa::kAvx2);
}

// Under AVX2 an F16/BF16 output is one fma chain over the columns in order
// (kernels_avx2_half.cpp), which std::fma in a loop computes too: packed (k_major, read in place)
// and row-major, decode-sized calls (the 4- and 2-group tiles) and prefill-sized ones (6-token
// tiles and every remainder), row counts off the 16-row groups, one to three threads.
TEST(MatmulTest, HalfOutputsAreOneFmaChainUnderAvx2) {
  if (detected_isa() < Isa::kAvx2)
    GTEST_SKIP() << "no AVX2 on this CPU";
  ScopedIsa scoped(Isa::kAvx2);
  ThreadPool pool1(1), pool3(3);
  for (TensorType t : {TensorType::kF16, TensorType::kBF16}) {
    for (auto [rows, cols] :
         {std::pair<int64_t, int64_t>{80, 96}, {37, 40}, {256, 520}, {7, 8}, {21, 13}}) {
      const Matrix m = make_matrix(t, rows, cols, static_cast<uint32_t>(rows + cols), true);
      std::vector<uint8_t> buf(m.data.size());
      WeightView views[2] = {m.view(), m.view()};
      if (can_pack_rows16(m.view())) {
        views[1] = pack_rows16(m.view(), buf.data());
        ASSERT_TRUE(views[1].k_major) << name(t);
      }
      for (int64_t n : {1, 2, 3, 4, 5, 6, 7, 13, 40}) {
        auto x = random_floats(n * cols, static_cast<uint32_t>(n * 5 + rows));
        std::vector<float> want(static_cast<size_t>(n * rows));
        for (int64_t tok = 0; tok < n; ++tok) {
          for (int64_t r = 0; r < rows; ++r) {
            float acc = 0;
            for (int64_t k = 0; k < cols; ++k)
              acc = std::fma(m.dequant[static_cast<size_t>(r * cols + k)],
                             x[static_cast<size_t>(tok * cols + k)], acc);
            want[static_cast<size_t>(tok * rows + r)] = acc;
          }
        }
        for (const WeightView &v : views) {
          for (ThreadPool *pool : {&pool1, &pool3}) {
            std::vector<float> got(want.size(), -1.0f);
            matmul(v, x.data(), n, got.data(), *pool);
            for (size_t i = 0; i < want.size(); ++i) {
              ASSERT_EQ(std::memcmp(&got[i], &want[i], sizeof(float)), 0)
                  << name(t) << " " << rows << "x" << cols << (v.packed16 ? " packed" : "")
                  << " n=" << n << " threads=" << pool->size() << " at " << i << ": " << got[i]
                  << " against " << want[i];
            }
          }
        }
        if (views[1].packed16) {
          // The portable kernels read the column-major groups unpacked: their own bits.
          ScopedIsa scalar(Isa::kScalar);
          std::vector<float> rows_bits(want.size()), packed_bits(want.size(), -1.0f);
          matmul(views[0], x.data(), n, rows_bits.data(), pool3);
          matmul(views[1], x.data(), n, packed_bits.data(), pool3);
          ASSERT_EQ(std::memcmp(rows_bits.data(), packed_bits.data(), want.size() * sizeof(float)),
                    0)
              << name(t) << " " << rows << "x" << cols << " n=" << n << " (scalar)";
        }
      }
    }
  }
}

// The packed kernels sum products in int16 before the scale (kernels_avx2_kpacked.cpp and
// kernels_avx2_packed.cpp state the bounds): every quant at its largest value against activations
// of +-127 reaches them, which random blocks almost never do. Packed and row-major must still
// agree bit for bit.
TEST(MatmulTest, PackedQuantsAtTheirLargestValuesKeepTheBits) {
  if (detected_isa() < Isa::kAvx2)
    GTEST_SKIP() << "no AVX2 on this CPU";
  ThreadPool pool(2);
  const int64_t rows = 32, cols = 512;
  for (Isa isa : {Isa::kAvx2, Isa::kAvx512Vnni}) {
    if (detected_isa() < isa)
      continue;
    ScopedIsa scoped(isa);
    for (TensorType t :
         {TensorType::kQ8_0, TensorType::kIQ4_NL, TensorType::kQ4_0, TensorType::kQ4_1,
          TensorType::kQ5_0, TensorType::kQ5_1, TensorType::kQ2_K, TensorType::kQ3_K,
          TensorType::kQ4_K, TensorType::kQ5_K, TensorType::kQ6_K}) {
      Matrix m{t, rows, cols, std::vector<uint8_t>(row_bytes(t, cols) * rows, 0xFF), {}};
      const size_t block = gguf::type_traits(t).block_bytes;
      const uint16_t d = fp32_to_fp16(0.01f);
      for (size_t off = 0; off < m.data.size(); off += block) {
        for (size_t at : fp16_fields(t))
          std::memcpy(&m.data[off + at], &d, 2);
      }
      if (!can_pack_rows16(m.view()))
        continue; // AVX-512 keeps Q2_K/Q3_K row-major
      std::vector<uint8_t> buf(m.data.size());
      const WeightView p = pack_rows16(m.view(), buf.data());
      for (float sign : {1.0f, -1.0f}) {
        for (int64_t n : {1, 8, 64}) {
          const std::vector<float> x(static_cast<size_t>(n * cols), sign);
          std::vector<float> want(static_cast<size_t>(n * rows)), got(want.size(), -1.0f);
          matmul(m.view(), x.data(), n, want.data(), pool);
          matmul(p, x.data(), n, got.data(), pool);
          ASSERT_EQ(std::memcmp(got.data(), want.data(), want.size() * sizeof(float)), 0)
              << name(t) << " n=" << n << " x=" << sign
              << (isa == Isa::kAvx2 ? " (AVX2)" : " (AVX-512)");
        }
      }
    }
  }
}

// A packed matrix sharing a matmul_multi call with an unpackable one (see below), under isa.
void packed_rows_off_the_group_boundary_run_unpacked(Isa isa) {
  ScopedIsa scoped(isa);
  ThreadPool pool2(2), pool3(3);
  const int64_t cols = 512;
  const Matrix odd = make_matrix(TensorType::kQ8_0, 40, cols, 5, true);
  const Matrix big = make_matrix(TensorType::kQ8_0, 528, cols, 6, true);
  ASSERT_FALSE(can_pack_rows16(odd.view()));
  std::vector<uint8_t> buf(big.data.size());
  const WeightView p = pack_rows16(big.view(), buf.data());
  const WeightView o = odd.view();
  for (int64_t n : {1, 3, 8, 20}) {
    auto x = random_floats(n * cols, static_cast<uint32_t>(n));
    for (ThreadPool *pool : {&pool2, &pool3}) {
      std::vector<float> want_o(static_cast<size_t>(n * 40)), want_p(static_cast<size_t>(n * 528));
      matmul(o, x.data(), n, want_o.data(), *pool);
      matmul(big.view(), x.data(), n, want_p.data(), *pool);
      std::vector<float> got_o(want_o.size(), -1.0f), got_p(want_p.size(), -1.0f);
      const MatmulOut outs[2] = {{&o, got_o.data(), 40}, {&p, got_p.data(), 528}};
      matmul_multi(outs, 2, x.data(), n, *pool);
      ASSERT_EQ(std::memcmp(got_o.data(), want_o.data(), want_o.size() * sizeof(float)), 0)
          << "n=" << n;
      ASSERT_EQ(std::memcmp(got_p.data(), want_p.data(), want_p.size() * sizeof(float)), 0)
          << "n=" << n;
    }
  }
}

// A packed matrix sharing a matmul_multi call with an unpackable one whose row count is not a
// multiple of 16 gets row chunks that do not start on its 16-row groups: those run on unpacked
// rows, and every output keeps the bits of its own matmul.
// (Both ISAs that pack.)
TEST(MatmulTest, PackedRowsOffTheGroupBoundaryRunUnpacked) {
  if (detected_isa() < Isa::kAvx2)
    GTEST_SKIP() << "no AVX2 on this CPU";
  for (Isa isa : {Isa::kAvx2, Isa::kAvx512Vnni}) {
    if (detected_isa() < isa)
      continue;
    SCOPED_TRACE(isa == Isa::kAvx2 ? "AVX2" : "AVX-512 VNNI");
    packed_rows_off_the_group_boundary_run_unpacked(isa);
  }
}
} // namespace
} // namespace gantry::engine::kernels
