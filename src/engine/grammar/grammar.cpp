#include "engine/grammar/grammar.h"

#include <algorithm>
#include <map>
#include <unordered_map>
#include <utility>

namespace gantry::engine {

bool CharClass::contains_slow(uint32_t cp) const {
  auto it = std::upper_bound(ranges.begin(), ranges.end(), cp,
                             [](uint32_t c, const Range &r) { return c < r.lo; });
  return it != ranges.begin() && cp <= std::prev(it)->hi;
}

bool CharClass::intersects(uint32_t lo, uint32_t hi) const {
  for (const Range &r : ranges)
    if (r.lo <= hi && lo <= r.hi)
      return true;
  return false;
}

size_t Grammar::bytes() const {
  size_t n = sizeof(Grammar) + elems.size() * sizeof(GrammarElem);
  for (const auto &a : rule_alts)
    n += sizeof(a) + a.size() * sizeof(uint32_t);
  for (const auto &s : rule_names)
    n += sizeof(s) + s.size();
  for (const auto &c : classes)
    n += sizeof(c) + c.ranges.size() * sizeof(CharClass::Range);
  return n;
}

namespace {

using Ranges = std::vector<std::pair<uint32_t, uint32_t>>;
using Alt = std::vector<GrammarElem>;

// Sorts, merges and optionally complements (over all code points) a list of ranges.
Ranges normalize(Ranges r, bool negate) {
  std::sort(r.begin(), r.end());
  Ranges merged;
  for (const auto &[lo, hi] : r) {
    if (!merged.empty() && lo <= merged.back().second + 1)
      merged.back().second = std::max(merged.back().second, hi);
    else
      merged.emplace_back(lo, hi);
  }
  if (!negate)
    return merged;
  Ranges out;
  uint32_t next = 0;
  for (const auto &[lo, hi] : merged) {
    if (lo > next)
      out.emplace_back(next, lo - 1);
    next = hi + 1;
  }
  if (next <= kMaxCodePoint)
    out.emplace_back(next, kMaxCodePoint);
  return out;
}

bool is_word_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '_';
}

int hex_value(char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

class Parser {
public:
  explicit Parser(std::string_view text) : text_(text) {}

  Result<std::shared_ptr<const Grammar>> run() {
    skip_space(true);
    while (pos_ < text_.size()) {
      GANTRY_TRY(parse_rule());
    }
    GANTRY_TRY(check_defined());
    return finish();
  }

private:
  struct Rule {
    std::string name;
    std::vector<Alt> alts;
    bool defined = false;
    size_t where = 0; // definition offset, or first reference while undefined
  };

  Error error_at(size_t offset, const std::string &msg) const {
    size_t line = 1, col = 1;
    for (size_t i = 0; i < offset && i < text_.size(); ++i) {
      if (text_[i] == '\n') {
        ++line;
        col = 1;
      } else {
        ++col;
      }
    }
    return Error::invalid("grammar line " + std::to_string(line) + " column " +
                          std::to_string(col) + ": " + msg);
  }
  Error error(const std::string &msg) const { return error_at(pos_, msg); }

  char peek(size_t ahead = 0) const {
    return pos_ + ahead < text_.size() ? text_[pos_ + ahead] : '\0';
  }
  bool at_end() const { return pos_ >= text_.size(); }

  void skip_space(bool newline_ok) {
    while (!at_end()) {
      const char c = peek();
      if (c == ' ' || c == '\t') {
        ++pos_;
      } else if (c == '#') {
        while (!at_end() && peek() != '\n' && peek() != '\r')
          ++pos_;
      } else if (newline_ok && (c == '\n' || c == '\r')) {
        ++pos_;
      } else {
        break;
      }
    }
  }

  Result<uint32_t> rule_id(std::string_view name, size_t where) {
    auto it = ids_.find(std::string(name));
    if (it != ids_.end())
      return it->second;
    return new_rule(std::string(name), where);
  }

  Result<uint32_t> new_rule(std::string name, size_t where) {
    if (rules_.size() >= kMaxRules)
      return error_at(where, "more than " + std::to_string(kMaxRules) +
                                 " rules (after expanding repetitions)");
    const auto id = static_cast<uint32_t>(rules_.size());
    Rule r;
    r.name = name;
    r.where = where;
    rules_.push_back(std::move(r));
    ids_.emplace(std::move(name), id);
    return id;
  }

  Result<uint32_t> helper_rule(uint32_t parent) {
    const std::string base = rules_[parent].name;
    std::string name;
    do {
      name = base + "_" + std::to_string(++helper_counter_);
    } while (ids_.count(name));
    GANTRY_ASSIGN_OR_RETURN(uint32_t id, new_rule(name, pos_));
    rules_[id].defined = true;
    return id;
  }

  Status add_elems(size_t n) {
    n_elems_ += n;
    if (n_elems_ > kMaxElements)
      return error("grammar has more than " + std::to_string(kMaxElements) +
                   " elements after expanding repetitions");
    return Ok();
  }

  Status parse_rule() {
    const size_t start = pos_;
    while (!at_end() && is_word_char(peek()))
      ++pos_;
    if (pos_ == start)
      return error("expecting a rule name");
    const std::string_view name = text_.substr(start, pos_ - start);
    skip_space(false);
    if (text_.substr(pos_, 3) != "::=")
      return error("expecting ::=");
    pos_ += 3;
    skip_space(true);
    GANTRY_ASSIGN_OR_RETURN(uint32_t id, rule_id(name, start));
    if (rules_[id].defined)
      return error_at(start, "rule '" + std::string(name) + "' is defined twice");
    rules_[id].defined = true;
    rules_[id].where = start;
    GANTRY_TRY(parse_alternates(id, 0));
    if (peek() == '\r')
      pos_ += peek(1) == '\n' ? 2 : 1;
    else if (peek() == '\n')
      ++pos_;
    else if (!at_end())
      return error("expecting a newline or the end of the grammar");
    skip_space(true);
    return Ok();
  }

  // Alternatives of `rule` until a token that cannot continue them (")", a newline at the top).
  Status parse_alternates(uint32_t rule, int depth) {
    if (depth > kMaxNesting)
      return error("groups nest more than " + std::to_string(kMaxNesting) + " deep");
    std::vector<Alt> alts;
    alts.emplace_back();
    GANTRY_TRY(parse_sequence(rule, alts.back(), depth));
    while (peek() == '|') {
      ++pos_;
      skip_space(true);
      alts.emplace_back();
      GANTRY_TRY(parse_sequence(rule, alts.back(), depth));
    }
    GANTRY_TRY(add_elems(alts.size())); // the kEnd of each alternative
    rules_[rule].alts = std::move(alts);
    return Ok();
  }

  // One code point of a literal or class, with escapes; the text is UTF-8.
  Result<uint32_t> parse_char() {
    const size_t start = pos_;
    const auto c = static_cast<unsigned char>(peek());
    if (c == '\\') {
      const char e = peek(1);
      pos_ += 2;
      switch (e) {
      case 'n': return uint32_t{'\n'};
      case 'r': return uint32_t{'\r'};
      case 't': return uint32_t{'\t'};
      case '\\': return uint32_t{'\\'};
      case '"': return uint32_t{'"'};
      case '[': return uint32_t{'['};
      case ']': return uint32_t{']'};
      case '-': return uint32_t{'-'};
      case '^': return uint32_t{'^'};
      case 'x':
      case 'u':
      case 'U': {
        const int digits = e == 'x' ? 2 : e == 'u' ? 4 : 8;
        uint32_t v = 0;
        for (int i = 0; i < digits; ++i) {
          const int h = hex_value(peek());
          if (h < 0)
            return error("expecting " + std::to_string(digits) + " hex digits after \\" + e);
          v = v * 16 + static_cast<uint32_t>(h);
          ++pos_;
        }
        if (v > kMaxCodePoint)
          return error_at(start, "code point above U+10FFFF");
        return v;
      }
      default: return error_at(start, std::string("unknown escape \\") + e);
      }
    }
    // UTF-8 decode.
    int len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (len == 0 || pos_ + len > text_.size())
      return error("invalid UTF-8 in the grammar");
    uint32_t v = len == 1 ? c : c & (0x7F >> len);
    for (int i = 1; i < len; ++i) {
      const auto b = static_cast<unsigned char>(peek(i));
      if ((b & 0xC0) != 0x80)
        return error("invalid UTF-8 in the grammar");
      v = (v << 6) | (b & 0x3F);
    }
    pos_ += len;
    return v;
  }

  Result<uint32_t> class_index(Ranges ranges, bool negate) {
    Ranges norm = normalize(std::move(ranges), negate);
    auto it = class_ids_.find(norm);
    if (it != class_ids_.end())
      return it->second;
    const auto id = static_cast<uint32_t>(classes_.size());
    CharClass cls;
    for (const auto &[lo, hi] : norm) {
      cls.ranges.push_back({lo, hi});
      for (uint32_t c = lo; c <= std::min<uint32_t>(hi, 127); ++c)
        cls.ascii[c >> 6] |= uint64_t{1} << (c & 63);
    }
    classes_.push_back(std::move(cls));
    class_ids_.emplace(std::move(norm), id);
    return id;
  }

  Status push_char(Alt &alt, Ranges ranges, bool negate) {
    GANTRY_ASSIGN_OR_RETURN(uint32_t cls, class_index(std::move(ranges), negate));
    GANTRY_TRY(add_elems(1));
    GrammarElem e;
    e.kind = GrammarElem::kChar;
    e.value = cls;
    alt.push_back(e);
    return Ok();
  }

  static GrammarElem ref(uint32_t rule) {
    GrammarElem e;
    e.kind = GrammarElem::kRef;
    e.value = rule;
    return e;
  }

  Result<int> parse_int() {
    const size_t start = pos_;
    int v = 0;
    while (peek() >= '0' && peek() <= '9') {
      v = v * 10 + (peek() - '0');
      if (v > static_cast<int>(kMaxElements))
        return error_at(start, "repetition count too large");
      ++pos_;
    }
    if (pos_ == start)
      return -1;
    return v;
  }

  // S{m,n} -> S..S (m times) then n-m nested optional copies; S{m,} -> S..S S' with
  // S' ::= S S' | (llama.cpp's rewrite, so the matcher's stacks stay flat).
  Status repeat(uint32_t rule, Alt &alt, size_t sym_start, int min, int max, size_t at) {
    if (sym_start == alt.size())
      return error_at(at, "a repetition operator needs something before it");
    const Alt sym(alt.begin() + static_cast<ptrdiff_t>(sym_start), alt.end());
    // Refuse a count the caps cannot hold before expanding anything: `x{2,99934}` would
    // otherwise build 16,384 helper rules one by one only to be refused at the cap (the fuzzer
    // found that costing 0.1-0.9 s under ASan per request).
    const size_t want_rules = max < 0 ? 1 : static_cast<size_t>(max - min);
    if (want_rules > kMaxRules - std::min(kMaxRules, rules_.size()))
      return error_at(at, "repetition count needs more than " + std::to_string(kMaxRules) +
                              " rules after expanding repetitions");
    if (min > 1 && static_cast<size_t>(min - 1) * sym.size() > kMaxElements)
      return error_at(at, "grammar has more than " + std::to_string(kMaxElements) +
                              " elements after expanding repetitions");
    if (min == 0)
      alt.resize(sym_start);
    for (int i = 1; i < min; ++i) {
      GANTRY_TRY(add_elems(sym.size()));
      alt.insert(alt.end(), sym.begin(), sym.end());
    }
    const int n_opt = max < 0 ? 1 : max - min;
    uint32_t last = 0;
    for (int i = 0; i < n_opt; ++i) {
      GANTRY_ASSIGN_OR_RETURN(uint32_t id, helper_rule(rule));
      Alt first = sym;
      if (i > 0 || max < 0)
        first.push_back(ref(max < 0 ? id : last));
      GANTRY_TRY(add_elems(first.size() + 2));
      rules_[id].alts.push_back(std::move(first));
      rules_[id].alts.emplace_back();
      last = id;
    }
    if (n_opt > 0) {
      GANTRY_TRY(add_elems(1));
      alt.push_back(ref(last));
    }
    return Ok();
  }

  Status parse_sequence(uint32_t rule, Alt &alt, int depth) {
    const bool nested = depth > 0;
    size_t sym_start = alt.size();
    while (!at_end()) {
      const char c = peek();
      if (c == '"') {
        ++pos_;
        sym_start = alt.size();
        while (peek() != '"') {
          if (at_end())
            return error("unterminated literal");
          GANTRY_ASSIGN_OR_RETURN(uint32_t cp, parse_char());
          GANTRY_TRY(push_char(alt, {{cp, cp}}, false));
        }
        ++pos_;
        skip_space(nested);
      } else if (c == '[') {
        ++pos_;
        sym_start = alt.size();
        bool negate = false;
        if (peek() == '^') {
          negate = true;
          ++pos_;
        }
        Ranges ranges;
        while (peek() != ']') {
          if (at_end())
            return error("unterminated character class");
          GANTRY_ASSIGN_OR_RETURN(uint32_t lo, parse_char());
          uint32_t hi = lo;
          if (peek() == '-' && peek(1) != ']' && pos_ + 1 < text_.size()) {
            ++pos_;
            const size_t at = pos_;
            GANTRY_ASSIGN_OR_RETURN(hi, parse_char());
            if (hi < lo)
              return error_at(at, "character range out of order");
          }
          ranges.emplace_back(lo, hi);
        }
        ++pos_;
        GANTRY_TRY(push_char(alt, std::move(ranges), negate));
        skip_space(nested);
      } else if (c == '.') {
        ++pos_;
        sym_start = alt.size();
        GANTRY_TRY(push_char(alt, {{0, kMaxCodePoint}}, false));
        skip_space(nested);
      } else if (is_word_char(c)) {
        const size_t start = pos_;
        while (!at_end() && is_word_char(peek()))
          ++pos_;
        // `name ::=` on the same line means the previous rule lacked its newline.
        size_t look = pos_;
        while (look < text_.size() && (text_[look] == ' ' || text_[look] == '\t'))
          ++look;
        if (text_.substr(look, 3) == "::=")
          return error_at(start, "expecting a newline before the next rule");
        GANTRY_ASSIGN_OR_RETURN(uint32_t id, rule_id(text_.substr(start, pos_ - start), start));
        sym_start = alt.size();
        GANTRY_TRY(add_elems(1));
        alt.push_back(ref(id));
        skip_space(nested);
      } else if (c == '(') {
        ++pos_;
        skip_space(true);
        GANTRY_ASSIGN_OR_RETURN(uint32_t id, helper_rule(rule));
        GANTRY_TRY(parse_alternates(id, depth + 1));
        if (peek() != ')')
          return error("expecting ')'");
        ++pos_;
        sym_start = alt.size();
        GANTRY_TRY(add_elems(1));
        alt.push_back(ref(id));
        skip_space(nested);
      } else if (c == '*' || c == '+' || c == '?') {
        const size_t at = pos_++;
        GANTRY_TRY(repeat(rule, alt, sym_start, c == '+' ? 1 : 0, c == '?' ? 1 : -1, at));
        sym_start = alt.size();
        skip_space(nested);
      } else if (c == '{') {
        const size_t at = pos_++;
        skip_space(false);
        GANTRY_ASSIGN_OR_RETURN(int min, parse_int());
        if (min < 0)
          min = 0;
        int max = min;
        skip_space(false);
        if (peek() == ',') {
          ++pos_;
          skip_space(false);
          GANTRY_ASSIGN_OR_RETURN(max, parse_int());
          skip_space(false);
        }
        if (peek() != '}')
          return error("expecting '}' to close a repetition count");
        ++pos_;
        if (max >= 0 && max < min)
          return error("repetition maximum below its minimum");
        GANTRY_TRY(repeat(rule, alt, sym_start, min, max, at));
        sym_start = alt.size();
        skip_space(nested);
      } else if (c == '<') {
        return error("token references (<...>) are not supported");
      } else {
        break;
      }
    }
    return Ok();
  }

  Status check_defined() const {
    auto root = ids_.find("root");
    if (root == ids_.end() || !rules_[root->second].defined)
      return error_at(0, "the grammar has no 'root' rule");
    for (const Rule &r : rules_)
      if (!r.defined)
        return error_at(r.where, "undefined rule '" + r.name + "'");
    return Ok();
  }

  // Left recursion (A ::= B ..., B ::= A ... through rules that can match nothing) would make
  // the matcher's expansion loop forever.
  Status check_left_recursion() const {
    const size_t n = rules_.size();
    std::vector<char> nullable(n, 0);
    for (bool changed = true; changed;) {
      changed = false;
      for (size_t r = 0; r < n; ++r) {
        if (nullable[r])
          continue;
        for (const Alt &a : rules_[r].alts) {
          bool all = true;
          for (const GrammarElem &e : a)
            if (e.kind != GrammarElem::kRef || !nullable[e.value]) {
              all = false;
              break;
            }
          if (all) {
            nullable[r] = 1;
            changed = true;
            break;
          }
        }
      }
    }
    // Iterative DFS over "may start with" edges; colour 1 = on the path, 2 = done.
    std::vector<char> colour(n, 0);
    struct Frame {
      uint32_t rule;
      size_t alt = 0, elem = 0;
    };
    for (size_t start = 0; start < n; ++start) {
      if (colour[start])
        continue;
      std::vector<Frame> path{{static_cast<uint32_t>(start)}};
      colour[start] = 1;
      while (!path.empty()) {
        Frame &f = path.back();
        const auto &alts = rules_[f.rule].alts;
        if (f.alt >= alts.size()) {
          colour[f.rule] = 2;
          path.pop_back();
          continue;
        }
        const Alt &a = alts[f.alt];
        if (f.elem >= a.size() || a[f.elem].kind != GrammarElem::kRef ||
            (f.elem > 0 && !nullable[a[f.elem - 1].value])) {
          ++f.alt;
          f.elem = 0;
          continue;
        }
        const uint32_t next = a[f.elem++].value;
        if (colour[next] == 1) {
          const Rule &shown = rules_[next];
          return error_at(shown.where, "left recursion through rule '" + shown.name + "'");
        }
        if (colour[next] == 0) {
          colour[next] = 1;
          path.push_back({next});
        }
      }
    }
    return Ok();
  }

  Result<std::shared_ptr<const Grammar>> finish() {
    GANTRY_TRY(check_left_recursion());
    auto g = std::make_shared<Grammar>();
    g->elems.reserve(n_elems_);
    for (Rule &r : rules_) {
      std::vector<uint32_t> starts;
      for (const Alt &a : r.alts) {
        starts.push_back(static_cast<uint32_t>(g->elems.size()));
        g->elems.insert(g->elems.end(), a.begin(), a.end());
        g->elems.push_back(GrammarElem{});
      }
      g->rule_alts.push_back(std::move(starts));
      g->rule_names.push_back(std::move(r.name));
    }
    g->classes = std::move(classes_);
    g->root = ids_.at("root");
    return std::shared_ptr<const Grammar>(std::move(g));
  }

  std::string_view text_;
  size_t pos_ = 0;
  std::vector<Rule> rules_;
  std::unordered_map<std::string, uint32_t> ids_;
  std::vector<CharClass> classes_;
  std::map<Ranges, uint32_t> class_ids_;
  size_t n_elems_ = 0;
  int helper_counter_ = 0;
};

} // namespace

Result<std::shared_ptr<const Grammar>> compile_gbnf(std::string_view text) {
  if (text.size() > kMaxGrammarBytes)
    return Error::invalid("the grammar is longer than " + std::to_string(kMaxGrammarBytes) +
                          " bytes");
  return Parser(text).run();
}

} // namespace gantry::engine
