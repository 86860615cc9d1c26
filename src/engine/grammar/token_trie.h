// Constrained decoding, part 2: a tokenizer's vocabulary as a byte trie, so one walk of the
// trie from a grammar state decides every token at once and tokens sharing a prefix share the
// work (apply() on a 32000-token vocab visits each distinct prefix once, and stops at the first
// byte the grammar refuses).
//
// A token's bytes are Tokenizer::token_to_piece(id) — exactly what the engine streams. Control
// and unknown tokens (empty pieces) and any other empty piece are never allowed: an empty token
// would let a model loop without progress. End-of-generation tokens (Tokenizer::is_eog) are kept
// apart: the matcher allows them exactly when the grammar accepts.
//
// Thread safety: immutable after build(); one trie per tokenizer is shared by every matcher on
// every thread.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace gantry::engine {

class Tokenizer;

class TokenTrie {
public:
  struct Node {
    uint32_t first_child = 0; // children are nodes [first_child, first_child + n_children)
    uint32_t n_children = 0;
    uint32_t tok_begin = 0; // tokens whose piece ends here: tokens()[tok_begin, tok_end)
    uint32_t tok_end = 0;
    uint8_t byte = 0; // the byte on the edge into this node
  };

  static std::shared_ptr<const TokenTrie> build(const Tokenizer &tok);

  int32_t n_vocab() const { return n_vocab_; }
  bool is_eog(int32_t id) const { return id >= 0 && id < n_vocab_ && eog_[id]; }
  const std::vector<int32_t> &eog_tokens() const { return eog_list_; }
  // The token's bytes; empty for tokens that can never be allowed as text.
  std::string_view piece(int32_t id) const {
    if (id < 0 || id >= n_vocab_)
      return {};
    return std::string_view(bytes_).substr(offsets_[id], offsets_[id + 1] - offsets_[id]);
  }
  const std::vector<Node> &nodes() const { return nodes_; } // nodes()[0] is the root
  const std::vector<int32_t> &tokens() const { return tokens_; }
  size_t bytes() const;

private:
  int32_t n_vocab_ = 0;
  std::vector<char> eog_;
  std::vector<int32_t> eog_list_;
  std::string bytes_;
  std::vector<uint32_t> offsets_; // n_vocab + 1
  std::vector<Node> nodes_;
  std::vector<int32_t> tokens_;
};

} // namespace gantry::engine
