// Internal to the kernels library: ggml's quantization block layouts, exactly as GGUF files store
// them (ggml-common.h), and the small decoders of their packed scales. Written from the format's
// definition; every layout is pinned by hand-built blocks in tests/engine/kernels.
#pragma once

#include <bit>
#include <cstdint>
#include <cstring>

namespace gantry::engine::kernels {

constexpr int kQK = 32;   // elements per Q8_0/Q4_0/Q4_1/Q5_0/Q5_1/IQ4_NL block
constexpr int kQKK = 256; // elements per K-quant super-block

// ---- 32-element blocks ------------------------------------------------------------------------
// The 4-bit ones share one nibble order: element i in the low nibble of qs[i], element i + 16 in
// the high nibble. The 5-bit ones add bit i of the little-endian 32-bit word qh as element i's
// fifth bit.

struct BlockQ8_0 {
  uint16_t d; // fp16 scale
  int8_t qs[kQK];
};
static_assert(sizeof(BlockQ8_0) == 34);

struct BlockQ4_0 { // value = d * (q - 8)
  uint16_t d;
  uint8_t qs[kQK / 2];
};
static_assert(sizeof(BlockQ4_0) == 18);

struct BlockQ4_1 { // value = d * q + m
  uint16_t d;
  uint16_t m;
  uint8_t qs[kQK / 2];
};
static_assert(sizeof(BlockQ4_1) == 20);

struct BlockQ5_0 { // value = d * (q - 16)
  uint16_t d;
  uint8_t qh[4];
  uint8_t qs[kQK / 2];
};
static_assert(sizeof(BlockQ5_0) == 22);

struct BlockQ5_1 { // value = d * q + m
  uint16_t d;
  uint16_t m;
  uint8_t qh[4];
  uint8_t qs[kQK / 2];
};
static_assert(sizeof(BlockQ5_1) == 24);

struct BlockIQ4_NL { // value = d * kIq4nlValues[q]
  uint16_t d;
  uint8_t qs[kQK / 2];
};
static_assert(sizeof(BlockIQ4_NL) == 18);

// The 16 levels of IQ4_NL (a non-uniform grid, denser near zero).
inline constexpr int8_t kIq4nlValues[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                            1,    13,   25,  38,  53,  69,  89,  113};

// ---- K-quant super-blocks (256 elements) ------------------------------------------------------

struct BlockQ2_K { // value = d * sc * q - dmin * m, q in 0..3, per 16 elements a 4-bit sc and m
  uint8_t scales[kQKK / 16]; // low nibble: sc, high nibble: m
  uint8_t qs[kQKK / 4];      // see q2_k_value
  uint16_t d;
  uint16_t dmin;
};
static_assert(sizeof(BlockQ2_K) == 84);

struct BlockQ3_K {         // value = d * (sc - 32) * (q - 4 * !hbit), per 16 elements a 6-bit sc
  uint8_t hmask[kQKK / 8]; // the high bits; see q3_k_value
  uint8_t qs[kQKK / 4];    // the low 2 bits, packed like Q2_K's
  uint8_t scales[12];      // see q3_k_scale
  uint16_t d;
};
static_assert(sizeof(BlockQ3_K) == 110);

struct BlockQ4_K {      // value = d * sc * q - dmin * m, per 32 elements a 6-bit sc and m
  uint16_t d;           // fp16 scale of the 6-bit sub-block scales
  uint16_t dmin;        // fp16 scale of the 6-bit sub-block mins
  uint8_t scales[12];   // 8 scales and 8 mins, 6 bits each (see scale_min_k4)
  uint8_t qs[kQKK / 2]; // per 64 elements: 32 bytes, low nibbles first 32, high nibbles next 32
};
static_assert(sizeof(BlockQ4_K) == 144);

struct BlockQ5_K { // Q4_K plus a fifth bit: element 32j + l has bit j of qh[l]
  uint16_t d;
  uint16_t dmin;
  uint8_t scales[12];
  uint8_t qh[kQKK / 8];
  uint8_t qs[kQKK / 2];
};
static_assert(sizeof(BlockQ5_K) == 176);

struct BlockQ6_K {
  uint8_t ql[kQKK / 2];     // low 4 bits
  uint8_t qh[kQKK / 4];     // high 2 bits
  int8_t scales[kQKK / 16]; // one per 16 elements
  uint16_t d;               // fp16 super-block scale
};
static_assert(sizeof(BlockQ6_K) == 210);

// Sub-block j's 6-bit scale and min of a Q4_K/Q5_K super-block: the first four are stored plainly
// in bytes 0..3 / 4..7; the last four keep their low 4 bits in bytes 8..11 and their top 2 bits
// in the spare high bits of bytes 0..7.
inline void scale_min_k4(int j, const uint8_t *q, uint8_t *sc, uint8_t *m) {
  if (j < 4) {
    *sc = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *sc = static_cast<uint8_t>((q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4));
    *m = static_cast<uint8_t>((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
  }
}

// All 8 scales and 8 mins of a Q4_K/Q5_K super-block at once, as bytes: out[0..7] the scales,
// out[8..15] the mins (scale_min_k4's values), computed four bytes per 32-bit operation: the
// SIMD dot products take them as one vector instead of eight branchy scalar decodes.
inline void scales_mins_k4(const uint8_t *q, uint8_t out[16]) {
  static_assert(std::endian::native == std::endian::little, "byte k of a word is q[k]");
  uint32_t w[3];
  std::memcpy(w, q, sizeof w);
  constexpr uint32_t k6 = 0x3F3F3F3Fu, k4 = 0x0F0F0F0Fu, k2 = 0x03030303u;
  const uint32_t v[4] = {w[0] & k6, (w[2] & k4) | (((w[0] >> 6) & k2) << 4), w[1] & k6,
                         ((w[2] >> 4) & k4) | (((w[1] >> 6) & k2) << 4)};
  std::memcpy(out, v, sizeof v);
}

// Q3_K's 16 signed scales (-32..31): scale j keeps its low 4 bits in byte j (j < 8, low nibble)
// or byte j - 8 (high nibble), and its top 2 bits in byte 8 + j % 4 at bit 2 * (j / 4).
inline int q3_k_scale(int j, const uint8_t *s) {
  const int low = j < 8 ? (s[j] & 0x0F) : (s[j - 8] >> 4);
  const int high = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
  return (low | (high << 4)) - 32;
}

// All 16 of Q3_K's scales at once as q3_k_scale(j) + 32 (0..63) in out[j], four per 32-bit
// operation: scale 4p + i takes its low 4 bits from byte i (p = 0) or 4 + i (p = 1), low nibble,
// or the high nibble of the same bytes (p = 2, 3), and its top 2 bits from byte 8 + i at bit 2p.
inline void q3_k_scales6(const uint8_t *s, uint8_t out[16]) {
  static_assert(std::endian::native == std::endian::little, "byte k of a word is s[k]");
  uint32_t w[3];
  std::memcpy(w, s, sizeof w);
  constexpr uint32_t k4 = 0x0F0F0F0Fu, k2 = 0x03030303u;
  const uint32_t v[4] = {(w[0] & k4) | ((w[2] & k2) << 4), (w[1] & k4) | (((w[2] >> 2) & k2) << 4),
                         ((w[0] >> 4) & k4) | (((w[2] >> 4) & k2) << 4),
                         ((w[1] >> 4) & k4) | (((w[2] >> 6) & k2) << 4)};
  std::memcpy(out, v, sizeof v);
}

// Q2_K and Q3_K pack 2-bit values the same way: element e of half h = e / 128 (k = e % 128,
// j = k / 32, l = k % 32) is bits 2j..2j+1 of qs[32h + l].
inline int q2_bits(const uint8_t *qs, int e) {
  const int h = e / 128, k = e % 128;
  return (qs[32 * h + k % 32] >> (2 * (k / 32))) & 3;
}

// Q3_K element e (as above) as a signed value in -4..3: its high bit is bit 4h + j of hmask[l],
// and a clear bit means "subtract 4".
inline int q3_k_value(const BlockQ3_K &b, int e) {
  const int h = e / 128, k = e % 128;
  const bool hbit = ((b.hmask[k % 32] >> (4 * h + k / 32)) & 1) != 0;
  return q2_bits(b.qs, e) - (hbit ? 0 : 4);
}

} // namespace gantry::engine::kernels
