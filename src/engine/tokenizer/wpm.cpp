// WordPiece (BERT), as llama.cpp's llm_tokenizer_wpm: normalize (NFD accent stripping and
// lowercasing when the vocab asks), split on whitespace and around punctuation and CJK
// characters, then take the longest vocabulary match at each position of "\u2581" + word; a word
// with any unmatched position becomes the unknown token.
#include "engine/tokenizer/unicode.h"
#include "engine/tokenizer/vocab.h"

namespace gantry::engine {
namespace {

using unicode::Class;

bool is_chinese_char(uint32_t cp) {
  // The 0x2B920 start mirrors Hugging Face (and so llama.cpp); Unicode's block starts 0x2B820.
  return (cp >= 0x4E00 && cp <= 0x9FFF) || (cp >= 0x3400 && cp <= 0x4DBF) ||
         (cp >= 0x20000 && cp <= 0x2A6DF) || (cp >= 0x2A700 && cp <= 0x2B73F) ||
         (cp >= 0x2B740 && cp <= 0x2B81F) || (cp >= 0x2B920 && cp <= 0x2CEAF) ||
         (cp >= 0xF900 && cp <= 0xFAFF) || (cp >= 0x2F800 && cp <= 0x2FA1F);
}

std::vector<std::string> words_of(const Vocab &v, std::string_view text) {
  std::vector<uint32_t> cps = unicode::decode_utf8(text);
  if (v.strip_accents) {
    for (uint32_t &c : cps)
      c = unicode::nfd_first(c);
  }
  std::vector<std::string> words(1);
  for (uint32_t cp : cps) {
    if (unicode::is_whitespace(cp)) {
      if (!words.back().empty())
        words.emplace_back();
      continue;
    }
    const Class cls = unicode::class_of(cp);
    if (cp == 0 || cp == 0xFFFD || cls == Class::kControl)
      continue;
    if (v.strip_accents && cls == Class::kMark)
      continue;
    std::string s;
    unicode::append_utf8(v.lowercase ? unicode::to_lower(cp) : cp, s);
    if (cls == Class::kPunctuation || (cp < 0x7F && cls == Class::kSymbol) || is_chinese_char(cp)) {
      if (!words.back().empty())
        words.emplace_back();
      words.back() = std::move(s);
      words.emplace_back();
    } else {
      words.back() += s;
    }
  }
  if (words.back().empty())
    words.pop_back();
  return words;
}

} // namespace

void wpm_tokenize(const Vocab &vocab, std::string_view text, std::vector<int32_t> &out) {
  for (const std::string &w : words_of(vocab, text)) {
    if (w.empty())
      continue;
    const std::string word = "\xe2\x96\x81" + w;
    const size_t n = word.size();
    const size_t before = out.size();
    for (size_t i = 0; i < n; ++i) {
      bool matched = false;
      for (size_t j = std::min(n, i + vocab.max_token_len + 1); j > i; --j) {
        const int32_t id = vocab.find(std::string_view(word).substr(i, j - i));
        if (id >= 0) {
          out.push_back(id);
          matched = true;
          i = j - 1;
          break;
        }
      }
      if (!matched) {
        out.resize(before);
        break;
      }
    }
    if (out.size() == before)
      out.push_back(vocab.unk);
  }
}

} // namespace gantry::engine
