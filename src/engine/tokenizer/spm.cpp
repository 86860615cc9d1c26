// SentencePiece-style BPE over UTF-8 characters: repeatedly merge the adjacent pair whose
// concatenation is the highest-scoring vocabulary token (ties: leftmost first), then fall back
// to <0xXX> byte tokens for characters the vocabulary lacks.
#include <queue>

#include "engine/tokenizer/unicode.h"
#include "engine/tokenizer/vocab.h"

namespace gantry::engine {
namespace {

struct Symbol {
  int prev, next;
  size_t off, n; // bytes of the text; n == 0 once merged into its left neighbour
};

struct Bigram {
  int left, right;
  float score;
  size_t size;
};

struct LowerPriority {
  bool operator()(const Bigram &a, const Bigram &b) const {
    return a.score < b.score || (a.score == b.score && a.left > b.left);
  }
};

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
  std::vector<Symbol> sym;
  sym.reserve(text.size());
  for (size_t off = 0; off < text.size();) {
    const size_t n = std::min(unicode::utf8_len(uint8_t(text[off])), text.size() - off);
    const int idx = static_cast<int>(sym.size());
    sym.push_back({idx - 1, off + n == text.size() ? -1 : idx + 1, off, n});
    off += n;
  }

  std::priority_queue<Bigram, std::vector<Bigram>, LowerPriority> queue;
  auto try_add = [&](int left, int right) {
    if (left < 0 || right < 0)
      return;
    const size_t size = sym[left].n + sym[right].n;
    const int32_t id = vocab.find(text.substr(sym[left].off, size));
    if (id < 0)
      return;
    queue.push({left, right, vocab.score[id], size});
  };
  for (int i = 1; i < static_cast<int>(sym.size()); ++i)
    try_add(i - 1, i);

  while (!queue.empty()) {
    const Bigram b = queue.top();
    queue.pop();
    Symbol &l = sym[b.left];
    Symbol &r = sym[b.right];
    // Stale: one side was merged away or grew since this pair was queued.
    if (l.n == 0 || r.n == 0 || l.n + r.n != b.size)
      continue;
    l.n += r.n;
    r.n = 0;
    l.next = r.next;
    if (r.next >= 0)
      sym[r.next].prev = b.left;
    try_add(l.prev, b.left);
    try_add(b.left, l.next);
  }

  for (int i = sym.empty() ? -1 : 0; i != -1; i = sym[i].next) {
    const std::string_view piece = text.substr(sym[i].off, sym[i].n);
    const int32_t id = vocab.find(piece);
    if (id >= 0) {
      out.push_back(id);
      continue;
    }
    for (char c : piece) {
      const int32_t b = byte_token(vocab, static_cast<uint8_t>(c));
      if (b >= 0) {
        out.push_back(b);
      } else if (vocab.unk >= 0) {
        out.push_back(vocab.unk); // llama.cpp would abort; the unknown token is the kind choice
      }
    }
  }
}

} // namespace gantry::engine
