#include "engine/tokenizer/tokenizer.h"

#include <algorithm>
#include <cctype>

#include "engine/tokenizer/vocab.h"
#include "engine/tokenizer/vocab_loader.h"

namespace gantry::engine {
namespace {

struct Fragment {
  int32_t token; // -1: plain text [off, off + len)
  size_t off, len;
};

bool is_c_space(char c) { return std::isspace(static_cast<unsigned char>(c)) != 0; }

// Splits plain-text fragments around special-token text, longest tokens first, like llama.cpp's
// tokenizer_st_partition. Control and unknown tokens only match when parse_special; user-defined
// tokens always do.
// `special_ok`, when not empty, is a per-byte mask over `text`: a control or unknown token
// matches only where every byte of its text is marked (audit L8: chat content is unmarked).
std::vector<Fragment> partition(const Vocab &v, std::string_view text, bool parse_special,
                                std::span<const uint8_t> special_ok = {}) {
  std::vector<Fragment> frags;
  if (!text.empty())
    frags.push_back({-1, 0, text.size()});
  std::vector<Fragment> next;
  for (int32_t id : v.special) {
    const uint32_t attr = v.attr[id];
    if (!parse_special && (attr & (kAttrControl | kAttrUnknown)))
      continue;
    const std::string &tok = v.text[id];
    next.clear();
    bool changed = false;
    for (const Fragment &f : frags) {
      if (f.token >= 0) {
        next.push_back(f);
        continue;
      }
      const size_t end = f.off + f.len;
      const std::string_view window = text.substr(0, end);
      const bool masked = !special_ok.empty() && (attr & (kAttrControl | kAttrUnknown));
      size_t pos = f.off;
      size_t from = pos;
      while (true) {
        const size_t m = window.find(tok, from);
        if (m == std::string_view::npos) {
          if (pos < end)
            next.push_back({-1, pos, end - pos});
          break;
        }
        if (masked &&
            std::find(special_ok.begin() + static_cast<ptrdiff_t>(m),
                      special_ok.begin() + static_cast<ptrdiff_t>(m + tok.size()),
                      uint8_t{0}) != special_ok.begin() + static_cast<ptrdiff_t>(m + tok.size())) {
          from = m + 1; // user text that looks like the token stays text
          continue;
        }
        changed = true;
        size_t left = m - pos;
        if (attr & kAttrLstrip) {
          while (left > 0 && is_c_space(text[pos + left - 1]))
            --left;
        }
        if (left > 0)
          next.push_back({-1, pos, left});
        next.push_back({id, 0, 0});
        pos = m + tok.size();
        if (attr & kAttrRstrip) {
          while (pos < end && is_c_space(text[pos]))
            ++pos;
        }
        from = pos;
      }
    }
    if (changed)
      frags.swap(next);
  }
  return frags;
}

std::string escape_spaces(std::string_view s) {
  std::string out;
  out.reserve(s.size() + 8);
  for (char c : s) {
    if (c == ' ') {
      out += "\xe2\x96\x81";
    } else {
      out.push_back(c);
    }
  }
  return out;
}

// clean_up_tokenization_spaces as llama.cpp's detokenize does it.
void clean_spaces(std::string &s) {
  std::string a;
  a.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    const char x = s[i];
    if (i > 0 && s[i - 1] == ' ' && (x == '?' || x == '!' || x == '.' || x == ','))
      a.pop_back();
    a.push_back(x);
  }
  std::string b;
  b.reserve(a.size());
  for (size_t i = 0; i < a.size(); ++i) {
    const char x = a[i];
    if (x == '\'' && i > 0 && i + 1 < a.size() && a[i - 1] == ' ' && a[i + 1] == ' ') {
      b.pop_back(); // " ' " -> "'"
      b.push_back(x);
      // llama.cpp blanks the swallowed space in place, so a following " ' " check sees no space.
      a[++i] = '\0';
      continue;
    }
    b.push_back(x);
  }
  std::string c;
  c.reserve(b.size());
  for (size_t i = 0; i < b.size(); ++i) {
    const char x = b[i];
    if (i > 0 && b[i - 1] == ' ' && x == '\'' && i + 1 < b.size()) {
      const char x1 = b[i + 1];
      if (x1 == 's' || x1 == 'm') {
        c.pop_back();
      } else if (i + 2 < b.size() &&
                 ((x1 == 'r' && b[i + 2] == 'e') || (x1 == 'v' && b[i + 2] == 'e'))) {
        c.pop_back();
      }
    }
    c.push_back(x);
  }
  s.swap(c);
}

const std::string kEmpty;

} // namespace

Tokenizer::Tokenizer(std::unique_ptr<Vocab> vocab) : vocab_(std::move(vocab)) {}
Tokenizer::~Tokenizer() = default;

Result<std::unique_ptr<Tokenizer>> Tokenizer::from_gguf(const gguf::GgufFile &file) {
  auto v = load_vocab(file);
  if (!v.ok())
    return Err(v.take_error());
  return std::unique_ptr<Tokenizer>(new Tokenizer(std::move(v).value()));
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_special,
                                       bool parse_special) const {
  return encode_fragments(text, add_special, parse_special, {});
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_special,
                                       std::span<const uint8_t> special_ok) const {
  if (special_ok.size() != text.size())
    return encode_fragments(text, add_special, false, {}); // no usable mask: trust nothing
  return encode_fragments(text, add_special, true, special_ok);
}

std::vector<int32_t> Tokenizer::encode_fragments(std::string_view text, bool add_special,
                                                 bool parse_special,
                                                 std::span<const uint8_t> special_ok) const {
  const Vocab &v = *vocab_;
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 4);
  const std::vector<Fragment> frags = partition(v, text, parse_special, special_ok);
  if (add_special && v.add_bos && v.type != VocabType::kWpm)
    out.push_back(v.bos);
  if (add_special && v.type == VocabType::kWpm && v.bos >= 0)
    out.push_back(v.bos);

  bool prev_special = true; // SPM: the first fragment gets the space prefix too
  for (const Fragment &f : frags) {
    if (f.token >= 0) {
      out.push_back(f.token);
      prev_special = true;
      continue;
    }
    const std::string_view piece = text.substr(f.off, f.len);
    switch (v.type) {
    case VocabType::kSpm: {
      std::string s = (v.add_space_prefix && prev_special) ? " " : "";
      s += piece;
      spm_tokenize(v, escape_spaces(s), out);
      break;
    }
    case VocabType::kBpe: bpe_tokenize(v, piece, out); break;
    case VocabType::kWpm: wpm_tokenize(v, piece, out); break;
    }
    prev_special = false;
  }

  if (add_special) {
    if (v.type == VocabType::kWpm) {
      if (v.sep >= 0)
        out.push_back(v.sep);
    } else if (v.add_eos) {
      out.push_back(v.eos);
    }
  }
  return out;
}

std::string Tokenizer::token_to_piece(int32_t id, bool render_special) const {
  const Vocab &v = *vocab_;
  if (id < 0 || id >= v.n())
    return {};
  if (!render_special && (v.attr[id] & (kAttrControl | kAttrUnknown)))
    return {};
  return v.piece[id];
}

std::string Tokenizer::decode(std::span<const int32_t> ids, bool render_special) const {
  std::string out;
  for (int32_t id : ids)
    out += token_to_piece(id, render_special);
  return out;
}

std::string Tokenizer::detokenize(std::span<const int32_t> ids, bool render_special) const {
  const Vocab &v = *vocab_;
  std::string out;
  bool strip_space = v.add_space_prefix;
  for (int32_t id : ids) {
    std::string p = token_to_piece(id, render_special);
    if (strip_space && !p.empty() && p.front() == ' ')
      p.erase(0, 1);
    strip_space = false;
    out += p;
  }
  if (v.clean_spaces)
    clean_spaces(out);
  return out;
}

int32_t Tokenizer::n_vocab() const { return vocab_->n(); }
int32_t Tokenizer::bos_id() const { return vocab_->bos; }
int32_t Tokenizer::eos_id() const { return vocab_->eos; }
bool Tokenizer::add_bos() const { return vocab_->add_bos; }
bool Tokenizer::add_eos() const { return vocab_->add_eos; }
bool Tokenizer::is_eog(int32_t id) const { return id >= 0 && vocab_->eog.count(id) > 0; }
std::string_view Tokenizer::kind() const { return vocab_->model; }
std::string_view Tokenizer::pre() const { return vocab_->pre_name; }

std::optional<int32_t> Tokenizer::token_id(std::string_view text) const {
  const int32_t id = vocab_->find(text);
  if (id < 0)
    return std::nullopt;
  return id;
}

const std::string &Tokenizer::token_text(int32_t id) const {
  if (id < 0 || id >= vocab_->n())
    return kEmpty;
  return vocab_->text[id];
}

bool Tokenizer::is_control(int32_t id) const {
  return id >= 0 && id < vocab_->n() && (vocab_->attr[id] & kAttrControl) != 0;
}

} // namespace gantry::engine
