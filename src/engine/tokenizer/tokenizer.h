// Tokenizers built from GGUF metadata, matching llama.cpp's llama-vocab.cpp id for id:
// SentencePiece-style BPE ("llama": scores, <0xXX> byte fallback, the U+2581 space marker) and
// byte-level BPE ("gpt2": merges ranks, the pre-tokenizer picked by tokenizer.ggml.pre), with
// special-token parsing, BOS/EOS rules, end-of-generation detection and detokenization.
//
// Thread safety: a Tokenizer is immutable after from_gguf(); encode/decode may run on any
// number of threads at once.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.h"
#include "engine/gguf/gguf.h"

namespace gantry::engine {

struct Vocab;

class Tokenizer {
public:
  // Reads tokenizer.ggml.* from the file. The Error names the missing or malformed key.
  static Result<std::unique_ptr<Tokenizer>> from_gguf(const gguf::GgufFile &file);
  ~Tokenizer();

  // add_special: BOS/EOS as the vocab asks (add_bos()/add_eos()). parse_special: text such as
  // "<|eot_id|>" becomes the control token; user-defined tokens are always matched whole.
  std::vector<int32_t> encode(std::string_view text, bool add_special, bool parse_special) const;
  // parse_special for the bytes `special_ok` marks (non-zero) only: a control or unknown token
  // whose text lies anywhere in unmarked bytes stays plain text. For a rendered chat template,
  // whose own markers are marked and whose message contents are not, so a user cannot inject
  // role or control tokens (audit L8). A mask of the wrong size marks nothing.
  std::vector<int32_t> encode(std::string_view text, bool add_special,
                              std::span<const uint8_t> special_ok) const;

  // The bytes a token stands for when detokenizing (SPM: U+2581 -> space, <0xNN> -> byte; BPE:
  // byte-level code points -> bytes). Control and unknown tokens render as "" unless
  // render_special. Out-of-range ids render as "".
  std::string token_to_piece(int32_t id, bool render_special = false) const;
  // The concatenated pieces: what llama-server's /detokenize returns and what streaming the
  // pieces of generated tokens adds up to (the reference data checks exactly this).
  std::string decode(std::span<const int32_t> ids, bool render_special = false) const;
  // llama.cpp's llama_detokenize(remove_special = false): like decode(), but the first token
  // loses one leading space when the vocab adds a space prefix (SPM), and BPE vocabs that ask
  // for it get clean_up_tokenization_spaces (" ," -> ",", " 's" -> "'s", ...).
  std::string detokenize(std::span<const int32_t> ids, bool render_special = false) const;

  int32_t n_vocab() const;
  int32_t bos_id() const; // -1 when absent
  int32_t eos_id() const; // -1 when absent
  bool add_bos() const;
  bool add_eos() const;
  // End of generation: EOS, EOT, EOM and the tokens llama.cpp recognises by text
  // (<|eot_id|>, <|im_end|>, <|end|>, <end_of_turn>, <|endoftext|>, ...).
  bool is_eog(int32_t id) const;
  std::string_view kind() const; // "llama", "gpt2" or "bert"
  std::string_view pre() const;  // the pre-tokenizer name ("default" when absent)
  std::optional<int32_t> token_id(std::string_view text) const; // exact vocab lookup
  const std::string &token_text(int32_t id) const;              // "" for out-of-range ids
  bool is_control(int32_t id) const;

private:
  explicit Tokenizer(std::unique_ptr<Vocab> vocab);
  std::vector<int32_t> encode_fragments(std::string_view text, bool add_special, bool parse_special,
                                        std::span<const uint8_t> special_ok) const;
  std::unique_ptr<Vocab> vocab_;
};

} // namespace gantry::engine
