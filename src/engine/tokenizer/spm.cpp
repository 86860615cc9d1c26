// SentencePiece-style BPE over UTF-8 characters: repeatedly merge the adjacent pair whose
// concatenation is the highest-scoring vocabulary token (ties: leftmost first), then fall back
// to <0xXX> byte tokens for characters the vocabulary lacks.
#include "engine/tokenizer/bigram_merge.h"
#include "engine/tokenizer/vocab.h"

namespace gantry::engine {
namespace {

int32_t byte_token(const Vocab &vocab, uint8_t byte) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  const char name[6] = {'<', '0', 'x', kHex[byte >> 4], kHex[byte & 15], '>'};
  int32_t id = vocab.find(std::string_view(name, 6));
  if (id < 0)
    id = vocab.find(std::string_view(reinterpret_cast<const char *>(&byte), 1));
  return id;
}

} // namespace

void spm_tokenize(const Vocab &vocab, std::string_view text, std::vector<int32_t> &out) {
  std::vector<MergeSymbol> sym;
  sym.reserve(text.size());
  merge_bigrams(
      text, sym,
      [&](const MergeSymbol &l, const MergeSymbol &r) -> std::optional<double> {
        const int32_t id = vocab.find(text.substr(l.off, l.n + r.n));
        if (id < 0)
          return std::nullopt;
        return vocab.score[id]; // highest score first
      },
      [&](std::string_view piece) {
        const int32_t id = vocab.find(piece);
        if (id >= 0) {
          out.push_back(id);
          return;
        }
        for (char c : piece) {
          const int32_t b = byte_token(vocab, static_cast<uint8_t>(c));
          if (b >= 0) {
            out.push_back(b);
          } else if (vocab.unk >= 0) {
            out.push_back(vocab.unk); // llama.cpp would abort; the unknown token is the kind choice
          }
        }
      });
}

} // namespace gantry::engine
