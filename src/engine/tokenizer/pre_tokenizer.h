// BPE pre-tokenization: splitting text into words before merges, as selected by the GGUF key
// tokenizer.ggml.pre. Each pre-tokenizer is llama.cpp's list of regexes applied in turn, every
// regex splitting the pieces the previous one left (matches and the gaps between them both
// become pieces). The GPT-2 and Llama-3 patterns run as hand-written scanners with the same
// results; the others run on the small regex engine in regex.h.
//
// Thread safety: immutable after create(); split() may run concurrently.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.h"
#include "engine/tokenizer/regex.h"

namespace gantry::engine {

// Vocabulary flags that llama.cpp ties to the pre-tokenizer name.
struct PreTokenizerTraits {
  std::string name;           // as given ("default" when the key is absent)
  bool ignore_merges = false; // a word that is itself a token skips the merges
  bool add_bos = false;       // default for tokenizer.ggml.add_bos_token
  bool clean_spaces = true;   // clean_up_tokenization_spaces when detokenizing
  bool no_bos = false;        // the vocab has no BOS token at all (chatglm)
};

class PreTokenizer {
public:
  // Error (kUnsupported) names the pre-tokenizer when it is unknown.
  static Result<PreTokenizer> create(std::string_view pre);

  const PreTokenizerTraits &traits() const { return traits_; }

  // Splits text into words. Each word is re-encoded from code points (malformed UTF-8 became
  // U+FFFD) and then mapped byte by byte to GPT-2's printable byte alphabet.
  std::vector<std::string> split(std::string_view text) const;

private:
  enum class Kind { kRegex, kGpt2, kLlama3 };
  struct Step {
    Kind kind = Kind::kRegex;
    std::optional<Regex> regex;
  };

  PreTokenizerTraits traits_;
  std::vector<Step> steps_;
};

} // namespace gantry::engine
