// The matmul driver: quantizes the activations once, then splits weight rows across the pool.
#include <algorithm>
#include <cassert>
#include <cstring>
#include <vector>

#include "engine/kernels/kernels.h"
#include "engine/kernels/kernels_impl.h"
#include "engine/kernels/llama_order.h"

namespace gantry::engine::kernels {
namespace {

// Below this many multiply-adds a job finishes in a few microseconds and waking the pool would
// cost as much as the work (the bundled 64-dim model lives entirely down here).
constexpr int64_t kMinParallelMacs = int64_t{1} << 17;
// Bytes of activations (int8 or float, per token row) one pass over a chunk of weight rows
// touches, and bytes of weights in such a chunk: both sized to share a 512 KiB L2 (Zen3), so
// that for a long prompt each weight byte comes from DRAM once and is reused from cache.
constexpr int64_t kActChunkBytes = 128 * 1024;
constexpr int64_t kWeightChunkBytes = 192 * 1024;
constexpr int64_t kPackedActChunkBytes = 384 * 1024;

// Scratch for quantized activations, owned by the thread that calls matmul (the engine thread)
// and only read by pool workers during that call. Grows to the largest call, then stays.
struct ActScratch {
  std::vector<int8_t> qs;
  std::vector<float> d;
  std::vector<int16_t> bsums;
  std::vector<int32_t> sums;
  std::vector<int8_t> qs8;
  std::vector<float> d8;
  std::vector<int32_t> sum8;
};
thread_local ActScratch t_scratch;

template <typename T> T *ensure(std::vector<T> &v, int64_t n) {
  if (static_cast<int64_t>(v.size()) < n)
    v.resize(static_cast<size_t>(n));
  return v.data();
}

#if defined(GANTRY_KERNELS_HAVE_AVX2)
// AVX-512 VNNI shares the AVX2 activation formats (and kernels, but for the Q8 tiles).
inline bool use_avx2() { return active_isa() != Isa::kScalar; }
#endif

// Token groups [g0, g1) of a.qs/a.d into the interleaved layout described at Activations.
void pack_groups(const Activations &a, int64_t n_tokens, int64_t g0, int64_t g1, int8_t *qs8,
                 float *d8, int32_t *sum8) {
  const int64_t cols = a.cols, nb = cols / kQK;
  for (int64_t g = g0; g < g1; ++g) {
    for (int64_t j = 0; j < kTokGroup; ++j) {
      const int64_t t = g * kTokGroup + j;
      for (int64_t b = 0; b < nb; ++b) {
        const int64_t at = (g * nb + b) * kTokGroup + j;
        int8_t *out = qs8 + (g * nb + b) * kTokGroup * kQK + j * 4;
        if (t >= n_tokens) {
          for (int k = 0; k < kQK / 4; ++k)
            std::memset(out + k * kTokGroup * 4, 0, 4);
          d8[at] = 0;
          sum8[at] = 0;
          continue;
        }
        const int8_t *in = a.qs + t * cols + b * kQK;
        int32_t sum = 0;
        for (int i = 0; i < kQK; ++i)
          sum += in[i];
        for (int k = 0; k < kQK / 4; ++k)
          std::memcpy(out + k * kTokGroup * 4, in + 4 * k, 4);
        d8[at] = a.d[t * nb + b];
        sum8[at] = sum;
      }
    }
  }
}

// Whether the kernels of the active ISA read rows [r0, r1) of packed matrix w in place for a call
// of n_tokens: the AVX-512 VNNI ones always, the AVX2 ones for decode (avx2::matmul_rows_packed)
// and for the prefill of the types avx2::packed_prefill names, both on whole 16-row groups.
bool packed_kernels_take([[maybe_unused]] const WeightView &w, [[maybe_unused]] int64_t r0,
                         [[maybe_unused]] int64_t r1, [[maybe_unused]] int64_t n_tokens) {
#if defined(GANTRY_KERNELS_HAVE_AVX2)
  if (r0 % 16 != 0 || r1 % 16 != 0)
    return false;
  // F16/BF16 groups are laid out for one ISA's kernels (kernels.h, "repacked weights").
  if (w.type == TensorType::kF16 || w.type == TensorType::kBF16) {
    return active_isa() == Isa::kAvx2         ? w.k_major
           : active_isa() == Isa::kAvx512Vnni ? !w.k_major
                                              : false;
  }
  return active_isa() == Isa::kAvx512Vnni ||
         (active_isa() == Isa::kAvx2 &&
          (n_tokens <= kPackedMaxTokens ? avx2::packs_rows16(w.type)
                                        : avx2::packed_prefill(w.type)));
#else
  return false;
#endif
}

// Whether a prefill call over packed w runs on the AVX2 packed prefill kernels, which hold one
// super-block of weights and of every token's activations in L1 at a time and so take larger
// token chunks (the activations only need to stay in L2 from one row group to the next).
bool packed_prefill_reads([[maybe_unused]] const WeightView &w, [[maybe_unused]] int64_t n_tokens) {
#if defined(GANTRY_KERNELS_HAVE_AVX2)
  return w.packed16 && active_isa() == Isa::kAvx2 && n_tokens > kPackedMaxTokens &&
         avx2::packed_prefill(w.type);
#else
  return false;
#endif
}

// Rows [r0, r1) of packed matrix w unpacked to row-major scratch of the calling thread, for the
// kernels that cannot read the packed layout.
WeightView unpack_rows(const WeightView &w, int64_t r0, int64_t r1) {
  thread_local std::vector<char> t_rows;
  const size_t stride = row_bytes(w.type, w.cols);
  char *out = ensure(t_rows, static_cast<int64_t>(stride) * (r1 - r0));
  unpack_rows16(w, r0, r1, out);
  return make_weight_view(w.type, out, r1 - r0, w.cols);
}

void pack_tokens(Activations &a, int64_t n_tokens, ThreadPool &pool) {
  auto &s = t_scratch;
  const int64_t groups = (n_tokens + kTokGroup - 1) / kTokGroup;
  const int64_t nb = a.cols / kQK;
  int8_t *qs8 = ensure(s.qs8, groups * kTokGroup * a.cols);
  float *d8 = ensure(s.d8, groups * kTokGroup * nb);
  int32_t *sum8 = ensure(s.sum8, groups * kTokGroup * nb);
  a.qs8 = qs8;
  a.d8 = d8;
  a.sum8 = sum8;
  if (n_tokens * a.cols < 65536) {
    pack_groups(a, n_tokens, 0, groups, qs8, d8, sum8);
  } else {
    pool.parallel_for(groups, 1, [&](int64_t b, int64_t e, int) {
      pack_groups(a, n_tokens, b, e, qs8, d8, sum8);
    });
  }
}

// Activations::sums for tokens [t0, t1).
void block_sums(const Activations &a, int64_t t0, int64_t t1, int32_t *sums) {
  const int64_t nb = a.cols / kQK;
  for (int64_t t = t0; t < t1; ++t) {
    for (int64_t b = 0; b < nb; ++b) {
      const int8_t *q = a.qs + t * a.cols + b * kQK;
      int32_t s = 0;
      for (int i = 0; i < kQK; ++i)
        s += q[i];
      sums[t * nb + b] = s;
    }
  }
}

// Token groups [g0, g1) of Q8_K activations for the AVX-512 K-quant tiles: qs8 as for Q8, d8 and
// sum8 as described at Activations.
void pack_groups_k(const Activations &a, int64_t n_tokens, int64_t g0, int64_t g1, int8_t *qs8,
                   float *d8, int32_t *sum8) {
  const int64_t cols = a.cols, nb = cols / kQK, nbk = cols / kQKK;
  for (int64_t g = g0; g < g1; ++g) {
    for (int64_t j = 0; j < kTokGroup; ++j) {
      const int64_t t = g * kTokGroup + j;
      const bool pad = t >= n_tokens;
      for (int64_t b = 0; b < nb; ++b) {
        int8_t *out = qs8 + (g * nb + b) * kTokGroup * kQK + j * 4;
        for (int k = 0; k < kQK / 4; ++k) {
          if (pad) {
            std::memset(out + k * kTokGroup * 4, 0, 4);
          } else {
            std::memcpy(out + k * kTokGroup * 4, a.qs + t * cols + b * kQK + 4 * k, 4);
          }
        }
      }
      for (int64_t s = 0; s < nbk; ++s) {
        d8[(g * nbk + s) * kTokGroup + j] = pad ? 0.0f : a.d[t * nbk + s];
        for (int h = 0; h < 16; ++h) {
          sum8[((g * nbk + s) * 16 + h) * kTokGroup + j] =
              pad ? 0 : a.bsums[t * (cols / 16) + s * 16 + h];
        }
      }
    }
  }
}

void pack_tokens_k(Activations &a, int64_t n_tokens, ThreadPool &pool) {
  auto &s = t_scratch;
  const int64_t groups = (n_tokens + kTokGroup - 1) / kTokGroup;
  const int64_t nbk = a.cols / kQKK;
  int8_t *qs8 = ensure(s.qs8, groups * kTokGroup * a.cols);
  float *d8 = ensure(s.d8, groups * kTokGroup * nbk);
  int32_t *sum8 = ensure(s.sum8, groups * kTokGroup * nbk * 16);
  a.qs8 = qs8;
  a.d8 = d8;
  a.sum8 = sum8;
  if (n_tokens * a.cols < 65536) {
    pack_groups_k(a, n_tokens, 0, groups, qs8, d8, sum8);
  } else {
    pool.parallel_for(groups, 1, [&](int64_t b, int64_t e, int) {
      pack_groups_k(a, n_tokens, b, e, qs8, d8, sum8);
    });
  }
}

void quantize_tokens(TensorType type, const float *x, int64_t n_tokens, int64_t cols,
                     Activations &a, ThreadPool &pool) {
  const ActKind kind = act_kind(type);
  a.x = x;
  a.cols = cols;
  if (kind == ActKind::kFloat)
    return;
  auto &s = t_scratch;
  int8_t *qs = ensure(s.qs, n_tokens * cols);
  const int64_t block = kind == ActKind::kQ8 ? kQK : kQKK;
  float *d = ensure(s.d, n_tokens * cols / block);
  int16_t *bsums = kind == ActKind::kQ8K ? ensure(s.bsums, n_tokens * cols / 16) : nullptr;
  int32_t *sums = needs_block_sums(type) ? ensure(s.sums, n_tokens * cols / kQK) : nullptr;
  a.qs = qs;
  a.d = d;
  a.bsums = bsums;
  a.sums = sums;
#if defined(GANTRY_KERNELS_HAVE_AVX2)
  const bool avx2 = use_avx2();
#endif
  auto quantize = [&](int64_t t) {
    const float *xt = x + t * cols;
    if (kind == ActKind::kQ8) {
#if defined(GANTRY_KERNELS_HAVE_AVX2)
      if (avx2) {
        avx2::quantize_act_q8(xt, qs + t * cols, d + t * cols / kQK, cols);
        return;
      }
#endif
      scalar::quantize_act_q8(xt, qs + t * cols, d + t * cols / kQK, cols);
    } else {
#if defined(GANTRY_KERNELS_HAVE_AVX2)
      if (avx2) {
        avx2::quantize_act_q8k(xt, qs + t * cols, d + t * cols / kQKK, bsums + t * cols / 16, cols);
        return;
      }
#endif
      scalar::quantize_act_q8k(xt, qs + t * cols, d + t * cols / kQKK, bsums + t * cols / 16, cols);
    }
  };
  auto one = [&](int64_t t) {
    quantize(t);
    if (sums != nullptr)
      block_sums(a, t, t + 1, sums);
  };
  if (n_tokens * cols < 65536) {
    for (int64_t t = 0; t < n_tokens; ++t)
      one(t);
  } else {
    pool.parallel_for(n_tokens, 1, [&](int64_t b, int64_t e, int) {
      for (int64_t t = b; t < e; ++t)
        one(t);
    });
  }
}

} // namespace

WeightView make_weight_view(TensorType type, const void *data, int64_t rows, int64_t cols) {
  return WeightView{type, data, rows, cols, row_bytes(type, cols)};
}

void matmul(const WeightView &w, const float *x, int64_t n_tokens, float *y, ThreadPool &pool,
            const uint8_t *single) {
  matmul(w, x, n_tokens, y, w.rows, pool, single);
}

void matmul(const WeightView &w, const float *x, int64_t n_tokens, float *y, int64_t ldy,
            ThreadPool &pool, const uint8_t *single) {
  const MatmulOut out{&w, y, ldy};
  matmul_multi(&out, 1, x, n_tokens, pool, single);
}

bool can_share_activations(const WeightView &a, const WeightView &b) {
  return a.type == b.type && a.cols == b.cols && a.row_stride == b.row_stride;
}

void matmul_multi(const MatmulOut *outs, int n_outs, const float *x, int64_t n_tokens,
                  ThreadPool &pool, const uint8_t *single) {
  assert(n_outs >= 1);
  const WeightView &w = *outs[0].w;
  int64_t total_rows = 0;
  for (int i = 0; i < n_outs; ++i) {
    assert(can_share_activations(w, *outs[i].w) && outs[i].ldy >= outs[i].w->rows);
    total_rows += outs[i].w->rows;
  }
  assert(is_supported(w.type));
  if (n_tokens <= 0 || total_rows <= 0)
    return;
  if (w.type == TensorType::kF32) {
    // llama.cpp's summation order (llama_order.h): F32 models give its logits bit for bit.
    llama_order::matmul_f32(outs, n_outs, x, n_tokens, pool, single);
    return;
  }
  Activations a;
  quantize_tokens(w.type, x, n_tokens, w.cols, a, pool);

#if defined(GANTRY_KERNELS_HAVE_AVX2)
  const Isa isa = active_isa();
  const auto rows_fn = isa == Isa::kAvx512Vnni ? &avx512vnni::matmul_rows
                       : isa == Isa::kAvx2     ? &avx2::matmul_rows
                                               : &scalar::matmul_rows;
  // The kernels of the 32-element block types read the interleaved token groups and their sums.
  if (use_avx2() && act_kind(w.type) == ActKind::kQ8)
    pack_tokens(a, n_tokens, pool);
  // The VNNI K-quant tiles take batches of at least 4 tokens (fewer go to the dot products).
  if (isa == Isa::kAvx512Vnni && n_tokens >= 4 &&
      (w.type == TensorType::kQ4_K || w.type == TensorType::kQ5_K || w.type == TensorType::kQ6_K))
    pack_tokens_k(a, n_tokens, pool);
#else
  const auto rows_fn = &scalar::matmul_rows;
#endif
  const int64_t act_row_bytes = w.cols * (act_kind(w.type) == ActKind::kFloat ? 4 : 1);
  // Whole token groups, so that a group is never split between two chunks.
  const int64_t act_chunk_bytes =
      packed_prefill_reads(w, n_tokens) ? kPackedActChunkBytes : kActChunkBytes;
  const int64_t token_chunk =
      std::max<int64_t>(kTokGroup, act_chunk_bytes / act_row_bytes / kTokGroup * kTokGroup);
  // Rows [r0, r1) of matrix i.
  auto work_one = [&](int i, int64_t r0, int64_t r1) {
    const MatmulOut &o = outs[i];
    if (o.w->packed16 && !packed_kernels_take(*o.w, r0, r1, n_tokens)) {
      const WeightView rows = unpack_rows(*o.w, r0, r1);
      for (int64_t t0 = 0; t0 < n_tokens; t0 += token_chunk)
        rows_fn(rows, a, t0, std::min(n_tokens, t0 + token_chunk), 0, r1 - r0, o.y + r0, o.ldy);
      return;
    }
    for (int64_t t0 = 0; t0 < n_tokens; t0 += token_chunk) {
      rows_fn(*o.w, a, t0, std::min(n_tokens, t0 + token_chunk), r0, r1, o.y, o.ldy);
    }
  };
  // Rows [r0, r1) of the matrices stacked in order (a chunk may span a boundary).
  auto work = [&](int64_t r0, int64_t r1) {
    int64_t base = 0;
    for (int i = 0; i < n_outs && r0 < r1; ++i) {
      const int64_t rows = outs[i].w->rows;
      if (r0 < base + rows) {
        const int64_t e = std::min(r1, base + rows);
        work_one(i, r0 - base, e - base);
        r0 = e;
      }
      base += rows;
    }
  };
  if (total_rows * w.cols * n_tokens < kMinParallelMacs || pool.size() == 1) {
    // Alone, still go through cache-sized row chunks when there are several token chunks.
    const int64_t step = w.packed16 ? 16 : 8;
    const int64_t rows_per_chunk =
        n_tokens > token_chunk
            ? std::max<int64_t>(step, kWeightChunkBytes / static_cast<int64_t>(w.row_stride) /
                                          step * step)
            : total_rows;
    for (int64_t r0 = 0; r0 < total_rows; r0 += rows_per_chunk)
      work(r0, std::min(total_rows, r0 + rows_per_chunk));
    return;
  }
  if (n_tokens < 4) {
    // Decode streams the weights once and every chunk costs what its bytes do: chunks that
    // shrink as the rows run out leave the threads finishing within a small chunk of each
    // other. With a quarter of each thread's rows per chunk, the waiting in the pool was 5.7 %
    // of the Q8_0 decode kernel's time (perf samples, 256 tokens of the 1.1B); shrinking
    // chunks of at least two 16-row tiles or groups (whole pairs for the Q8_0 kernel; the
    // matrix x vector kernels of kernels_avx512_gemv.cpp take whole 16-row tiles), 3.4 %.
    pool.parallel_for_guided(total_rows, 32, [&](int64_t r0, int64_t r1, int) { work(r0, r1); });
    return;
  }
  // Chunks are multiples of 8 rows (the kernels' widest row tile); several per thread so that a
  // thread slowed by other processes on the machine does not leave the others idle at the end.
  int64_t grain = total_rows / (pool.size() * 4);
  if (n_tokens > token_chunk) {
    // Several token chunks per row chunk: keep the row chunk cache-sized.
    grain = std::min<int64_t>(grain, kWeightChunkBytes / static_cast<int64_t>(w.row_stride));
  }
  // Packed matrices: whole 16-row groups.
  const int64_t tile = w.packed16 ? 16 : 8;
  grain = std::max<int64_t>(tile, (grain + tile - 1) / tile * tile);
  pool.parallel_for(total_rows, grain, [&](int64_t r0, int64_t r1, int) { work(r0, r1); });
}

} // namespace gantry::engine::kernels
