#include "engine/tokenizer/pre_tokenizer.h"

#include <array>
#include <span>

#include "engine/tokenizer/unicode.h"

namespace gantry::engine {
namespace {

// The regexes are llama.cpp's (src/llama-vocab.cpp), kept byte-for-byte so that the two
// hand-written scanners are picked by exactly the same patterns.
constexpr std::string_view kGpt2 =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)";
constexpr std::string_view kLlama3 =
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|"
    "\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
constexpr std::string_view kQwen2 =
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|"
    "\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
constexpr std::string_view kQwen35 =
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?[\\p{L}\\p{M}]"
    "+"
    "|\\p{N}| ?[^\\s\\p{L}\\p{M}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
constexpr std::string_view kCjk = "[\u4E00-\u9FA5\u0800-\u4E00\uAC00-\uD7FF]+";
constexpr std::string_view kDeepseekLlmLetters =
    "\\s?[A-Za-z\u00B5\u00C0-\u00D6\u00D8-\u00F6\u00F8-\u01BA\u01BC-\u01BF\u01C4-\u0293\u0295-"
    "\u02AF\u0370-\u0373\u0376\u0377\u037B-\u037D\u037F\u0386\u0388-\u038A\u038C\u038E-\u03A1"
    "\u03A3-\u03F5\u03F7-\u0481\u048A-\u052F\u0531-\u0556\u10A0-\u10C5\u13A0-\u13F5\u13F8-\u13FD"
    "\u1C90-\u1CBA\u1CBD-\u1CBF\u1D00-\u1D2B\u1D6B-\u1D77\u1D79-\u1D9A\u1E00-\u1F15\u1F18-\u1F1D"
    "\u1F20-\u1F45\u1F48-\u1F4D\u1F50-\u1F57\u1F59\u1F5B\u1F5D\u1F5F-\u1F7D\u1F80-\u1FB4\u1FB6-"
    "\u1FBC\u1FBE\u1FC2-\u1FC4\u1FC6-\u1FCC\u1FD0-\u1FD3\u1FD6-\u1FDB\u1FE0-\u1FEC\u1FF2-\u1FF4"
    "\u1FF6-\u1FFC\u2102\u2107\u210A-\u2113\u2115\u2119-\u211D\u2124\u2126\u2128\u212A-\u212D"
    "\u212F-\u2134\u2139\u213C-\u213F\u2145-\u2149\u214E\u2183\u2184\u2C00-\u2C7B\u2C7E-\u2CE4"
    "\u2CEB-\u2CEE\u2CF2\u2CF3\uA640-\uA66D\uA680-\uA69B\uA722-\uA76F\uA771-\uA787\uA78B-\uA78E"
    "\uAB70-\uABBF\uFB00-\uFB06\uFB13-\uFB17\uFF21-\uFF3A\uFF41-\uFF5A\U00010400-\U0001044F"
    "\U000104B0-\U000104D3\U000104D8-\U000104FB\U00010C80-\U00010CB2\U00010CC0-\U00010CF2"
    "\U000118A0-\U000118DF\U0001E900-\U0001E943]+";
constexpr std::string_view kDeepseekLlmPunct =
    "\\s?[!-/:-~\uFF01-\uFF0F\uFF1A-\uFF5E\u2018-\u201F\u3000-\u3002]+";
constexpr std::string_view kDeepseekV3Main =
    "[!\"#$%&'()*+,\\-./"
    ":;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+|"
    " ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+";
constexpr std::string_view kPoro = " ?[^(\\s|.,!?\u2026\u3002\uFF0C\u3001\u0964\u06D4\u060C)]+";
constexpr std::string_view kGpt4o =
    "[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))*((?=[\\p{L}])([^A-Z]))+(?:'[sS]|'[tT]|'[rR][eE]|"
    "'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))+((?=[\\p{L}])("
    "[^A-Z]))*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\\p{N}{1,3}| "
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
constexpr std::string_view kTekken = "[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))*((?=[\\p{L}])([^"
                                     "A-Z]))+|[^\\r\\n\\p{L}\\p{N}]?((?="
                                     "[\\p{L}])([^a-z]))+((?=[\\p{L}])([^A-Z]))*|\\p{N}| "
                                     "?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|"
                                     "\\s+(?!\\S)|\\s+";
constexpr std::string_view kSeedCoder =
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|"
    "\\p{N}{1}| ?[^\\s\\p{L}\\p{N}\\r\\n]+|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
constexpr std::string_view kBailing =
    "'(?:[sSdDmMtT]|[lL][lL]|[vV][eE]|[rR][eE])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| "
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]|\\s+(?!\\S)|\\s+";

struct PreSpec {
  std::vector<std::string_view> names;
  std::vector<std::string_view> regexes;
  bool ignore_merges = false;
  bool add_bos = false;
  bool clean_spaces = true;
  bool no_bos = false;
};

// llama.cpp's name -> (regexes, flags) table, for the pre-tokenizers whose patterns this engine
// can run. The flags are the ones llama-vocab.cpp sets next to each name.
const std::vector<PreSpec> &specs() {
  static const std::vector<PreSpec> table = {
      {{"default"}, {"[\\p{P}\\$\\+<=>\\^~\\|]+", kGpt2, "\\p{N}+", "[0-9][0-9][0-9]"}},
      {{"llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2",
        "jina-v5-nano"},
       {kLlama3},
       true,
       true},
      {{"dbrx", "smaug-bpe"}, {kLlama3}},
      {{"glm4", "chatglm-bpe"}, {kLlama3}, false, false, true, true},
      {{"deepseek-llm"},
       {"[\r\n]", kDeepseekLlmLetters, kDeepseekLlmPunct, "\\s+$", kCjk, "\\p{N}+"},
       false,
       false,
       false},
      {{"deepseek-coder"},
       {"[\r\n]", "\\s?\\p{L}+", "\\s?\\p{P}+", kCjk, "\\p{N}"},
       false,
       false,
       false},
      {{"deepseek-v3", "hunyuan-dense", "joyai-llm", "hy_v4"},
       {"\\p{N}{1,3}", "[\u4E00-\u9FA5\u3040-\u309F\u30A0-\u30FF]+", kDeepseekV3Main},
       false,
       false,
       false},
      {{"falcon"}, {"[\\p{P}\\$\\+<=>\\^~\\|`]+", kGpt2, "[0-9][0-9][0-9]"}},
      {{"starcoder", "refact", "codeshell", "exaone", "minerva-7b", "mellum2"}, {"\\p{N}", kGpt2}},
      {{"command-r", "smollm"}, {"\\p{N}", kGpt2}, false, false, false},
      {{"gpt-2", "phi-2", "jina-es", "jina-de", "gigachat", "jina-v2-es", "jina-v2-de", "a.x-4.0",
        "mellum", "modern-bert", "exaone4", "mpt", "olmo", "jais", "jina-v1-en", "jina-v2-code",
        "roberta-bpe"},
       {kGpt2}},
      {{"trillion", "granite-docling"}, {kGpt2}, false, false, false},
      {{"qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "hunyuan", "solar-open"},
       {kQwen2},
       false,
       false,
       false},
      {{"stablelm2", "megrez"}, {kQwen2}},
      {{"qwen35"}, {kQwen35}, false, false, false},
      {{"poro-chat"}, {kPoro}, false, false, false},
      {{"bloom", "gpt3-finnish"}, {kPoro}},
      {{"viking"}, {kPoro, "\\p{N}"}, false, false, false},
      {{"gpt-4o", "llama4", "kanana2", "talkie", "minimax-m2"}, {kGpt4o}, false, false, false},
      {{"tekken"}, {kTekken}, true, true, false},
      {{"chameleon"},
       {"<sentinel:[0-9]+>", "(IMGIMG)((A|B|C|D|E|F|G|H|I){1,4})Z", "([\\t\\n]|    |  )", "\\p{N}",
        "[\\p{P}!-/:-@\\[-`{-~]", kGpt2},
       false,
       true,
       false},
      {{"seed-coder"}, {kSeedCoder}, false, false, false},
      {{"bailingmoe", "bailingmoe2", "llada-moe"}, {kBailing}, false, false, false},
      {{"grok-2"}, {kQwen2}, false, false, false},
  };
  return table;
}

constexpr uint32_t kOutOfRange = 0xFFFFFFFF;

// Cursor over one fragment of code points for the hand-written scanners; positions outside the
// fragment read as "no character", as the regex would see the fragment's end.
struct Fragment {
  std::span<const uint32_t> cps;
  size_t end;
  uint32_t cp(size_t pos) const { return pos < end ? cps[pos] : kOutOfRange; }
  bool in(size_t pos) const { return pos < end; }
  bool letter(size_t pos) const {
    return in(pos) && unicode::class_of(cps[pos]) == unicode::Class::kLetter;
  }
  bool number(size_t pos) const {
    return in(pos) && unicode::class_of(cps[pos]) == unicode::Class::kNumber;
  }
  bool space(size_t pos) const { return in(pos) && unicode::is_whitespace(cps[pos]); }
  // [^\s\p{L}\p{N}] for a position inside the fragment.
  bool other(size_t pos) const { return in(pos) && !space(pos) && !letter(pos) && !number(pos); }
};

uint32_t ascii_lower(uint32_t c) { return c >= 'A' && c <= 'Z' ? c + 32 : c; }

// 's|'t|'re|'ve|'m|'ll|'d; returns the match length (0 when none).
size_t contraction(const Fragment &f, size_t pos, bool any_case) {
  if (f.cp(pos) != '\'' || !f.in(pos + 1))
    return 0;
  auto lower = [&](uint32_t c) { return any_case ? ascii_lower(c) : c; };
  const uint32_t a = lower(f.cp(pos + 1));
  if (a == 's' || a == 't' || a == 'm' || a == 'd')
    return 2;
  if (!f.in(pos + 2))
    return 0;
  const uint32_t b = lower(f.cp(pos + 2));
  if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l'))
    return 3;
  return 0;
}

// Pieces of trailing whitespace: \s+(?!\S) leaves the last space for the next word unless the
// run reaches the fragment's end.
size_t whitespace_run_end(const Fragment &f, size_t pos) {
  size_t n = 0;
  while (f.space(pos + n))
    ++n;
  if (n > 1 && f.in(pos + n))
    return pos + n - 1;
  if (n > 0)
    return pos + n;
  return pos + 1; // no alternative matched: the character stands alone
}

// 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
void split_gpt2(const Fragment &f, size_t begin, std::vector<size_t> &out) {
  size_t pos = begin;
  while (pos < f.end) {
    const size_t start = pos;
    if (size_t n = contraction(f, pos, false)) {
      pos += n;
    } else {
      const size_t body = f.cp(pos) == ' ' ? pos + 1 : pos;
      if (f.letter(body)) {
        pos = body;
        while (f.letter(pos))
          ++pos;
      } else if (f.number(body)) {
        pos = body;
        while (f.number(pos))
          ++pos;
      } else if (f.other(body)) {
        pos = body;
        while (f.other(pos))
          ++pos;
      } else {
        pos = whitespace_run_end(f, pos);
      }
    }
    out.push_back(pos - start);
  }
}

// (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|
// \s*[\r\n]+|\s+(?!\S)|\s+
void split_llama3(const Fragment &f, size_t begin, std::vector<size_t> &out) {
  size_t pos = begin;
  auto newline = [&](size_t p) { return f.cp(p) == '\r' || f.cp(p) == '\n'; };
  while (pos < f.end) {
    const size_t start = pos;
    if (size_t n = contraction(f, pos, true)) {
      out.push_back(n);
      pos += n;
      continue;
    }
    if (!newline(pos) && !f.number(pos) && (f.letter(pos) || f.letter(pos + 1))) {
      ++pos;
      while (f.letter(pos))
        ++pos;
      out.push_back(pos - start);
      continue;
    }
    if (f.number(pos)) {
      size_t group = pos;
      while (f.number(pos)) {
        ++pos;
        if (pos - group == 3) {
          out.push_back(3);
          group = pos;
        }
      }
      if (pos > group)
        out.push_back(pos - group);
      continue;
    }
    const size_t body = f.cp(pos) == ' ' ? pos + 1 : pos;
    // A lone trailing ' ' also lands here (the regex gives it to \s+; same piece).
    if (f.other(body) || (body != pos && !f.in(body))) {
      pos = body;
      while (f.other(pos))
        ++pos;
      while (newline(pos))
        ++pos;
      out.push_back(pos - start);
      continue;
    }
    size_t n = 0, after_newline = 0;
    while (f.space(pos + n)) {
      if (newline(pos + n))
        after_newline = pos + n + 1;
      ++n;
    }
    pos = after_newline > 0 ? after_newline : whitespace_run_end(f, pos);
    out.push_back(pos - start);
  }
}

} // namespace

Result<PreTokenizer> PreTokenizer::create(std::string_view pre) {
  if (pre.empty())
    pre = "default";
  for (const PreSpec &spec : specs()) {
    bool hit = false;
    for (std::string_view n : spec.names)
      hit = hit || n == pre;
    if (!hit)
      continue;
    PreTokenizer p;
    p.traits_ = {std::string(pre), spec.ignore_merges, spec.add_bos, spec.clean_spaces,
                 spec.no_bos};
    for (std::string_view rx : spec.regexes) {
      Step step;
      if (rx == kGpt2) {
        step.kind = Kind::kGpt2;
      } else if (rx == kLlama3) {
        step.kind = Kind::kLlama3;
      } else {
        auto compiled = Regex::compile(rx);
        if (!compiled.ok())
          return Err(compiled.take_error());
        step.regex.emplace(std::move(compiled).value());
      }
      p.steps_.push_back(std::move(step));
    }
    return p;
  }
  return Err(Error::unsupported("tokenizer.ggml.pre: unsupported pre-tokenizer '" +
                                std::string(pre) + "'"));
}

std::vector<std::string> PreTokenizer::split(std::string_view text) const {
  const std::vector<uint32_t> cps = unicode::decode_utf8(text);
  // The generic regexes see non-ASCII whitespace as U+000B, which their \s matches, as in
  // llama.cpp (std::regex's \s is ASCII-only).
  std::vector<uint32_t> view;
  std::vector<size_t> lengths = {cps.size()};
  std::vector<size_t> next;
  for (const Step &step : steps_) {
    next.clear();
    size_t start = 0;
    for (size_t len : lengths) {
      const size_t end = start + len;
      if (step.kind == Kind::kGpt2) {
        split_gpt2({cps, end}, start, next);
      } else if (step.kind == Kind::kLlama3) {
        split_llama3({cps, end}, start, next);
      } else {
        if (view.empty() && !cps.empty()) {
          view = cps;
          for (uint32_t &c : view) {
            if (c >= 0x80 && unicode::is_whitespace(c))
              c = 0x0B;
          }
        }
        std::span<const uint32_t> frag(view.data() + start, len);
        size_t pos = 0, mb = 0, me = 0;
        while (pos < len && step.regex->find(frag, pos, &mb, &me)) {
          if (mb > pos)
            next.push_back(mb - pos);
          next.push_back(me - mb);
          pos = me;
        }
        if (pos < len)
          next.push_back(len - pos);
      }
      start = end;
    }
    lengths.swap(next);
  }

  std::vector<std::string> words;
  words.reserve(lengths.size());
  std::string utf8;
  size_t start = 0;
  for (size_t len : lengths) {
    utf8.clear();
    for (size_t i = start; i < start + len; ++i)
      unicode::append_utf8(cps[i], utf8);
    std::string word;
    word.reserve(utf8.size() * 2);
    for (char c : utf8)
      word += unicode::byte_to_unicode(static_cast<uint8_t>(c));
    words.push_back(std::move(word));
    start += len;
  }
  return words;
}

} // namespace gantry::engine
