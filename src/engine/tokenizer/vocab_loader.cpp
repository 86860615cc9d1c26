#include "engine/tokenizer/vocab_loader.h"

#include <algorithm>
#include <array>
#include <cctype>

#include "engine/tokenizer/unicode.h"

namespace gantry::engine {
namespace {

constexpr std::string_view kPrefix = "tokenizer.ggml.";

std::string key(std::string_view name) { return std::string(kPrefix) + std::string(name); }

// tokenizer.ggml.token_type values (llama_token_type) to attribute bits.
uint32_t attr_from_type(int64_t type) {
  switch (type) {
  case 1: return kAttrNormal;
  case 2: return kAttrUnknown;
  case 3: return kAttrControl;
  case 4: return kAttrUserDefined;
  case 5: return kAttrUnused;
  case 6: return kAttrByte;
  default: return 0; // undefined
  }
}

// Token texts llama.cpp treats as end-of-turn, fill-in-the-middle or end-of-generation when
// the file does not name them (llama-vocab.cpp, "auto-detect special tokens by text").
constexpr std::array kEotTexts = {"<|eot_id|>",
                                  "<|im_end|>",
                                  "<|end|>",
                                  "<end_of_turn>",
                                  "<|endoftext|>",
                                  "<|end_of_text|>",
                                  "<EOT>",
                                  "_<EOT>",
                                  "[EOT]",
                                  "<\xef\xbd\x9c"
                                  "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>",
                                  "<end_of_utterance>"};
constexpr std::array kFimPreTexts = {"<|fim_prefix|>",
                                     "<fim-prefix>",
                                     "<fim_prefix>",
                                     "<\xef\xbd\x9c"
                                     "fim\xe2\x96\x81"
                                     "begin\xef\xbd\x9c>",
                                     "<PRE>",
                                     "\xe2\x96\x81<PRE>",
                                     "<|code_prefix|>",
                                     "<|prefix|>"};
constexpr std::array kFimSufTexts = {"<|fim_suffix|>",
                                     "<fim-suffix>",
                                     "<fim_suffix>",
                                     "<\xef\xbd\x9c"
                                     "fim\xe2\x96\x81hole\xef\xbd\x9c>",
                                     "<SUF>",
                                     "\xe2\x96\x81<SUF>",
                                     "<|code_suffix|>",
                                     "<|suffix|>"};
constexpr std::array kFimMidTexts = {"<|fim_middle|>",
                                     "<fim-middle>",
                                     "<fim_middle>",
                                     "<\xef\xbd\x9c"
                                     "fim\xe2\x96\x81"
                                     "end\xef\xbd\x9c>",
                                     "<MID>",
                                     "\xe2\x96\x81<MID>",
                                     "<|code_middle|>",
                                     "<|middle|>"};
constexpr std::array kFimPadTexts = {"<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"};
constexpr std::array kFimRepTexts = {"<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>",
                                     "<reponame>"};
constexpr std::array kFimSepTexts = {"<|file_sep|>"};
constexpr std::array kEogTexts = {"<|eot_id|>",
                                  "<|im_end|>",
                                  "<|end|>",
                                  "<|return|>",
                                  "<|call|>",
                                  "<|flush|>",
                                  "<|calls|>",
                                  "<end_of_turn>",
                                  "<|endoftext|>",
                                  "</s>",
                                  "<|eom_id|>",
                                  "<EOT>",
                                  "_<EOT>",
                                  "[EOT]",
                                  "[EOS]",
                                  "<|end_of_text|>",
                                  "<end_of_utterance>",
                                  "<eos>",
                                  "<turn|>",
                                  "<|tool_response>",
                                  "<\xef\xbd\x9c"
                                  "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>",
                                  "[e~["};

template <size_t N> bool one_of(std::string_view s, const std::array<const char *, N> &set) {
  for (const char *t : set)
    if (s == t)
      return true;
  return false;
}

std::string lower_ascii(std::string_view s) {
  std::string out(s);
  for (char &c : out)
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string render_piece(const Vocab &v, int32_t id) {
  const std::string &t = v.text[id];
  const uint32_t a = v.attr[id];
  if (a & (kAttrUnknown | kAttrControl | kAttrUserDefined))
    return t;
  if (a & kAttrByte) {
    // "<0xNN>"
    auto hex = [](char c) {
      return c >= '0' && c <= '9'                     ? c - '0'
             : (c | 0x20) >= 'a' && (c | 0x20) <= 'f' ? (c | 0x20) - 'a' + 10
                                                      : -1;
    };
    if (t.size() != 6 || hex(t[3]) < 0 || hex(t[4]) < 0)
      return {};
    return std::string(1, static_cast<char>(hex(t[3]) * 16 + hex(t[4])));
  }
  if (!(a & kAttrNormal))
    return {};
  if (v.type == VocabType::kBpe) {
    std::string out;
    for (uint32_t cp : unicode::decode_utf8(t)) {
      const int b = unicode::unicode_to_byte(cp);
      if (b >= 0) {
        out.push_back(static_cast<char>(b));
        continue;
      }
      // llama.cpp's marker for a code point outside the byte alphabet, kept verbatim.
      std::string utf8;
      unicode::append_utf8(cp, utf8);
      static constexpr char kHex[] = "0123456789abcdef";
      out += "[UNK_BYTE_0x";
      for (unsigned char c : utf8) {
        out.push_back(kHex[c >> 4]);
        out.push_back(kHex[c & 15]);
      }
      out += t + "]";
    }
    return out;
  }
  // SPM and WordPiece: U+2581 marks a space.
  std::string out;
  out.reserve(t.size());
  for (size_t i = 0; i < t.size(); ++i) {
    if (t.compare(i, 3, "\xe2\x96\x81") == 0) {
      out.push_back(' ');
      i += 2;
    } else {
      out.push_back(t[i]);
    }
  }
  return out;
}

} // namespace

Result<std::unique_ptr<Vocab>> load_vocab(const gguf::GgufFile &file) {
  auto v = std::make_unique<Vocab>();
  auto model = file.get_string(key("model"));
  if (!model)
    return Err(Error::corrupt("missing GGUF key " + key("model")));
  v->model = std::string(*model);
  const std::string pre = std::string(file.get_string(key("pre")).value_or(""));

  if (v->model == "llama") {
    v->type = VocabType::kSpm;
    v->bos = 1, v->eos = 2, v->unk = 0;
    v->add_space_prefix = true;
    v->add_bos = true;
    v->pre_name = "default";
  } else if (v->model == "gpt2") {
    v->type = VocabType::kBpe;
    v->bos = 11, v->eos = 11; // llama.cpp's (Falcon's) defaults
    auto p = PreTokenizer::create(pre);
    if (!p.ok())
      return Err(p.take_error());
    v->pre.emplace(std::move(p).value());
    const PreTokenizerTraits &tr = v->pre->traits();
    v->pre_name = tr.name;
    v->ignore_merges = tr.ignore_merges;
    v->add_bos = tr.add_bos;
    v->clean_spaces = tr.clean_spaces;
    if (tr.no_bos)
      v->bos = -1;
  } else if (v->model == "bert") {
    v->type = VocabType::kWpm;
    v->bos = 101, v->unk = 100, v->sep = 102, v->pad = 0, v->mask = 103;
    v->add_bos = true, v->add_sep = true;
    v->clean_spaces = true;
    v->pre_name = pre.empty() ? "default" : pre;
  } else {
    return Err(
        Error::unsupported(key("model") + ": unsupported tokenizer model '" + v->model + "'"));
  }
  if (auto b = file.get_bool(key("add_space_prefix")))
    v->add_space_prefix = *b;

  const auto *tokens = file.get_string_array(key("tokens"));
  if (!tokens)
    return Err(Error::corrupt("missing or non-string-array GGUF key " + key("tokens")));
  const size_t n = tokens->size();
  if (n == 0 || n > static_cast<size_t>(INT32_MAX)) {
    return Err(Error::corrupt(key("tokens") + " has a bad length"));
  }

  auto scores = file.get_f32_array(key("scores"));
  if (!scores.ok())
    return Err(scores.take_error());
  if (*scores && (*scores)->size() < n)
    return Err(Error::corrupt(key("scores") + " is too short"));
  auto types = file.get_int_array(key("token_type"));
  if (!types.ok())
    return Err(types.take_error());
  if (*types && (*types)->size() < n) {
    return Err(Error::corrupt(key("token_type") + " is too short"));
  }

  v->text.resize(n);
  v->score.assign(n, 0.0f);
  v->attr.assign(n, kAttrNormal);
  for (size_t i = 0; i < n; ++i) {
    v->text[i] = std::string((*tokens)[i]);
    if (v->text[i].empty())
      v->text[i] = "[EMPTY_" + std::to_string(i) + "]";
    v->max_token_len = std::max(v->max_token_len, v->text[i].size());
    if (*scores)
      v->score[i] = (**scores)[i];
    if (*types)
      v->attr[i] = attr_from_type((**types)[i]);
  }
  v->ids.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    if (!v->ids.emplace(v->text[i], static_cast<int32_t>(i)).second) {
      return Err(Error::corrupt(key("tokens") + ": duplicate token '" + v->text[i] + "'"));
    }
  }

  if (v->type == VocabType::kBpe) {
    const auto *merges = file.get_string_array(key("merges"));
    if (!merges)
      return Err(Error::corrupt("missing or non-string-array GGUF key " + key("merges")));
    v->merge_text.reserve(merges->size());
    for (std::string_view m : *merges)
      v->merge_text.emplace_back(m);
    v->merges.reserve(merges->size());
    for (size_t i = 0; i < v->merge_text.size(); ++i) {
      std::string_view m = v->merge_text[i];
      const size_t sp = m.find(' ', 1);
      MergeKey k =
          sp == std::string_view::npos ? MergeKey{} : MergeKey{m.substr(0, sp), m.substr(sp + 1)};
      v->merges.emplace(k, static_cast<int32_t>(i)); // first occurrence wins, as in llama.cpp
    }
  }

  // Special ids: defaults above, dropped when out of range, then the file's keys when valid.
  struct IdKey {
    const char *name;
    int32_t *id;
  };
  int32_t fim_pre = -1, fim_suf = -1, fim_mid = -1, fim_pad = -1, fim_rep = -1, fim_sep = -1;
  const IdKey id_keys[] = {
      {"bos_token_id", &v->bos},      {"eos_token_id", &v->eos},
      {"eot_token_id", &v->eot},      {"eom_token_id", &v->eom},
      {"unknown_token_id", &v->unk},  {"seperator_token_id", &v->sep},
      {"padding_token_id", &v->pad},  {"mask_token_id", &v->mask},
      {"fim_pre_token_id", &fim_pre}, {"fim_suf_token_id", &fim_suf},
      {"fim_mid_token_id", &fim_mid}, {"fim_pad_token_id", &fim_pad},
      {"fim_rep_token_id", &fim_rep}, {"fim_sep_token_id", &fim_sep},
      {"prefix_token_id", &fim_pre},  {"suffix_token_id", &fim_suf},
      {"middle_token_id", &fim_mid},
  };
  for (const IdKey &k : id_keys) {
    if (*k.id >= static_cast<int64_t>(n))
      *k.id = -1;
    if (auto id = file.get_uint(key(k.name)); id && *id < n)
      *k.id = static_cast<int32_t>(*id);
  }
  if (auto b = file.get_bool(key("add_bos_token")))
    v->add_bos = *b;
  if (auto b = file.get_bool(key("add_eos_token")))
    v->add_eos = *b;
  if (auto b = file.get_bool(key("add_sep_token")))
    v->add_sep = *b;
  if (v->add_bos && v->bos < 0) {
    return Err(Error::corrupt(key("add_bos_token") + " is true, but " + key("bos_token_id") +
                              " is not set"));
  }
  if (v->add_eos && v->eos < 0) {
    return Err(Error::corrupt(key("add_eos_token") + " is true, but " + key("eos_token_id") +
                              " is not set"));
  }
  if (v->type == VocabType::kWpm) {
    v->lowercase = file.get_bool(key("normalizer.lowercase")).value_or(true);
    v->strip_accents = file.get_bool(key("normalizer.strip_accents")).value_or(v->lowercase);
  }

  // Tokens recognised by text. Id order makes the choice among several candidates stable
  // (llama.cpp walks a hash map). Each one found is forced to be a control token.
  auto detect = [&](int32_t &slot, auto &texts) {
    for (int32_t id = 0; slot < 0 && id < v->n(); ++id) {
      if (one_of(v->text[id], texts)) {
        slot = id;
        v->attr[id] |= kAttrControl;
      }
    }
  };
  detect(v->eot, kEotTexts);
  if (v->eom < 0) {
    const int32_t id = v->find("<|eom_id|>");
    if (id >= 0)
      v->eom = id, v->attr[id] |= kAttrControl;
  }
  detect(fim_pre, kFimPreTexts);
  detect(fim_suf, kFimSufTexts);
  detect(fim_mid, kFimMidTexts);
  detect(fim_pad, kFimPadTexts);
  detect(fim_rep, kFimRepTexts);
  detect(fim_sep, kFimSepTexts);

  for (int32_t id = 0; id < v->n(); ++id) {
    if ((v->attr[id] & kAttrControl) && v->text[id].find("unused") != std::string::npos) {
      v->attr[id] |= kAttrUnused;
    }
  }
  for (int32_t id : {fim_pad, fim_rep, fim_sep}) {
    if (id >= 0)
      v->eog.insert(id);
  }
  for (int32_t id = 0; id < v->n(); ++id) {
    if (one_of(v->text[id], kEogTexts)) {
      v->eog.insert(id);
      v->attr[id] |= kAttrControl;
    }
  }
  for (const char *t : {"<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"}) {
    const int32_t id = v->find(t);
    if (id >= 0)
      v->attr[id] = kAttrUserDefined; // gpt-oss: always rendered
  }
  for (int32_t id : {v->eos, v->eot, v->eom}) {
    if (id >= 0)
      v->eog.insert(id);
  }
  {
    // o200k_harmony / solar-open: "<|end|>" ends a message, not the generation.
    auto has = [&](const char *t) {
      const int32_t id = v->find(t);
      return id >= 0 && v->eog.count(id) > 0;
    };
    if (has("<|end|>") &&
        ((has("<|return|>") && has("<|call|>")) || (has("<|calls|>") && has("<|flush|>")))) {
      const int32_t id = v->find("<|end|>");
      v->eog.erase(id);
      v->attr[id] = kAttrUserDefined;
    }
    if (has("<|tool_response>") && has("</s>")) {
      const int32_t id = v->find("</s>");
      v->eog.erase(id);
      v->attr[id] = kAttrNormal;
    }
  }

  for (int32_t id = 0; id < v->n(); ++id) {
    if (v->attr[id] & (kAttrControl | kAttrUserDefined | kAttrUnknown))
      v->special.push_back(id);
  }
  std::stable_sort(v->special.begin(), v->special.end(),
                   [&](int32_t a, int32_t b) { return v->text[a].size() > v->text[b].size(); });

  // Per-model strip attributes llama.cpp sets by name (they are not in GGUF).
  const std::string name = lower_ascii(file.get_string("general.name").value_or(""));
  const std::string arch(file.get_string("general.architecture").value_or(""));
  auto set_attr = [&](const char *t, uint32_t bit, bool on) {
    const int32_t id = v->find(t);
    if (id >= 0)
      v->attr[id] = on ? (v->attr[id] | bit) : (v->attr[id] & ~bit);
  };
  if (pre == "jina-v2-de" || pre == "jina-v2-es" || pre == "jina-v2-code" ||
      arch.find("nomic-bert-moe") != std::string::npos ||
      arch.find("jina-bert-v3") != std::string::npos) {
    set_attr("<mask>", kAttrLstrip, true);
  } else if (name.find("phi-3") != std::string::npos || name.find("phi3") != std::string::npos) {
    for (int32_t id : v->special)
      v->attr[id] |= kAttrRstrip;
    set_attr("</s>", kAttrRstrip, true);
    for (const char *t : {"<unk>", "<s>", "<|endoftext|>"})
      set_attr(t, kAttrRstrip, false);
  } else if (name.find("modern-bert") != std::string::npos) {
    set_attr("[MASK]", kAttrLstrip, true);
  }

  v->piece.resize(n);
  for (int32_t id = 0; id < v->n(); ++id)
    v->piece[id] = render_piece(*v, id);
  return v;
}

} // namespace gantry::engine
