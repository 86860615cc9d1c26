// The 16-row interleaved layout of repacked Q8_0/Q4_0 weights (kernels.h, "repacked weights"):
// packing at load and unpacking a row back for the kernels that read row-major weights.
#include <cassert>
#include <cstring>

#include "engine/kernels/kernels.h"
#include "engine/kernels/kernels_impl.h"

namespace gantry::engine::kernels {
namespace {

constexpr int kGroupRows = 16;

size_t block_bytes(TensorType t) {
  switch (t) {
  case TensorType::kQ8_0: return sizeof(BlockQ8_0);
  case TensorType::kQ4_0: return sizeof(BlockQ4_0);
  case TensorType::kQ4_K: return sizeof(BlockQ4_K);
  default: return sizeof(BlockQ6_K);
  }
}
bool is_k_quant(TensorType t) { return t == TensorType::kQ4_K || t == TensorType::kQ6_K; }
bool is_half(TensorType t) { return t == TensorType::kF16 || t == TensorType::kBF16; }

// Byte offset of row r's 8 elements from column c8 * 8 in a packed F16/BF16 matrix.
size_t half_at(const WeightView &w, int64_t r, int64_t c8) {
  return static_cast<size_t>(r / kGroupRows) * kGroupRows * w.row_stride +
         static_cast<size_t>(c8) * kGroupRows * 16 + static_cast<size_t>(r % kGroupRows) * 16;
}
// Bytes of one block's quants for 16 rows in the packed layout.
size_t group_quant_bytes(TensorType t) { return kGroupRows * (block_bytes(t) - 2); }

// Where row r's block b lives in a packed matrix, in bytes from its start: the scale, and row
// r's first 4-byte piece of the block's quants (piece k is k * 64 bytes further).
struct PackedAt {
  size_t scale;
  size_t quants;
};
PackedAt packed_at(const WeightView &w, int64_t r, int64_t b) {
  const int64_t nb = w.cols / kQK;
  const size_t group = static_cast<size_t>(r / kGroupRows) * kGroupRows * w.row_stride;
  const auto i = static_cast<size_t>(r % kGroupRows);
  return {group + (static_cast<size_t>(b) * kGroupRows + i) * 2,
          group + static_cast<size_t>(nb) * kGroupRows * 2 +
              static_cast<size_t>(b) * group_quant_bytes(w.type) + 4 * i};
}

} // namespace

bool can_pack_rows16(const WeightView &w) {
  return active_isa() == Isa::kAvx512Vnni && !w.packed16 &&
         (w.type == TensorType::kQ8_0 || w.type == TensorType::kQ4_0 || is_k_quant(w.type) ||
          is_half(w.type)) &&
         w.rows > 0 && w.rows % kGroupRows == 0 && w.cols > 0 &&
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
    WeightView v = w;
    v.data = dst;
    v.packed16 = true;
    return v;
  }
  if (w.type == TensorType::kQ4_K) {
    char *out = static_cast<char *>(dst);
    const int64_t nbk = w.cols / kQKK;
    for (int64_t g = 0; g < w.rows / kGroupRows; ++g) {
      for (int64_t b = 0; b < nbk; ++b) {
        char *sb = out + static_cast<size_t>(g) * kGroupRows * w.row_stride +
                   static_cast<size_t>(b) * kGroupRows * sizeof(BlockQ4_K);
        for (int i = 0; i < kGroupRows; ++i) {
          const auto *blk = reinterpret_cast<const BlockQ4_K *>(
              static_cast<const char *>(w.row(g * kGroupRows + i)) + b * sizeof(BlockQ4_K));
          std::memcpy(sb + 4 * i, &blk->d, 2);
          std::memcpy(sb + 4 * i + 2, &blk->dmin, 2);
          for (int part = 0; part < 3; ++part)
            std::memcpy(sb + 64 * (part + 1) + 4 * i, blk->scales + 4 * part, 4);
          for (int chunk = 0; chunk < 32; ++chunk)
            std::memcpy(sb + 256 + 64 * chunk + 4 * i, blk->qs + 4 * chunk, 4);
        }
      }
    }
    WeightView v = w;
    v.data = dst;
    v.packed16 = true;
    return v;
  }
  if (w.type == TensorType::kQ6_K) {
    char *out = static_cast<char *>(dst);
    const int64_t nbk = w.cols / kQKK;
    for (int64_t g = 0; g < w.rows / kGroupRows; ++g) {
      for (int64_t b = 0; b < nbk; ++b) {
        char *sb = out + static_cast<size_t>(g) * kGroupRows * w.row_stride +
                   static_cast<size_t>(b) * kGroupRows * sizeof(BlockQ6_K);
        for (int i = 0; i < kGroupRows; ++i) {
          const auto *blk = reinterpret_cast<const BlockQ6_K *>(
              static_cast<const char *>(w.row(g * kGroupRows + i)) + b * sizeof(BlockQ6_K));
          std::memcpy(sb + 2 * i, &blk->d, 2);
          for (int part = 0; part < 4; ++part)
            std::memcpy(sb + 32 + 64 * part + 4 * i, blk->scales + 4 * part, 4);
          for (int h = 0; h < 2; ++h) {
            for (int k = 0; k < 8; ++k) {
              char *piece = sb + 288 + (8 * h + k) * 192 + 4 * i;
              std::memcpy(piece, blk->ql + 64 * h + 4 * k, 4);
              std::memcpy(piece + 64, blk->ql + 64 * h + 32 + 4 * k, 4);
              std::memcpy(piece + 128, blk->qh + 32 * h + 4 * k, 4);
            }
          }
        }
      }
    }
    WeightView v = w;
    v.data = dst;
    v.packed16 = true;
    return v;
  }
  const int64_t nb = w.cols / kQK;
  const size_t bb = block_bytes(w.type), pieces = (bb - 2) / 4; // 8 (Q8_0) or 4 (Q4_0)
  // Q8_0's quants become unsigned: the sign bit of each byte flipped.
  const uint32_t flip = w.type == TensorType::kQ8_0 ? 0x80808080u : 0u;
  char *out = static_cast<char *>(dst);
  // Group by group, block by block: the 16 rows' blocks are read side by side and each 64-byte
  // chunk is written whole, so both sides stay within a few cache lines at a time.
  for (int64_t g = 0; g < w.rows / kGroupRows; ++g) {
    const char *rows[kGroupRows];
    for (int i = 0; i < kGroupRows; ++i)
      rows[i] = static_cast<const char *>(w.row(g * kGroupRows + i));
    char *group = out + static_cast<size_t>(g) * kGroupRows * w.row_stride;
    char *quants = group + nb * kGroupRows * 2;
    for (int64_t b = 0; b < nb; ++b) {
      // The block's chunks are assembled in a local buffer and then copied out whole: scattered
      // 4-byte stores straight to the destination cost 5x more (each one a partial line).
      alignas(64) uint32_t staged[8 * kGroupRows];
      uint16_t scales[kGroupRows];
      for (int i = 0; i < kGroupRows; ++i) {
        const char *blk = rows[i] + b * bb;
        std::memcpy(&scales[i], blk, 2);
        for (size_t k = 0; k < pieces; ++k) {
          uint32_t piece;
          std::memcpy(&piece, blk + 2 + 4 * k, 4);
          staged[k * kGroupRows + i] = piece ^ flip;
        }
      }
      std::memcpy(group + b * kGroupRows * 2, scales, sizeof scales);
      std::memcpy(quants + static_cast<size_t>(b) * group_quant_bytes(w.type), staged,
                  group_quant_bytes(w.type));
    }
  }
  WeightView v = w;
  v.data = dst;
  v.packed16 = true;
  return v;
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
  if (w.type == TensorType::kQ4_K) {
    for (int64_t b = 0; b < w.cols / kQKK; ++b)
      packed_q4k_block(w, r, b, static_cast<BlockQ4_K *>(dst) + b);
    return;
  }
  if (w.type == TensorType::kQ6_K) {
    for (int64_t b = 0; b < w.cols / kQKK; ++b)
      packed_q6k_block(w, r, b, static_cast<BlockQ6_K *>(dst) + b);
    return;
  }
  const int64_t nb = w.cols / kQK;
  const size_t qbytes = block_bytes(w.type) - 2;
  const char *data = static_cast<const char *>(w.data);
  char *row = static_cast<char *>(dst);
  for (int64_t b = 0; b < nb; ++b) {
    const PackedAt at = packed_at(w, r, b);
    char *blk = row + b * block_bytes(w.type);
    std::memcpy(blk, data + at.scale, 2);
    for (size_t k = 0; k < qbytes / 4; ++k) {
      std::memcpy(blk + 2 + 4 * k, data + at.quants + k * 64, 4);
      if (w.type == TensorType::kQ8_0) {
        for (int j = 0; j < 4; ++j)
          blk[2 + 4 * k + j] = static_cast<char>(blk[2 + 4 * k + j] ^ 0x80);
      }
    }
  }
}

} // namespace gantry::engine::kernels
