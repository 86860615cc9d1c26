// WordPiece (BERT): placeholder until implemented; from_gguf refuses "bert" vocabs meanwhile.
#include "engine/tokenizer/vocab.h"

namespace gantry::engine {

void wpm_tokenize(const Vocab &vocab, std::string_view, std::vector<int32_t> &out) {
  if (vocab.unk >= 0)
    out.push_back(vocab.unk);
}

} // namespace gantry::engine
