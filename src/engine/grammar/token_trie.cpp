#include "engine/grammar/token_trie.h"

#include <algorithm>
#include <deque>

#include "engine/tokenizer/tokenizer.h"

namespace gantry::engine {

std::shared_ptr<const TokenTrie> TokenTrie::build(const Tokenizer &tok) {
  auto t = std::make_shared<TokenTrie>();
  const int32_t n = tok.n_vocab();
  t->n_vocab_ = n;
  t->eog_.assign(static_cast<size_t>(n), 0);
  t->offsets_.reserve(static_cast<size_t>(n) + 1);
  t->offsets_.push_back(0);
  for (int32_t id = 0; id < n; ++id) {
    if (tok.is_eog(id)) {
      t->eog_[id] = 1;
      t->eog_list_.push_back(id);
    } else if (!tok.is_control(id)) {
      t->bytes_ += tok.token_to_piece(id, false);
    }
    t->offsets_.push_back(static_cast<uint32_t>(t->bytes_.size()));
  }

  // Sorted pieces make every node's tokens and children contiguous; a breadth-first layout
  // then gives each node its children as one run.
  std::vector<int32_t> order;
  for (int32_t id = 0; id < n; ++id)
    if (!t->piece(id).empty())
      order.push_back(id);
  std::stable_sort(order.begin(), order.end(),
                   [&](int32_t a, int32_t b) { return t->piece(a) < t->piece(b); });

  // Each pending node covers order[begin, end) whose pieces share the first `depth` bytes.
  struct Pending {
    uint32_t node;
    size_t begin, end, depth;
  };
  t->nodes_.emplace_back();
  std::deque<Pending> queue{{0, 0, order.size(), 0}};
  while (!queue.empty()) {
    const Pending p = queue.front();
    queue.pop_front();
    size_t i = p.begin;
    const auto tok_begin = static_cast<uint32_t>(t->tokens_.size());
    while (i < p.end && t->piece(order[i]).size() == p.depth)
      t->tokens_.push_back(order[i++]);
    t->nodes_[p.node].tok_begin = tok_begin;
    t->nodes_[p.node].tok_end = static_cast<uint32_t>(t->tokens_.size());
    t->nodes_[p.node].first_child = static_cast<uint32_t>(t->nodes_.size());
    while (i < p.end) {
      const char b = t->piece(order[i])[p.depth];
      size_t j = i;
      while (j < p.end && t->piece(order[j])[p.depth] == b)
        ++j;
      const auto child = static_cast<uint32_t>(t->nodes_.size());
      Node node;
      node.byte = static_cast<uint8_t>(b);
      t->nodes_.push_back(node);
      ++t->nodes_[p.node].n_children;
      queue.push_back({child, i, j, p.depth + 1});
      i = j;
    }
  }
  return t;
}

size_t TokenTrie::bytes() const {
  return sizeof(*this) + eog_.size() + eog_list_.size() * 4 + bytes_.size() + offsets_.size() * 4 +
         nodes_.size() * sizeof(Node) + tokens_.size() * 4;
}

} // namespace gantry::engine
