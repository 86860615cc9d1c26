// The 16-row layouts of repacked weights (kernels.h, "repacked weights"; the K-quants' in
// kernels_impl.h): packing at load, and unpacking a row back for the kernels that read row-major
// weights.
#include <cassert>
#include <cstring>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "engine/kernels/kernels.h"
#include "engine/kernels/kernels_impl.h"

namespace gantry::engine::kernels {
namespace {

constexpr int kGroupRows = 16;

// The 32-element block types (those with Q8_0 activations) are packed as Q4_0 is: d first, for
// Q4_1/Q5_1 the min second, then 4-byte pieces (Q5_0/Q5_1: qh, then qs).
bool is_block32(TensorType t) { return act_kind(t) == ActKind::kQ8; }
size_t block_bytes(TensorType t) { return gguf::type_traits(t).block_bytes; }
// Bytes of a block before its 4-byte pieces: d, and the min.
size_t head_bytes(TensorType t) { return block_has_min(t) ? 4 : 2; }
// Q8_0's quants are stored unsigned: the sign bit of each byte flipped (both ways).
uint32_t sign_flip(TensorType t) { return t == TensorType::kQ8_0 ? 0x80808080u : 0u; }
bool is_k_quant(TensorType t) {
  return t == TensorType::kQ2_K || t == TensorType::kQ3_K || t == TensorType::kQ4_K ||
         t == TensorType::kQ5_K || t == TensorType::kQ6_K;
}
bool is_half(TensorType t) { return t == TensorType::kF16 || t == TensorType::kBF16; }

// Byte offset of row r's 8 elements from column c8 * 8 in a packed F16/BF16 matrix.
size_t half_at(const WeightView &w, int64_t r, int64_t c8) {
  return static_cast<size_t>(r / kGroupRows) * kGroupRows * w.row_stride +
         static_cast<size_t>(c8) * kGroupRows * 16 + static_cast<size_t>(r % kGroupRows) * 16;
}
// Bytes of one block's quants for 16 rows in the packed layout.
size_t group_quant_bytes(TensorType t) { return static_cast<size_t>(packed_block_chunks(t)) * 64; }

// Where row r's block b lives in a packed matrix, in bytes from its start: the scale, the min
// (Q4_1/Q5_1: the group's mins follow its scales), and row r's first 4-byte piece of the
// block's quants (piece k is k * 64 bytes further).
struct PackedAt {
  size_t scale;
  size_t min;
  size_t quants;
};
PackedAt packed_at(const WeightView &w, int64_t r, int64_t b) {
  const int64_t nb = w.cols / kQK;
  const size_t group = static_cast<size_t>(r / kGroupRows) * kGroupRows * w.row_stride;
  const auto i = static_cast<size_t>(r % kGroupRows);
  const size_t scales = static_cast<size_t>(nb) * kGroupRows * 2;
  const size_t at = (static_cast<size_t>(b) * kGroupRows + i) * 2;
  return {group + at, group + scales + at,
          group + static_cast<size_t>(packed_quants_at(w.type, nb)) +
              static_cast<size_t>(b) * group_quant_bytes(w.type) + 4 * i};
}

// w's view over its packed copy at dst.
WeightView packed_view(const WeightView &w, void *dst) {
  WeightView v = w;
  v.data = dst;
  v.packed16 = true;
  return v;
}

// A K-quant matrix in the packed layout (kernels_impl.h, packed_k_pieces).
template <typename Block> WeightView pack_k(const WeightView &w, void *dst) {
  char *out = static_cast<char *>(dst);
  for (int64_t g = 0; g < w.rows / kGroupRows; ++g) {
    for (int64_t b = 0; b < w.cols / kQKK; ++b) {
      char *sb = out + static_cast<size_t>(g) * kGroupRows * w.row_stride +
                 static_cast<size_t>(b) * kGroupRows * sizeof(Block);
      for (int i = 0; i < kGroupRows; ++i) {
        const char *blk = static_cast<const char *>(w.row(g * kGroupRows + i)) + b * sizeof(Block);
        packed_k_pieces<Block>(static_cast<size_t>(i),
                               [&](size_t in_block, size_t in_super, size_t n) {
                                 std::memcpy(sb + in_super, blk + in_block, n);
                               });
      }
    }
  }
  return packed_view(w, dst);
}

// The AVX-512 VNNI kernels read every packed type, the AVX2 ones those of avx2::packs_rows16
// (the same ones).
bool isa_packs(TensorType t) {
#if defined(GANTRY_KERNELS_HAVE_AVX2)
  switch (active_isa()) {
  case Isa::kAvx512Vnni:
    // Q2_K and Q3_K have no AVX-512 kernels over the packed layout: they stay row-major there.
    return is_block32(t) || (is_k_quant(t) && t != TensorType::kQ2_K && t != TensorType::kQ3_K) ||
           is_half(t);
  case Isa::kAvx2: return avx2::packs_rows16(t);
  default: return false;
  }
#else
  (void)t;
  return false;
#endif
}

// `count` consecutive 4-byte pieces of the 16 rows (piece k of row i at src + k * stride + 4i)
// written as 4 * count contiguous bytes at rows[i] + off, each xor-ed with flip (Q8_0's sign
// bits). count is a multiple of 4: four pieces of four rows are one 4x4 transpose of dwords.
void unpack_pieces(const char *src, size_t stride, int count, char *const rows[kGroupRows],
                   size_t off, uint32_t flip = 0) {
  for (int q = 0; q < count / 4; ++q) {
    const char *p = src + static_cast<size_t>(4 * q) * stride;
    for (int rq = 0; rq < kGroupRows / 4; ++rq) {
#if defined(__SSE2__)
      auto load = [&](int c) {
        return _mm_loadu_si128(reinterpret_cast<const __m128i *>(p + c * stride + 16 * rq));
      };
      const __m128i f = _mm_set1_epi32(static_cast<int32_t>(flip));
      const __m128i a0 = _mm_xor_si128(load(0), f), a1 = _mm_xor_si128(load(1), f);
      const __m128i a2 = _mm_xor_si128(load(2), f), a3 = _mm_xor_si128(load(3), f);
      const __m128i t0 = _mm_unpacklo_epi32(a0, a1), t1 = _mm_unpacklo_epi32(a2, a3);
      const __m128i t2 = _mm_unpackhi_epi32(a0, a1), t3 = _mm_unpackhi_epi32(a2, a3);
      const __m128i out[4] = {_mm_unpacklo_epi64(t0, t1), _mm_unpackhi_epi64(t0, t1),
                              _mm_unpacklo_epi64(t2, t3), _mm_unpackhi_epi64(t2, t3)};
      for (int r = 0; r < 4; ++r) {
        _mm_storeu_si128(reinterpret_cast<__m128i *>(rows[4 * rq + r] + off + 16 * q), out[r]);
      }
#else
      for (int r = 0; r < 4; ++r) {
        for (int c = 0; c < 4; ++c) {
          uint32_t piece;
          std::memcpy(&piece, p + c * stride + 16 * rq + 4 * r, 4);
          piece ^= flip;
          std::memcpy(rows[4 * rq + r] + off + 16 * q + 4 * c, &piece, 4);
        }
      }
#endif
    }
  }
}

// Whole groups [g0, g1) of a packed K-quant matrix to row-major rows at dst (row_bytes apart):
// super-block by super-block, so that each one's 2-3 KiB stays in L1 while its 16 rows are
// rebuilt, and the quants by 4x4 transposes (per row and piece, unpack_row16 is 5x slower and was
// a tenth of a 128-token Q4_K_M prefill).
template <typename Block>
void unpack_k_groups(const WeightView &w, int64_t g0, int64_t g1, char *dst) {
  const size_t rb = row_bytes(w.type, w.cols);
  for (int64_t g = g0; g < g1; ++g) {
    for (int64_t s = 0; s < w.cols / kQKK; ++s) {
      const char *sb = reinterpret_cast<const char *>(packed_k_super<Block>(w, g, s));
      char *rows[kGroupRows];
      for (int i = 0; i < kGroupRows; ++i) {
        rows[i] = dst + static_cast<size_t>((g - g0) * kGroupRows + i) * rb +
                  static_cast<size_t>(s) * sizeof(Block);
      }
      if constexpr (std::is_same_v<Block, BlockQ2_K>) {
        for (int i = 0; i < kGroupRows; ++i) {
          std::memcpy(rows[i] + offsetof(BlockQ2_K, d), sb + 4 * i, 2);
          std::memcpy(rows[i] + offsetof(BlockQ2_K, dmin), sb + 4 * i + 2, 2);
        }
        unpack_pieces(sb + 64, 64, 4, rows, offsetof(BlockQ2_K, scales));
        unpack_pieces(sb + 320, 64, 16, rows, offsetof(BlockQ2_K, qs));
      } else if constexpr (std::is_same_v<Block, BlockQ3_K>) {
        for (int i = 0; i < kGroupRows; ++i) {
          std::memcpy(rows[i] + offsetof(BlockQ3_K, d), sb + 2 * i, 2);
          for (size_t part = 0; part < 3; ++part)
            std::memcpy(rows[i] + offsetof(BlockQ3_K, scales) + 4 * part,
                        sb + 32 + 64 * part + 4 * i, 4);
        }
        unpack_pieces(sb + 224, 64, 8, rows, offsetof(BlockQ3_K, hmask));
        unpack_pieces(sb + 736, 64, 16, rows, offsetof(BlockQ3_K, qs));
      } else if constexpr (std::is_same_v<Block, BlockQ6_K>) {
        for (int i = 0; i < kGroupRows; ++i)
          std::memcpy(rows[i] + offsetof(BlockQ6_K, d), sb + 2 * i, 2);
        unpack_pieces(sb + 32, 64, 4, rows, offsetof(BlockQ6_K, scales));
        for (size_t h = 0; h < 2; ++h) {
          const char *pieces = sb + 288 + 8 * h * 192;
          unpack_pieces(pieces, 192, 8, rows, offsetof(BlockQ6_K, ql) + 64 * h);
          unpack_pieces(pieces + 64, 192, 8, rows, offsetof(BlockQ6_K, ql) + 64 * h + 32);
          unpack_pieces(pieces + 128, 192, 8, rows, offsetof(BlockQ6_K, qh) + 32 * h);
        }
      } else {
        for (int i = 0; i < kGroupRows; ++i) {
          std::memcpy(rows[i] + offsetof(Block, d), sb + 4 * i, 2);
          std::memcpy(rows[i] + offsetof(Block, dmin), sb + 4 * i + 2, 2);
          for (size_t part = 0; part < 3; ++part)
            std::memcpy(rows[i] + offsetof(Block, scales) + 4 * part, sb + 64 * (part + 1) + 4 * i,
                        4);
        }
        unpack_pieces(sb + 256, 64, 32, rows, offsetof(Block, qs));
        if constexpr (std::is_same_v<Block, BlockQ5_K>)
          unpack_pieces(sb + 2304, 64, 8, rows, offsetof(BlockQ5_K, qh));
      }
    }
  }
}

} // namespace

bool can_pack_rows16(const WeightView &w) {
  return isa_packs(w.type) && !w.packed16 && w.rows > 0 && w.rows % kGroupRows == 0 && w.cols > 0 &&
         w.cols % (is_k_quant(w.type) ? kQKK
                   : is_half(w.type)  ? 8
                                      : kQK) ==
             0 &&
         w.row_stride == row_bytes(w.type, w.cols);
}

size_t packed_bytes(const WeightView &w) { return static_cast<size_t>(w.rows) * w.row_stride; }

WeightView pack_rows16(const WeightView &w, void *dst) {
  assert(can_pack_rows16(w));
  if (is_half(w.type)) {
    char *out = static_cast<char *>(dst);
    for (int64_t r = 0; r < w.rows; ++r) {
      const char *row = static_cast<const char *>(w.row(r));
      for (int64_t c8 = 0; c8 < w.cols / 8; ++c8)
        std::memcpy(out + half_at(w, r, c8), row + c8 * 16, 16);
    }
    return packed_view(w, dst);
  }
  if (w.type == TensorType::kQ2_K)
    return pack_k<BlockQ2_K>(w, dst);
  if (w.type == TensorType::kQ3_K)
    return pack_k<BlockQ3_K>(w, dst);
  if (w.type == TensorType::kQ4_K)
    return pack_k<BlockQ4_K>(w, dst);
  if (w.type == TensorType::kQ5_K)
    return pack_k<BlockQ5_K>(w, dst);
  if (w.type == TensorType::kQ6_K)
    return pack_k<BlockQ6_K>(w, dst);
  const int64_t nb = w.cols / kQK;
  const size_t bb = block_bytes(w.type), head = head_bytes(w.type);
  const size_t pieces = (bb - head) / 4; // 8 (Q8_0), 5 (Q5_0, Q5_1) or 4
  assert(pieces == static_cast<size_t>(packed_block_chunks(w.type)));
  const uint32_t flip = sign_flip(w.type);
  char *out = static_cast<char *>(dst);
  // Group by group, block by block: the 16 rows' blocks are read side by side and each 64-byte
  // chunk is written whole, so both sides stay within a few cache lines at a time.
  for (int64_t g = 0; g < w.rows / kGroupRows; ++g) {
    const char *rows[kGroupRows];
    for (int i = 0; i < kGroupRows; ++i)
      rows[i] = static_cast<const char *>(w.row(g * kGroupRows + i));
    char *group = out + static_cast<size_t>(g) * kGroupRows * w.row_stride;
    char *mins = group + nb * kGroupRows * 2;
    char *quants = group + packed_quants_at(w.type, nb);
    for (int64_t b = 0; b < nb; ++b) {
      // The block's chunks are assembled in a local buffer and then copied out whole: scattered
      // 4-byte stores straight to the destination cost 5x more (each one a partial line).
      alignas(64) uint32_t staged[8 * kGroupRows];
      uint16_t scales[kGroupRows], ms[kGroupRows];
      for (int i = 0; i < kGroupRows; ++i) {
        const char *blk = rows[i] + b * bb;
        std::memcpy(&scales[i], blk, 2);
        if (block_has_min(w.type))
          std::memcpy(&ms[i], blk + 2, 2);
        for (size_t k = 0; k < pieces; ++k) {
          uint32_t piece;
          std::memcpy(&piece, blk + head + 4 * k, 4);
          staged[k * kGroupRows + i] = piece ^ flip;
        }
      }
      std::memcpy(group + b * kGroupRows * 2, scales, sizeof scales);
      if (block_has_min(w.type))
        std::memcpy(mins + b * kGroupRows * 2, ms, sizeof ms);
      std::memcpy(quants + static_cast<size_t>(b) * group_quant_bytes(w.type), staged,
                  group_quant_bytes(w.type));
    }
  }
  return packed_view(w, dst);
}

void unpack_rows16(const WeightView &w, int64_t r0, int64_t r1, void *dst) {
  const size_t rb = row_bytes(w.type, w.cols);
  if (is_k_quant(w.type) && r0 % kGroupRows == 0 && r1 % kGroupRows == 0) {
    char *out = static_cast<char *>(dst);
    const int64_t g0 = r0 / kGroupRows, g1 = r1 / kGroupRows;
    if (w.type == TensorType::kQ2_K)
      unpack_k_groups<BlockQ2_K>(w, g0, g1, out);
    else if (w.type == TensorType::kQ3_K)
      unpack_k_groups<BlockQ3_K>(w, g0, g1, out);
    else if (w.type == TensorType::kQ4_K)
      unpack_k_groups<BlockQ4_K>(w, g0, g1, out);
    else if (w.type == TensorType::kQ5_K)
      unpack_k_groups<BlockQ5_K>(w, g0, g1, out);
    else
      unpack_k_groups<BlockQ6_K>(w, g0, g1, out);
    return;
  }
  if (is_half(w.type) && r0 % kGroupRows == 0 && r1 % kGroupRows == 0) {
    // A column step of a group is 256 contiguous bytes, 16 of each row: read once, in order (per
    // row, unpack_row16 read every step 16 times; 4 % of an F16 prefill).
    for (int64_t g = r0 / kGroupRows; g < r1 / kGroupRows; ++g) {
      const char *group =
          static_cast<const char *>(w.data) + static_cast<size_t>(g) * kGroupRows * w.row_stride;
      char *rows = static_cast<char *>(dst) + static_cast<size_t>(g * kGroupRows - r0) * rb;
      for (int64_t c8 = 0; c8 < w.cols / 8; ++c8) {
        for (int i = 0; i < kGroupRows; ++i) {
          std::memcpy(rows + static_cast<size_t>(i) * rb + c8 * 16,
                      group + c8 * kGroupRows * 16 + 16 * i, 16);
        }
      }
    }
    return;
  }
  if (!is_block32(w.type) || r0 % kGroupRows != 0 || r1 % kGroupRows != 0) {
    for (int64_t r = r0; r < r1; ++r)
      unpack_row16(w, r, static_cast<char *>(dst) + static_cast<size_t>(r - r0) * rb);
    return;
  }
  // Group by group, block by block: each 64-byte chunk is read once, its 16 pieces going to their
  // rows by 4x4 transposes (per-row unpacking read every chunk 16 times; piece by piece this took
  // 9.8M instructions for a 2048 x 2048 Q8_0 matrix, by transposes 7.0M — callgrind over
  // build/bench/kernels_bench, of 87M for a 64-token matmul). Q5_0/Q5_1's first piece (qh) goes
  // alone.
  const int64_t nb = w.cols / kQK;
  const size_t bb = block_bytes(w.type), head = head_bytes(w.type);
  const int pieces = static_cast<int>((bb - head) / 4);
  const int lone = pieces % 4; // 1 for Q5_0/Q5_1
  const uint32_t flip = sign_flip(w.type);
  for (int64_t g = r0 / kGroupRows; g < r1 / kGroupRows; ++g) {
    const char *group =
        static_cast<const char *>(w.data) + static_cast<size_t>(g) * kGroupRows * w.row_stride;
    const char *mins = group + nb * kGroupRows * 2;
    const char *quants = group + packed_quants_at(w.type, nb);
    char *rows = static_cast<char *>(dst) + static_cast<size_t>(g * kGroupRows - r0) * rb;
    for (int64_t b = 0; b < nb; ++b) {
      const char *chunks = quants + static_cast<size_t>(b) * group_quant_bytes(w.type);
      char *blk[kGroupRows];
      for (int i = 0; i < kGroupRows; ++i) {
        blk[i] = rows + static_cast<size_t>(i) * rb + static_cast<size_t>(b) * bb;
        std::memcpy(blk[i], group + (b * kGroupRows + i) * 2, 2);
        if (block_has_min(w.type))
          std::memcpy(blk[i] + 2, mins + (b * kGroupRows + i) * 2, 2);
        for (int k = 0; k < lone; ++k)
          std::memcpy(blk[i] + head + 4 * k, chunks + k * 64 + 4 * static_cast<size_t>(i), 4);
      }
      unpack_pieces(chunks + lone * 64, 64, pieces - lone, blk, head + 4 * lone, flip);
    }
  }
}

void unpack_row16(const WeightView &w, int64_t r, void *dst) {
  assert(w.packed16 && r >= 0 && r < w.rows);
  if (is_half(w.type)) {
    for (int64_t c8 = 0; c8 < w.cols / 8; ++c8) {
      std::memcpy(static_cast<char *>(dst) + c8 * 16,
                  static_cast<const char *>(w.data) + half_at(w, r, c8), 16);
    }
    return;
  }
  if (is_k_quant(w.type)) {
    for (int64_t b = 0; b < w.cols / kQKK; ++b) {
      if (w.type == TensorType::kQ2_K)
        packed_k_block(w, r, b, static_cast<BlockQ2_K *>(dst) + b);
      else if (w.type == TensorType::kQ3_K)
        packed_k_block(w, r, b, static_cast<BlockQ3_K *>(dst) + b);
      else if (w.type == TensorType::kQ4_K)
        packed_k_block(w, r, b, static_cast<BlockQ4_K *>(dst) + b);
      else if (w.type == TensorType::kQ5_K)
        packed_k_block(w, r, b, static_cast<BlockQ5_K *>(dst) + b);
      else
        packed_k_block(w, r, b, static_cast<BlockQ6_K *>(dst) + b);
    }
    return;
  }
  const int64_t nb = w.cols / kQK;
  const size_t head = head_bytes(w.type), qbytes = block_bytes(w.type) - head;
  const char *data = static_cast<const char *>(w.data);
  char *row = static_cast<char *>(dst);
  for (int64_t b = 0; b < nb; ++b) {
    const PackedAt at = packed_at(w, r, b);
    char *blk = row + b * block_bytes(w.type);
    std::memcpy(blk, data + at.scale, 2);
    if (block_has_min(w.type))
      std::memcpy(blk + 2, data + at.min, 2);
    for (size_t k = 0; k < qbytes / 4; ++k) {
      uint32_t piece;
      std::memcpy(&piece, data + at.quants + k * 64, 4);
      piece ^= sign_flip(w.type);
      std::memcpy(blk + head + 4 * k, &piece, 4);
    }
  }
}

} // namespace gantry::engine::kernels
