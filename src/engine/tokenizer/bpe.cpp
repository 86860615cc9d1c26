// Byte-level BPE: split into words with the pre-tokenizer, then merge each word's characters
// pairwise by merge rank (lowest first, ties leftmost) using a priority queue, so long words
// cost O(n log n) rather than a rescan per merge.
#include "engine/tokenizer/bigram_merge.h"
#include "engine/tokenizer/vocab.h"

namespace gantry::engine {
namespace {

void merge_word(const Vocab &vocab, std::string_view word, std::vector<MergeSymbol> &sym,
                std::vector<int32_t> &out) {
  if (vocab.ignore_merges) {
    const int32_t id = vocab.find(word);
    if (id >= 0) {
      out.push_back(id);
      return;
    }
  }
  merge_bigrams(
      word, sym,
      [&](const MergeSymbol &l, const MergeSymbol &r) -> std::optional<double> {
        const int32_t rank = vocab.rank(word.substr(l.off, l.n), word.substr(r.off, r.n));
        if (rank < 0)
          return std::nullopt;
        return -static_cast<double>(rank); // lowest rank first
      },
      [&](std::string_view piece) {
        const int32_t id = vocab.find(piece);
        if (id >= 0) {
          out.push_back(id);
          return;
        }
        // As llama.cpp: look the raw bytes up one at a time and drop those that are not tokens.
        for (size_t k = 0; k < piece.size(); ++k) {
          const int32_t b = vocab.find(piece.substr(k, 1));
          if (b >= 0)
            out.push_back(b);
        }
      });
}

} // namespace

void bpe_tokenize(const Vocab &vocab, std::string_view text, std::vector<int32_t> &out) {
  std::vector<MergeSymbol> sym;
  for (const std::string &word : vocab.pre->split(text))
    merge_word(vocab, word, sym, out);
}

} // namespace gantry::engine
