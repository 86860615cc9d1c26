// Byte-level BPE: split into words with the pre-tokenizer, then merge each word's characters
// pairwise by merge rank (lowest first, ties leftmost) using a priority queue, so long words
// cost O(n log n) rather than a rescan per merge.
#include <queue>

#include "engine/tokenizer/unicode.h"
#include "engine/tokenizer/vocab.h"

namespace gantry::engine {
namespace {

struct Symbol {
  int prev, next;
  size_t off, n;
};

struct Bigram {
  int left, right;
  int32_t rank;
  size_t size;
};

struct LowerPriority {
  bool operator()(const Bigram &a, const Bigram &b) const {
    return a.rank > b.rank || (a.rank == b.rank && a.left > b.left);
  }
};

void merge_word(const Vocab &vocab, std::string_view word, std::vector<Symbol> &sym,
                std::vector<int32_t> &out) {
  sym.clear();
  if (vocab.ignore_merges) {
    const int32_t id = vocab.find(word);
    if (id >= 0) {
      out.push_back(id);
      return;
    }
  }
  for (size_t off = 0; off < word.size();) {
    const size_t n = std::min(unicode::utf8_len(uint8_t(word[off])), word.size() - off);
    const int idx = static_cast<int>(sym.size());
    sym.push_back({idx - 1, off + n == word.size() ? -1 : idx + 1, off, n});
    off += n;
  }
  std::priority_queue<Bigram, std::vector<Bigram>, LowerPriority> queue;
  auto try_add = [&](int left, int right) {
    if (left < 0 || right < 0)
      return;
    const int32_t rank = vocab.rank(word.substr(sym[left].off, sym[left].n),
                                    word.substr(sym[right].off, sym[right].n));
    if (rank < 0)
      return;
    queue.push({left, right, rank, sym[left].n + sym[right].n});
  };
  for (int i = 1; i < static_cast<int>(sym.size()); ++i)
    try_add(i - 1, i);

  while (!queue.empty()) {
    const Bigram b = queue.top();
    queue.pop();
    Symbol &l = sym[b.left];
    Symbol &r = sym[b.right];
    // Symbols only grow by swallowing their right neighbour, so an unchanged total size with
    // both sides alive means the pair is still the one that was queued.
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
    const std::string_view piece = word.substr(sym[i].off, sym[i].n);
    const int32_t id = vocab.find(piece);
    if (id >= 0) {
      out.push_back(id);
      continue;
    }
    // As llama.cpp: look the raw bytes up one at a time and drop those that are not tokens.
    for (size_t k = 0; k < piece.size(); ++k) {
      const int32_t b = vocab.find(piece.substr(k, 1));
      if (b >= 0)
        out.push_back(b);
    }
  }
}

} // namespace

void bpe_tokenize(const Vocab &vocab, std::string_view text, std::vector<int32_t> &out) {
  std::vector<Symbol> sym;
  for (const std::string &word : vocab.pre->split(text))
    merge_word(vocab, word, sym, out);
}

} // namespace gantry::engine
