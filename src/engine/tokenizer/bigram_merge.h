// The merge loop shared by SentencePiece and byte-level BPE: split text into UTF-8 characters,
// then repeatedly merge the adjacent pair with the best priority (ties: leftmost), using a
// priority queue so a long word costs O(n log n) rather than a rescan per merge.
#pragma once

#include <optional>
#include <queue>
#include <string_view>
#include <vector>

#include "engine/tokenizer/unicode.h"

namespace gantry::engine {

struct MergeSymbol {
  int prev, next;
  size_t off, n; // bytes of the text; n == 0 once merged into its left neighbour
};

// `priority(left, right)` gives the priority of merging two adjacent symbols (higher first), or
// nullopt when the pair cannot merge. Calls `emit(piece)` for each final symbol in order.
template <typename Priority, typename Emit>
void merge_bigrams(std::string_view text, std::vector<MergeSymbol> &sym, Priority priority,
                   Emit emit) {
  sym.clear();
  for (size_t off = 0; off < text.size();) {
    const size_t n = std::min(unicode::utf8_len(uint8_t(text[off])), text.size() - off);
    const int idx = static_cast<int>(sym.size());
    sym.push_back({idx - 1, off + n == text.size() ? -1 : idx + 1, off, n});
    off += n;
  }
  struct Bigram {
    int left, right;
    double priority;
    size_t size;
  };
  struct Lower {
    bool operator()(const Bigram &a, const Bigram &b) const {
      return a.priority < b.priority || (a.priority == b.priority && a.left > b.left);
    }
  };
  std::priority_queue<Bigram, std::vector<Bigram>, Lower> queue;
  auto try_add = [&](int left, int right) {
    if (left < 0 || right < 0)
      return;
    std::optional<double> p = priority(sym[left], sym[right]);
    if (p)
      queue.push({left, right, *p, sym[left].n + sym[right].n});
  };
  for (int i = 1; i < static_cast<int>(sym.size()); ++i)
    try_add(i - 1, i);

  while (!queue.empty()) {
    const Bigram b = queue.top();
    queue.pop();
    MergeSymbol &l = sym[b.left];
    MergeSymbol &r = sym[b.right];
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
    emit(text.substr(sym[i].off, sym[i].n));
  }
}

} // namespace gantry::engine
