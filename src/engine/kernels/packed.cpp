// The 16-row layouts of repacked weights (kernels.h, "repacked weights"; the K-quants' in
// kernels_impl.h): packing at load, and unpacking a row back for the kernels that read row-major
// weights.
#include <cassert>
#include <cstring>
#include <map>
#include <vector>
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

// f(Block{}) for K-quant type t's block struct: the one type switch of packing and unpacking.
template <typename F> decltype(auto) with_k_block(TensorType t, F &&f) {
  switch (t) {
  case TensorType::kQ2_K: return f(BlockQ2_K{});
  case TensorType::kQ3_K: return f(BlockQ3_K{});
  case TensorType::kQ4_K: return f(BlockQ4_K{});
  case TensorType::kQ5_K: return f(BlockQ5_K{});
  default: assert(t == TensorType::kQ6_K); return f(BlockQ6_K{});
  }
}

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
    return is_block32(t) || is_half(t) || t == TensorType::kQ4_K || t == TensorType::kQ5_K ||
           t == TensorType::kQ6_K;
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

// How a packed K-quant super-block goes back to its 16 rows, derived once per block type from
// packed_k_pieces (the layout's one definition), in block order: four 4-byte pieces that follow
// each other in the block, evenly spaced in the super-block with rows 4 bytes apart, are one 4x4
// transpose (unpack_pieces); any other piece (d, dmin, a leftover) is copied row by row.
struct KUnpackStep {
  size_t in_block, in_super;
  size_t bytes; // a copy's size; transposes: 4 x the pieces (a multiple of 16) per row
  size_t step;  // a transpose: between its pieces in the super-block; a copy: between rows
  bool transpose;
};
template <typename Block> const std::vector<KUnpackStep> &k_unpack_plan() {
  static const std::vector<KUnpackStep> plan = [] {
    struct Piece {
      size_t in_super, bytes, row_step;
    };
    std::map<size_t, Piece> pieces; // by offset in the block
    packed_k_pieces<Block>(0, [&](size_t b, size_t at, size_t n) { pieces[b] = {at, n, 0}; });
    packed_k_pieces<Block>(
        1, [&](size_t b, size_t at, size_t) { pieces[b].row_step = at - pieces[b].in_super; });
    auto quad_piece = [&](size_t b) {
      const auto it = pieces.find(b);
      return it != pieces.end() && it->second.bytes == 4 && it->second.row_step == 4 ? &it->second
                                                                                     : nullptr;
    };
    std::vector<KUnpackStep> out;
    for (auto it = pieces.begin(); it != pieces.end();) {
      const size_t b = it->first;
      const Piece *p[4] = {quad_piece(b), quad_piece(b + 4), quad_piece(b + 8), quad_piece(b + 12)};
      const bool quad = p[0] && p[1] && p[2] && p[3] && p[1]->in_super > p[0]->in_super &&
                        p[2]->in_super - p[1]->in_super == p[1]->in_super - p[0]->in_super &&
                        p[3]->in_super - p[2]->in_super == p[1]->in_super - p[0]->in_super;
      if (quad) {
        const size_t stride = p[1]->in_super - p[0]->in_super;
        KUnpackStep *last = out.empty() ? nullptr : &out.back();
        if (last && last->transpose && last->step == stride && last->in_block + last->bytes == b &&
            last->in_super + last->bytes / 4 * stride == p[0]->in_super)
          last->bytes += 16; // one run of transposes
        else
          out.push_back({b, p[0]->in_super, 16, stride, true});
        it = pieces.find(b + 12);
      } else {
        const Piece &pc = it->second;
        KUnpackStep *last = out.empty() ? nullptr : &out.back();
        if (last && !last->transpose && last->step == pc.row_step && last->bytes + pc.bytes <= 4 &&
            last->in_block + last->bytes == b && last->in_super + last->bytes == pc.in_super)
          last->bytes += pc.bytes; // d and dmin side by side: one 4-byte copy
        else
          out.push_back({b, pc.in_super, pc.bytes, pc.row_step, false});
      }
      ++it;
    }
    return out;
  }();
  return plan;
}

// Whole groups [g0, g1) of a packed K-quant matrix to row-major rows at dst (row_bytes apart):
// super-block by super-block, so that each one's 2-3 KiB stays in L1 while its 16 rows are
// rebuilt, and the quants by 4x4 transposes (per row and piece, unpack_row16 is 5x slower and was
// a tenth of a 128-token Q4_K_M prefill).
template <typename Block>
void unpack_k_groups(const WeightView &w, int64_t g0, int64_t g1, char *dst) {
  const size_t rb = row_bytes(w.type, w.cols);
  const std::vector<KUnpackStep> &plan = k_unpack_plan<Block>();
  for (int64_t g = g0; g < g1; ++g) {
    for (int64_t s = 0; s < w.cols / kQKK; ++s) {
      const char *sb = reinterpret_cast<const char *>(packed_k_super<Block>(w, g, s));
      char *rows[kGroupRows];
      for (int i = 0; i < kGroupRows; ++i) {
        rows[i] = dst + static_cast<size_t>((g - g0) * kGroupRows + i) * rb +
                  static_cast<size_t>(s) * sizeof(Block);
      }
      for (const KUnpackStep &st : plan) {
        if (st.transpose) {
          unpack_pieces(sb + st.in_super, st.step, static_cast<int>(st.bytes / 4), rows,
                        st.in_block);
        } else if (st.bytes == 2) { // fixed sizes: a call to memcpy per piece cost twice as much
          for (int i = 0; i < kGroupRows; ++i)
            std::memcpy(rows[i] + st.in_block, sb + st.in_super + st.step * i, 2);
        } else {
          assert(st.bytes == 4);
          for (int i = 0; i < kGroupRows; ++i)
            std::memcpy(rows[i] + st.in_block, sb + st.in_super + st.step * i, 4);
        }
      }
    }
  }
}

} // namespace

// An element at a time this made loading the 2.2 GB F16 TinyLlama 1.6 s slower; by 8 x 8
// transposes of 16-byte row pieces, each column's 32 bytes are written whole.
void transpose_half_group(const uint16_t *const rows[16], int64_t n, uint16_t *out) {
  int64_t k0 = 0;
  for (; k0 + 8 <= n; k0 += 8) {
#if defined(__SSE2__)
    for (int h = 0; h < 2; ++h) {
      __m128i r[8];
      for (int i = 0; i < 8; ++i)
        r[i] = _mm_loadu_si128(reinterpret_cast<const __m128i *>(rows[8 * h + i] + k0));
      const __m128i a0 = _mm_unpacklo_epi16(r[0], r[1]), a1 = _mm_unpacklo_epi16(r[2], r[3]);
      const __m128i a2 = _mm_unpacklo_epi16(r[4], r[5]), a3 = _mm_unpacklo_epi16(r[6], r[7]);
      const __m128i a4 = _mm_unpackhi_epi16(r[0], r[1]), a5 = _mm_unpackhi_epi16(r[2], r[3]);
      const __m128i a6 = _mm_unpackhi_epi16(r[4], r[5]), a7 = _mm_unpackhi_epi16(r[6], r[7]);
      // b: columns 2c, 2c + 1 of rows 0-3 (even) or 4-7 (odd).
      const __m128i b[8] = {_mm_unpacklo_epi32(a0, a1), _mm_unpacklo_epi32(a2, a3),
                            _mm_unpackhi_epi32(a0, a1), _mm_unpackhi_epi32(a2, a3),
                            _mm_unpacklo_epi32(a4, a5), _mm_unpacklo_epi32(a6, a7),
                            _mm_unpackhi_epi32(a4, a5), _mm_unpackhi_epi32(a6, a7)};
      for (int c = 0; c < 4; ++c) {
        uint16_t *col = out + (k0 + 2 * c) * kGroupRows + 8 * h;
        _mm_storeu_si128(reinterpret_cast<__m128i *>(col),
                         _mm_unpacklo_epi64(b[2 * c], b[2 * c + 1]));
        _mm_storeu_si128(reinterpret_cast<__m128i *>(col + kGroupRows),
                         _mm_unpackhi_epi64(b[2 * c], b[2 * c + 1]));
      }
    }
#else
    for (int64_t k = k0; k < k0 + 8; ++k) {
      for (int i = 0; i < kGroupRows; ++i)
        out[k * kGroupRows + i] = rows[i][k];
    }
#endif
  }
  for (; k0 < n; ++k0) {
    for (int i = 0; i < kGroupRows; ++i)
      out[k0 * kGroupRows + i] = rows[i][k0];
  }
}

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
  if (is_half(w.type) && active_isa() == Isa::kAvx2) {
    // Column-major groups for kernels_avx2_half.cpp, 8 columns of the 16 rows at a time.
    auto *out = static_cast<uint16_t *>(dst);
    for (int64_t g = 0; g < w.rows / kGroupRows; ++g) {
      const uint16_t *rows[kGroupRows];
      for (int i = 0; i < kGroupRows; ++i)
        rows[i] = static_cast<const uint16_t *>(w.row(g * kGroupRows + i));
      transpose_half_group(rows, w.cols, out + g * kGroupRows * w.cols);
    }
    WeightView v = packed_view(w, dst);
    v.k_major = true;
    return v;
  }
  if (is_half(w.type)) {
    char *out = static_cast<char *>(dst);
    for (int64_t r = 0; r < w.rows; ++r) {
      const char *row = static_cast<const char *>(w.row(r));
      for (int64_t c8 = 0; c8 < w.cols / 8; ++c8)
        std::memcpy(out + half_at(w, r, c8), row + c8 * 16, 16);
    }
    return packed_view(w, dst);
  }
  if (is_k_quant(w.type))
    return with_k_block(w.type, [&](auto blk) { return pack_k<decltype(blk)>(w, dst); });
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
  if (r0 % kGroupRows != 0 || r1 % kGroupRows != 0) {
    for (int64_t r = r0; r < r1; ++r)
      unpack_row16(w, r, static_cast<char *>(dst) + static_cast<size_t>(r - r0) * rb);
    return;
  }
  if (is_k_quant(w.type)) {
    with_k_block(w.type, [&](auto blk) {
      unpack_k_groups<decltype(blk)>(w, r0 / kGroupRows, r1 / kGroupRows, static_cast<char *>(dst));
    });
    return;
  }
  if (is_half(w.type) && w.k_major) {
    for (int64_t r = r0; r < r1; ++r)
      unpack_row16(w, r, static_cast<char *>(dst) + static_cast<size_t>(r - r0) * rb);
    return;
  }
  if (is_half(w.type)) {
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
  assert(is_block32(w.type));
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
  if (is_half(w.type) && w.k_major) {
    const auto *col = static_cast<const uint16_t *>(w.data) +
                      (r / kGroupRows) * kGroupRows * w.cols + r % kGroupRows;
    auto *out = static_cast<uint16_t *>(dst);
    for (int64_t k = 0; k < w.cols; ++k)
      out[k] = col[k * kGroupRows];
    return;
  }
  if (is_half(w.type)) {
    for (int64_t c8 = 0; c8 < w.cols / 8; ++c8) {
      std::memcpy(static_cast<char *>(dst) + c8 * 16,
                  static_cast<const char *>(w.data) + half_at(w, r, c8), 16);
    }
    return;
  }
  if (is_k_quant(w.type)) {
    with_k_block(w.type, [&](auto blk) {
      using Block = decltype(blk);
      for (int64_t b = 0; b < w.cols / kQKK; ++b)
        packed_k_block(w, r, b, static_cast<Block *>(dst) + b);
    });
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
