// Internal: the vocabulary data the tokenizer algorithms share (private to this folder).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "engine/tokenizer/pre_tokenizer.h"

namespace gantry::engine {

// llama.cpp's llama_token_attr bits (token types from tokenizer.ggml.token_type map onto them).
enum TokenAttr : uint32_t {
  kAttrUnknown = 1u << 0,
  kAttrUnused = 1u << 1,
  kAttrNormal = 1u << 2,
  kAttrControl = 1u << 3,
  kAttrUserDefined = 1u << 4,
  kAttrByte = 1u << 5,
  kAttrLstrip = 1u << 7,
  kAttrRstrip = 1u << 8,
};

enum class VocabType { kSpm, kBpe, kWpm };

struct TransparentHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};

// Merge ranks keyed by (left, right) without building a joined string per lookup.
struct MergeKey {
  std::string_view left, right;
  bool operator==(const MergeKey &) const = default;
};
struct MergeKeyHash {
  size_t operator()(const MergeKey &k) const {
    const size_t h = std::hash<std::string_view>{}(k.left);
    return h ^
           (std::hash<std::string_view>{}(k.right) + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2));
  }
};

struct Vocab {
  VocabType type = VocabType::kSpm;
  std::string model; // tokenizer.ggml.model
  std::vector<std::string> text;
  std::vector<float> score;
  std::vector<uint32_t> attr;
  std::vector<std::string> piece; // token_to_piece(id, render_special = true)
  // Views into `text`, which is never resized after construction.
  std::unordered_map<std::string_view, int32_t, TransparentHash, std::equal_to<>> ids;
  std::vector<std::string> merge_text; // owns the strings merge keys point into
  std::unordered_map<MergeKey, int32_t, MergeKeyHash> merges;

  int32_t bos = -1, eos = -1, eot = -1, eom = -1, unk = -1, sep = -1, pad = -1, mask = -1;
  bool add_bos = false, add_eos = false, add_sep = false;
  bool add_space_prefix = false;
  bool ignore_merges = false;
  bool clean_spaces = false;
  std::string pre_name;
  std::optional<PreTokenizer> pre; // BPE only
  std::vector<int32_t> special;    // control/user-defined/unknown ids, longest text first
  std::unordered_set<int32_t> eog;
  bool lowercase = false, strip_accents = false; // WordPiece normalizer
  size_t max_token_len = 0;

  int32_t n() const { return static_cast<int32_t>(text.size()); }
  int32_t find(std::string_view s) const {
    auto it = ids.find(s);
    return it == ids.end() ? -1 : it->second;
  }
  int32_t rank(std::string_view left, std::string_view right) const {
    auto it = merges.find(MergeKey{left, right});
    return it == merges.end() ? -1 : it->second;
  }
};

// Algorithms, one per file. Each appends the ids for a plain-text fragment to out.
void spm_tokenize(const Vocab &vocab, std::string_view text, std::vector<int32_t> &out);
void bpe_tokenize(const Vocab &vocab, std::string_view text, std::vector<int32_t> &out);
void wpm_tokenize(const Vocab &vocab, std::string_view text, std::vector<int32_t> &out);

} // namespace gantry::engine
