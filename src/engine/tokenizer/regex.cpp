#include "engine/tokenizer/regex.h"

#include <memory>

#include "engine/tokenizer/unicode.h"

namespace gantry::engine {
namespace {

using unicode::Class;

constexpr uint32_t bit(Class c) { return 1u << static_cast<unsigned>(c); }

// llama.cpp keeps ASCII as-is when it "collapses" text for std::regex and expands \p{X} to a
// fixed ASCII set, which differs from Unicode in one place: '~' (Sm) is in no class.
uint32_t ascii_category_bits(uint32_t cp) {
  if (cp >= '0' && cp <= '9')
    return bit(Class::kNumber);
  if ((cp >= 'A' && cp <= 'Z') || (cp >= 'a' && cp <= 'z'))
    return bit(Class::kLetter);
  switch (cp) {
  case '$':
  case '+':
  case '<':
  case '=':
  case '>':
  case '^':
  case '`':
  case '|': return bit(Class::kSymbol);
  case '!':
  case '"':
  case '#':
  case '%':
  case '&':
  case '\'':
  case '(':
  case ')':
  case '*':
  case ',':
  case '-':
  case '.':
  case '/':
  case ':':
  case ';':
  case '?':
  case '@':
  case '[':
  case '\\':
  case ']':
  case '_':
  case '{':
  case '}': return bit(Class::kPunctuation);
  default: return 0;
  }
}

uint32_t category_bits(uint32_t cp) {
  if (cp < 0x80)
    return ascii_category_bits(cp);
  switch (unicode::class_of(cp)) {
  case Class::kNumber: return bit(Class::kNumber);
  case Class::kLetter: return bit(Class::kLetter);
  case Class::kPunctuation: return bit(Class::kPunctuation);
  case Class::kSymbol: return bit(Class::kSymbol);
  case Class::kMark: return bit(Class::kMark);
  default: return 0;
  }
}

bool is_regex_space(uint32_t cp) { return cp == ' ' || (cp >= 0x09 && cp <= 0x0D); }
bool is_regex_digit(uint32_t cp) { return cp >= '0' && cp <= '9'; }
bool is_regex_word(uint32_t cp) {
  return is_regex_digit(cp) || (cp >= 'A' && cp <= 'Z') || (cp >= 'a' && cp <= 'z') || cp == '_';
}

struct Node {
  enum Kind { kEmpty, kClass, kAny, kConcat, kAlt, kRepeat, kLook, kBegin, kEnd } kind = kEmpty;
  uint32_t cls = 0;
  int min = 0, max = 0; // kRepeat; max < 0 means unbounded
  bool negate = false;  // kLook
  std::vector<std::unique_ptr<Node>> kids;
};

bool nullable(const Node &n) {
  switch (n.kind) {
  case Node::kClass:
  case Node::kAny: return false;
  case Node::kConcat:
    for (auto &k : n.kids)
      if (!nullable(*k))
        return false;
    return true;
  case Node::kAlt:
    for (auto &k : n.kids)
      if (nullable(*k))
        return true;
    return false;
  case Node::kRepeat: return n.min == 0 || nullable(*n.kids[0]);
  default: return true;
  }
}

} // namespace

bool Regex::CharClass::matches(uint32_t cp) const {
  bool m = categories != 0 && (categories & category_bits(cp)) != 0;
  if (!m && (space || not_space))
    m = is_regex_space(cp) ? space : not_space;
  if (!m && (digit || not_digit))
    m = is_regex_digit(cp) ? digit : not_digit;
  if (!m && (word || not_word))
    m = is_regex_word(cp) ? word : not_word;
  for (size_t k = 0; !m && k < ranges.size(); ++k) {
    m = cp >= ranges[k].first && cp <= ranges[k].second;
  }
  return m != negated;
}

class RegexCompiler {
public:
  explicit RegexCompiler(std::string_view pattern)
      : src_(pattern), p_(unicode::decode_utf8(pattern)) {}

  Result<Regex> compile() {
    auto root = parse_alt();
    if (!error_.empty())
      return fail(error_);
    if (i_ != p_.size())
      return fail("unbalanced ')'");
    emit_node(*root);
    emit({Regex::Op::kMatch});
    // Lookahead bodies are separate programs after the main one; compiling one may queue more.
    for (size_t k = 0; k < pending_.size(); ++k) {
      re_.prog_[pending_[k].first].x = static_cast<uint32_t>(re_.prog_.size());
      emit_node(*pending_[k].second);
      emit({Regex::Op::kMatch});
    }
    if (!error_.empty())
      return fail(error_);
    return std::move(re_);
  }

private:
  Unexpected fail(const std::string &why) {
    return Err(Error::unsupported("pre-tokenizer regex '" + std::string(src_) + "': " + why));
  }
  bool at_end() const { return i_ >= p_.size(); }
  uint32_t peek(size_t ahead = 0) const { return i_ + ahead < p_.size() ? p_[i_ + ahead] : 0; }

  std::unique_ptr<Node> make(Node::Kind k) {
    auto n = std::make_unique<Node>();
    n->kind = k;
    return n;
  }
  std::unique_ptr<Node> class_node(Regex::CharClass cc) {
    auto n = make(Node::kClass);
    n->cls = static_cast<uint32_t>(re_.classes_.size());
    re_.classes_.push_back(std::move(cc));
    return n;
  }

  std::unique_ptr<Node> parse_alt() {
    auto first = parse_concat();
    if (at_end() || peek() != '|')
      return first;
    auto alt = make(Node::kAlt);
    alt->kids.push_back(std::move(first));
    while (!at_end() && peek() == '|') {
      ++i_;
      alt->kids.push_back(parse_concat());
    }
    return alt;
  }

  std::unique_ptr<Node> parse_concat() {
    auto cat = make(Node::kConcat);
    while (!at_end() && peek() != '|' && peek() != ')' && error_.empty()) {
      cat->kids.push_back(parse_repeat());
    }
    return cat;
  }

  std::unique_ptr<Node> parse_repeat() {
    auto atom = parse_atom();
    while (!at_end() && error_.empty()) {
      int min = 0, max = 0;
      const uint32_t c = peek();
      if (c == '*') {
        min = 0, max = -1, ++i_;
      } else if (c == '+') {
        min = 1, max = -1, ++i_;
      } else if (c == '?') {
        min = 0, max = 1, ++i_;
      } else if (c == '{' && peek(1) >= '0' && peek(1) <= '9') {
        ++i_;
        min = parse_int();
        max = min;
        if (peek() == ',') {
          ++i_;
          max = peek() == '}' ? -1 : parse_int();
        }
        if (peek() != '}' || (max >= 0 && max < min)) {
          error_ = "bad {n,m} quantifier";
          break;
        }
        ++i_;
      } else {
        break;
      }
      if (peek() == '?')
        error_ = "lazy quantifiers are not supported";
      if (nullable(*atom) && max < 0)
        error_ = "unbounded repeat of an empty-matching item";
      auto rep = make(Node::kRepeat);
      rep->min = min;
      rep->max = max;
      rep->kids.push_back(std::move(atom));
      atom = std::move(rep);
    }
    return atom;
  }

  int parse_int() {
    int v = 0;
    while (peek() >= '0' && peek() <= '9' && v < 100000)
      v = v * 10 + int(p_[i_++] - '0');
    return v;
  }

  std::unique_ptr<Node> parse_atom() {
    const uint32_t c = p_[i_++];
    switch (c) {
    case '(': {
      auto look = Node::kConcat;
      bool negate = false;
      if (peek() == '?') {
        if (peek(1) == ':') {
          i_ += 2;
        } else if (peek(1) == '=' || peek(1) == '!') {
          look = Node::kLook;
          negate = peek(1) == '!';
          i_ += 2;
        } else {
          error_ = "unsupported group syntax";
          return make(Node::kEmpty);
        }
      }
      auto inner = parse_alt();
      if (peek() != ')') {
        error_ = "missing ')'";
        return make(Node::kEmpty);
      }
      ++i_;
      if (look != Node::kLook)
        return inner;
      auto n = make(Node::kLook);
      n->negate = negate;
      n->kids.push_back(std::move(inner));
      return n;
    }
    case '[': return parse_class();
    case '.': return make(Node::kAny);
    case '^': return make(Node::kBegin);
    case '$': return make(Node::kEnd);
    case '\\': {
      Regex::CharClass cc;
      if (!parse_escape(cc))
        return make(Node::kEmpty);
      return class_node(std::move(cc));
    }
    case '*':
    case '+':
    case '?':
    case ')': error_ = "misplaced quantifier or ')'"; return make(Node::kEmpty);
    default: {
      Regex::CharClass cc;
      cc.ranges.push_back({c, c});
      return class_node(std::move(cc));
    }
    }
  }

  // Parses the escape after a '\' into cc (adding a range for literal escapes). Returns the
  // literal code point through *literal when the escape stands for one character.
  bool parse_escape(Regex::CharClass &cc, uint32_t *literal = nullptr) {
    if (at_end()) {
      error_ = "trailing '\\'";
      return false;
    }
    const uint32_t c = p_[i_++];
    uint32_t lit = 0;
    switch (c) {
    case 's': cc.space = true; return true;
    case 'S': cc.not_space = true; return true;
    case 'd': cc.digit = true; return true;
    case 'D': cc.not_digit = true; return true;
    case 'w': cc.word = true; return true;
    case 'W': cc.not_word = true; return true;
    case 'p': return parse_property(cc);
    case 'r': lit = '\r'; break;
    case 'n': lit = '\n'; break;
    case 't': lit = '\t'; break;
    case 'f': lit = '\f'; break;
    case 'v': lit = '\v'; break;
    case '0': lit = 0; break;
    case 'b':
    case 'B':
    case 'P': error_ = "unsupported escape"; return false;
    default: lit = c; break; // \\ \- \[ \] \$ \+ \^ \| \/ ...
    }
    cc.ranges.push_back({lit, lit});
    if (literal)
      *literal = lit;
    return true;
  }

  bool parse_property(Regex::CharClass &cc) {
    if (peek() != '{') {
      error_ = "\\p without {name}";
      return false;
    }
    size_t close = i_;
    while (close < p_.size() && p_[close] != '}')
      ++close;
    std::string name;
    for (size_t k = i_ + 1; k < close; ++k)
      name.push_back(char(p_[k]));
    i_ = close + 1;
    if (name == "L" || name == "Lu" || name == "Ll" || name == "Lt" || name == "Lm" ||
        name == "Lo") {
      cc.categories |= bit(Class::kLetter);
    } else if (name == "N") {
      cc.categories |= bit(Class::kNumber);
    } else if (name == "P") {
      cc.categories |= bit(Class::kPunctuation);
    } else if (name == "S") {
      cc.categories |= bit(Class::kSymbol);
    } else if (name == "M") {
      cc.categories |= bit(Class::kMark);
    } else {
      error_ = "unsupported property \\p{" + name + "}";
      return false;
    }
    return true;
  }

  std::unique_ptr<Node> parse_class() {
    Regex::CharClass cc;
    if (peek() == '^') {
      cc.negated = true;
      ++i_;
    }
    while (true) {
      if (at_end()) {
        error_ = "missing ']'";
        return make(Node::kEmpty);
      }
      uint32_t c = p_[i_++];
      if (c == ']')
        break;
      uint32_t lo = c;
      bool is_literal = true;
      if (c == '\\') {
        const size_t before = cc.ranges.size();
        if (!parse_escape(cc, &lo))
          return make(Node::kEmpty);
        is_literal = cc.ranges.size() > before;
        if (is_literal)
          cc.ranges.pop_back(); // re-added below, possibly as a range
      }
      if (!is_literal)
        continue;
      uint32_t hi = lo;
      if (peek() == '-' && i_ + 1 < p_.size() && peek(1) != ']') {
        ++i_;
        uint32_t h = p_[i_++];
        if (h == '\\') {
          Regex::CharClass tmp;
          if (!parse_escape(tmp, &h))
            return make(Node::kEmpty);
          if (tmp.ranges.empty()) {
            error_ = "class range ends in a class escape";
            return make(Node::kEmpty);
          }
        }
        hi = h;
        if (hi < lo) {
          error_ = "reversed class range";
          return make(Node::kEmpty);
        }
      }
      cc.ranges.push_back({lo, hi});
    }
    return class_node(std::move(cc));
  }

  size_t emit(Regex::Inst inst) {
    re_.prog_.push_back(inst);
    return re_.prog_.size() - 1;
  }
  uint32_t here() const { return static_cast<uint32_t>(re_.prog_.size()); }

  void emit_node(const Node &n) {
    using Op = Regex::Op;
    switch (n.kind) {
    case Node::kEmpty: break;
    case Node::kClass: emit({Op::kClass, false, n.cls, 0}); break;
    case Node::kAny: emit({Op::kAny}); break;
    case Node::kBegin: emit({Op::kBegin}); break;
    case Node::kEnd: emit({Op::kEnd}); break;
    case Node::kConcat:
      for (auto &k : n.kids)
        emit_node(*k);
      break;
    case Node::kAlt: {
      std::vector<size_t> jumps;
      for (size_t k = 0; k < n.kids.size(); ++k) {
        if (k + 1 < n.kids.size()) {
          size_t split = emit({Op::kSplit});
          re_.prog_[split].x = here();
          emit_node(*n.kids[k]);
          jumps.push_back(emit({Op::kJmp}));
          re_.prog_[split].y = here();
        } else {
          emit_node(*n.kids[k]);
        }
      }
      for (size_t j : jumps)
        re_.prog_[j].x = here();
      break;
    }
    case Node::kRepeat: {
      const Node &body = *n.kids[0];
      for (int k = 0; k < n.min; ++k)
        emit_node(body);
      if (n.max < 0) {
        uint32_t loop = here();
        size_t split = emit({Op::kSplit});
        re_.prog_[split].x = here();
        emit_node(body);
        emit({Op::kJmp, false, loop, 0});
        re_.prog_[split].y = here();
      } else {
        std::vector<size_t> splits;
        for (int k = n.min; k < n.max; ++k) {
          size_t split = emit({Op::kSplit});
          re_.prog_[split].x = here();
          splits.push_back(split);
          emit_node(body);
        }
        for (size_t s : splits)
          re_.prog_[s].y = here();
      }
      break;
    }
    case Node::kLook: {
      size_t at = emit({Op::kLookahead, n.negate, 0, 0});
      pending_.push_back({at, n.kids[0].get()});
      break;
    }
    }
  }

  std::string_view src_;
  std::vector<uint32_t> p_;
  size_t i_ = 0;
  std::string error_;
  Regex re_;
  std::vector<std::pair<size_t, const Node *>> pending_;
  // Lookahead bodies are referenced from pending_ until compile() ends; the AST owns them.
};

Result<Regex> Regex::compile(std::string_view pattern) { return RegexCompiler(pattern).compile(); }

long Regex::run(std::span<const uint32_t> text, uint32_t start_pc, size_t start_pos,
                bool nonempty) const {
  std::vector<std::pair<uint32_t, size_t>> stack;
  stack.push_back({start_pc, start_pos});
  while (!stack.empty()) {
    auto [pc, pos] = stack.back();
    stack.pop_back();
    while (true) {
      const Inst &in = prog_[pc];
      bool ok = true;
      switch (in.op) {
      case Op::kClass:
        ok = pos < text.size() && classes_[in.x].matches(text[pos]);
        ++pos, ++pc;
        break;
      case Op::kAny:
        ok = pos < text.size() && text[pos] != '\n' && text[pos] != '\r' && text[pos] != 0x2028 &&
             text[pos] != 0x2029;
        ++pos, ++pc;
        break;
      case Op::kSplit:
        stack.push_back({in.y, pos});
        pc = in.x;
        break;
      case Op::kJmp: pc = in.x; break;
      case Op::kLookahead:
        ok = (run(text, in.x, pos, false) >= 0) != in.negate;
        ++pc;
        break;
      case Op::kBegin:
        ok = pos == 0;
        ++pc;
        break;
      case Op::kEnd:
        ok = pos == text.size();
        ++pc;
        break;
      case Op::kMatch:
        // std::regex_iterator retries at the same place for a non-empty match after an empty
        // one; asking for non-empty matches up front gives the same words.
        if (nonempty && pos == start_pos) {
          ok = false;
          break;
        }
        return static_cast<long>(pos);
      }
      if (!ok)
        break;
    }
  }
  return -1;
}

bool Regex::find(std::span<const uint32_t> text, size_t from, size_t *begin,
                 size_t *end_out) const {
  for (size_t start = from; start <= text.size(); ++start) {
    long end = run(text, 0, start, true);
    if (end >= 0) {
      *begin = start;
      *end_out = static_cast<size_t>(end);
      return true;
    }
  }
  return false;
}

} // namespace gantry::engine
