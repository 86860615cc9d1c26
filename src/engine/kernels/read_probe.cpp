// Plain reads of memory, the ceiling decode is judged against (issue 16: "decode reaching >= 90%
// of the measured read bandwidth"): bench/read_bw reads a buffer of its own with these, and
// `gantry bench engine` reads the very weight bytes a decode step reads, between decode steps.
#include <immintrin.h>

#include "engine/kernels/kernels.h"

namespace gantry::engine::kernels {
namespace {

constexpr size_t kBlock = size_t{64} << 10;

__attribute__((target("avx2"))) uint64_t read_avx2(const uint8_t *p, size_t bytes,
                                                   ReadPattern pat) {
  __m256i acc[8];
  for (auto &a : acc)
    a = _mm256_setzero_si256();
  const int streams = pat.streams < 1 ? 1 : pat.streams;
  const size_t span = kBlock * static_cast<size_t>(streams);
  // Whole 32-byte loads from a 32-byte boundary on (the bytes before it are read one by one).
  size_t head = (32 - reinterpret_cast<uintptr_t>(p) % 32) % 32;
  if (head > bytes)
    head = bytes;
  uint64_t s = 0;
  for (size_t i = 0; i < head; ++i)
    s += p[i];
  p += head;
  bytes -= head;
  size_t base = 0;
  for (; base + span <= bytes; base += span) {
    for (size_t off = 0; off < kBlock; off += 64) {
      for (int k = 0; k < streams; ++k) {
        const uint8_t *q = p + base + static_cast<size_t>(k) * kBlock + off;
        if (pat.prefetch != 0)
          _mm_prefetch(reinterpret_cast<const char *>(q + pat.prefetch), _MM_HINT_T0);
        acc[k & 7] =
            _mm256_add_epi64(acc[k & 7], _mm256_load_si256(reinterpret_cast<const __m256i *>(q)));
        acc[(k + 1) & 7] = _mm256_add_epi64(
            acc[(k + 1) & 7], _mm256_load_si256(reinterpret_cast<const __m256i *>(q + 32)));
      }
    }
  }
  for (; base + 32 <= bytes; base += 32) // the part shorter than one span: one stream
    acc[0] =
        _mm256_add_epi64(acc[0], _mm256_load_si256(reinterpret_cast<const __m256i *>(p + base)));
  for (; base < bytes; ++base)
    s += p[base];
  __m256i t = acc[0];
  for (int i = 1; i < 8; ++i)
    t = _mm256_add_epi64(t, acc[i]);
  alignas(32) uint64_t out[4];
  _mm256_store_si256(reinterpret_cast<__m256i *>(out), t);
  return s + out[0] + out[1] + out[2] + out[3];
}

uint64_t read_scalar(const uint8_t *p, size_t bytes) {
  uint64_t s0 = 0, s1 = 0;
  size_t i = 0;
  for (; i + 16 <= bytes; i += 16) {
    uint64_t a, b;
    __builtin_memcpy(&a, p + i, 8);
    __builtin_memcpy(&b, p + i + 8, 8);
    s0 += a;
    s1 += b;
  }
  for (; i < bytes; ++i)
    s0 += p[i];
  return s0 + s1;
}

} // namespace

std::span<const ReadPattern> read_patterns() {
  return std::span<const ReadPattern>(kReadPatterns)
      .first(active_isa() == Isa::kScalar ? 1 : std::size(kReadPatterns));
}

std::string read_pattern_name(ReadPattern pattern) {
  return std::to_string(pattern.streams) + "x" +
         (pattern.prefetch != 0 ? "+pf" + std::to_string(pattern.prefetch) : "");
}

uint64_t read_bytes(const void *p, size_t bytes, ReadPattern pattern) {
  const auto *b = static_cast<const uint8_t *>(p);
  return active_isa() == Isa::kScalar ? read_scalar(b, bytes) : read_avx2(b, bytes, pattern);
}

} // namespace gantry::engine::kernels
