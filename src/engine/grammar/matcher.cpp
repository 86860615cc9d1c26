#include "engine/grammar/matcher.h"

#include <algorithm>
#include <limits>

namespace gantry::engine {

namespace {

// Caps on the interned tables of one matcher. Past half of a cap the tables are rebuilt at the
// next call; at the cap, a walk stops creating entries (see matcher.h).
constexpr size_t kMaxNodes = size_t{1} << 19;
constexpr size_t kMaxStates = size_t{1} << 15;
constexpr size_t kMaxTransitions = size_t{1} << 19;
constexpr size_t kMaskCacheEntries = 16;

constexpr uint32_t kMinForLen[5] = {0, 0, 0x80, 0x800, 0x10000};

uint64_t mix(uint64_t k) {
  k ^= k >> 33;
  k *= 0xff51afd7ed558ccdULL;
  k ^= k >> 33;
  k *= 0xc4ceb9fe1a85ec53ULL;
  k ^= k >> 33;
  return k;
}

} // namespace

// Open addressing, linear probing, power-of-two capacity; ~0 marks an empty slot (no key uses
// it: positions, states and code points are far below 2^32).
struct GrammarMatcher::FlatMap {
  static constexpr uint64_t kEmpty = ~uint64_t{0};
  std::vector<uint64_t> keys = std::vector<uint64_t>(256, kEmpty);
  std::vector<uint32_t> vals = std::vector<uint32_t>(256);
  size_t size = 0;

  const uint32_t *find(uint64_t k) const {
    const size_t m = keys.size() - 1;
    for (size_t i = mix(k) & m;; i = (i + 1) & m) {
      if (keys[i] == k)
        return &vals[i];
      if (keys[i] == kEmpty)
        return nullptr;
    }
  }
  void insert(uint64_t k, uint32_t v) {
    if ((size + 1) * 2 > keys.size())
      grow();
    const size_t m = keys.size() - 1;
    size_t i = mix(k) & m;
    while (keys[i] != kEmpty && keys[i] != k)
      i = (i + 1) & m;
    size += keys[i] == kEmpty;
    keys[i] = k;
    vals[i] = v;
  }
  void grow() {
    std::vector<uint64_t> ok = std::move(keys);
    std::vector<uint32_t> ov = std::move(vals);
    keys.assign(ok.size() * 2, kEmpty);
    vals.assign(ok.size() * 2, 0);
    size = 0;
    for (size_t i = 0; i < ok.size(); ++i)
      if (ok[i] != kEmpty)
        insert(ok[i], ov[i]);
  }
};

struct GrammarMatcher::Tables {
  // Stack nodes: a node is (position of the next element to match, the rest of the stack);
  // node 0 is the empty stack (the grammar is complete).
  std::vector<uint32_t> node_pos{0};
  std::vector<uint32_t> node_parent{0};
  FlatMap node_ids;
  // States: sorted sets of stacks whose tops are character classes (or the empty stack).
  // State 0 is the empty set (dead).
  std::vector<uint32_t> set_data;
  std::vector<uint32_t> set_begin{0, 0};
  std::vector<uint32_t> set_chain{0}; // next state with the same hash
  std::vector<uint8_t> accepting{0};
  std::vector<uint8_t> only_end{0};
  FlatMap set_ids; // hash -> first state
  FlatMap trans;   // state << 21 | code point -> state
  // Scratch for expansion.
  std::vector<uint32_t> visit;
  uint32_t visit_gen = 0;
  std::vector<uint32_t> work, out;
  struct Mask {
    uint32_t state;
    Utf8 utf8;
    std::vector<uint64_t> bits;
  };
  std::vector<Mask> masks; // most recent first

  std::span<const uint32_t> set(uint32_t s) const {
    return {set_data.data() + set_begin[s], set_begin[s + 1] - set_begin[s]};
  }
  bool full() const {
    return node_pos.size() >= kMaxNodes || accepting.size() >= kMaxStates ||
           trans.size >= kMaxTransitions;
  }
  bool half_full() const {
    return node_pos.size() * 2 >= kMaxNodes || accepting.size() * 2 >= kMaxStates ||
           trans.size * 2 >= kMaxTransitions;
  }

  uint32_t node(uint32_t pos, uint32_t parent) {
    const uint64_t key = (uint64_t{pos} << 32) | parent;
    if (const uint32_t *id = node_ids.find(key))
      return *id;
    const auto id = static_cast<uint32_t>(node_pos.size());
    node_pos.push_back(pos);
    node_parent.push_back(parent);
    node_ids.insert(key, id);
    return id;
  }

  uint32_t intern_set(const std::vector<uint32_t> &s) {
    if (s.empty())
      return kDead;
    uint64_t h = 0x9e3779b97f4a7c15ULL;
    for (uint32_t x : s)
      h = mix(h ^ x);
    h >>= 1; // never kEmpty
    const uint32_t *first = set_ids.find(h);
    for (uint32_t st = first ? *first : 0; st != 0; st = set_chain[st]) {
      auto cand = set(st);
      if (std::equal(cand.begin(), cand.end(), s.begin(), s.end()))
        return st;
    }
    const auto id = static_cast<uint32_t>(accepting.size());
    set_data.insert(set_data.end(), s.begin(), s.end());
    set_begin.push_back(static_cast<uint32_t>(set_data.size()));
    set_chain.push_back(first ? *first : 0);
    set_ids.insert(h, id);
    accepting.push_back(s.front() == 0);
    only_end.push_back(s.size() == 1 && s.front() == 0);
    return id;
  }

  // Expands `work` (stacks whose top may be a reference or an alternative's end) into stacks
  // whose tops are character classes, into `out`. Returns false when a bound cut it short.
  bool expand(const Grammar &g) {
    if (++visit_gen == 0) {
      std::fill(visit.begin(), visit.end(), 0);
      visit_gen = 1;
    }
    bool complete = true;
    size_t visited = 0;
    while (!work.empty()) {
      const uint32_t n = work.back();
      work.pop_back();
      if (visit.size() <= n)
        visit.resize(node_pos.size() * 2, 0);
      if (visit[n] == visit_gen)
        continue;
      visit[n] = visit_gen;
      if (++visited > kMaxExpand) {
        complete = false;
        work.clear();
        break;
      }
      if (n == 0) {
        out.push_back(0);
        continue;
      }
      const uint32_t pos = node_pos[n];
      const GrammarElem &e = g.elems[pos];
      if (e.kind == GrammarElem::kEnd) {
        work.push_back(node_parent[n]);
      } else if (e.kind == GrammarElem::kChar) {
        if (out.size() < kMaxStacks)
          out.push_back(n);
        else
          complete = false;
      } else {
        // Returning to an alternative's end is returning to the caller: skip the frame, so
        // right recursion (x ::= c x | ) keeps the stack flat.
        const uint32_t ret = g.elems[pos + 1].kind == GrammarElem::kEnd
                                 ? node_parent[n]
                                 : node(pos + 1, node_parent[n]);
        for (uint32_t alt : g.rule_alts[e.value])
          work.push_back(node(alt, ret));
      }
    }
    std::sort(out.begin(), out.end());
    return complete;
  }
};

GrammarMatcher::GrammarMatcher(std::shared_ptr<const Grammar> grammar,
                               std::shared_ptr<const TokenTrie> trie)
    : grammar_(std::move(grammar)), trie_(std::move(trie)), tables_(std::make_unique<Tables>()) {
  Tables &t = *tables_;
  t.out.clear();
  for (uint32_t alt : grammar_->rule_alts[grammar_->root])
    t.work.push_back(t.node(alt, 0));
  if (!t.expand(*grammar_))
    ++stats_.truncated_stacks;
  cur_.state = t.intern_set(t.out);
}

GrammarMatcher::GrammarMatcher(const GrammarMatcher &other)
    : grammar_(other.grammar_), trie_(other.trie_),
      tables_(std::make_unique<Tables>(*other.tables_)), cur_(other.cur_), stats_(other.stats_) {}

GrammarMatcher::~GrammarMatcher() = default;

uint32_t GrammarMatcher::transition(uint32_t state, uint32_t cp) {
  Tables &t = *tables_;
  const uint64_t key = (uint64_t{state} << 21) | cp;
  if (const uint32_t *next = t.trans.find(key))
    return *next;
  if (t.full()) {
    ++stats_.budget_exhausted;
    return kDead;
  }
  t.out.clear();
  t.work.clear();
  const Grammar &g = *grammar_;
  for (uint32_t n : t.set(state)) {
    if (n == 0)
      continue;
    const uint32_t pos = t.node_pos[n];
    if (g.classes[g.elems[pos].value].contains(cp))
      t.work.push_back(t.node(pos + 1, t.node_parent[n]));
  }
  if (!t.expand(g))
    ++stats_.truncated_stacks;
  const uint32_t next = t.intern_set(t.out);
  t.trans.insert(key, next);
  return next;
}

bool GrammarMatcher::partial_feasible(uint32_t state, const Utf8 &u) const {
  const unsigned shift = 6u * u.need;
  uint32_t lo = u.cp << shift;
  uint32_t hi = lo | ((1u << shift) - 1);
  lo = std::max(lo, kMinForLen[u.len]);
  hi = std::min(hi, kMaxCodePoint);
  if (lo > hi)
    return false;
  const Tables &t = *tables_;
  const Grammar &g = *grammar_;
  for (uint32_t n : t.set(state)) {
    if (n == 0)
      continue;
    const CharClass &cls = g.classes[g.elems[t.node_pos[n]].value];
    // Surrogates are not code points: test around them.
    if ((lo < 0xD800 && cls.intersects(lo, std::min(hi, 0xD7FFu))) ||
        (hi > 0xDFFF && cls.intersects(std::max(lo, 0xE000u), hi)))
      return true;
  }
  return false;
}

bool GrammarMatcher::step_byte(Cursor &c, uint8_t b) {
  uint32_t cp;
  if (c.utf8.need == 0) {
    if (b < 0x80) {
      cp = b;
    } else {
      const uint8_t len = (b >> 5) == 6 ? 2 : (b >> 4) == 14 ? 3 : (b >> 3) == 30 ? 4 : 0;
      if (len == 0)
        return false;
      Utf8 u;
      u.cp = b & (0x7Fu >> len);
      u.need = static_cast<uint8_t>(len - 1);
      u.len = len;
      if (!partial_feasible(c.state, u))
        return false;
      c.utf8 = u;
      return true;
    }
  } else {
    if ((b & 0xC0) != 0x80)
      return false;
    Utf8 u = c.utf8;
    u.cp = (u.cp << 6) | (b & 0x3Fu);
    --u.need;
    if (u.need > 0) {
      if (!partial_feasible(c.state, u))
        return false;
      c.utf8 = u;
      return true;
    }
    cp = u.cp;
    if (cp < kMinForLen[u.len] || cp > kMaxCodePoint || (cp >= 0xD800 && cp <= 0xDFFF))
      return false;
  }
  const uint32_t next = transition(c.state, cp);
  if (next == kDead)
    return false;
  c.state = next;
  c.utf8 = Utf8{};
  return true;
}

bool GrammarMatcher::walk(Cursor &c, std::string_view bytes) {
  for (char ch : bytes)
    if (!step_byte(c, static_cast<uint8_t>(ch)))
      return false;
  return true;
}

bool GrammarMatcher::accepting() const {
  return cur_.utf8.need == 0 && tables_->accepting[cur_.state];
}

bool GrammarMatcher::finished() const {
  return cur_.utf8.need == 0 && (cur_.state == kDead || tables_->only_end[cur_.state]);
}

bool GrammarMatcher::allows(int32_t token) {
  if (trie_->is_eog(token))
    return accepting();
  const std::string_view piece = trie_->piece(token);
  if (piece.empty())
    return false;
  Cursor c = cur_;
  return walk(c, piece);
}

bool GrammarMatcher::accept_text(std::string_view text) {
  maybe_reset();
  Cursor c = cur_;
  if (!walk(c, text))
    return false;
  cur_ = c;
  return true;
}

void GrammarMatcher::accept(int32_t token) {
  if (trie_->is_eog(token))
    return;
  maybe_reset();
  const std::string_view piece = trie_->piece(token);
  Cursor c = cur_;
  if (piece.empty() || !walk(c, piece)) {
    ++stats_.refused_accepts;
    cur_ = Cursor{};
    cur_.state = kDead;
    return;
  }
  cur_ = c;
}

void GrammarMatcher::maybe_reset() {
  Tables &t = *tables_;
  if (!t.half_full())
    return;
  // Keep the current stacks as explicit position lists, clear everything, re-intern them.
  std::vector<std::vector<uint32_t>> stacks;
  for (uint32_t n : t.set(cur_.state)) {
    std::vector<uint32_t> positions;
    for (uint32_t m = n; m != 0; m = t.node_parent[m])
      positions.push_back(t.node_pos[m]);
    stacks.push_back(std::move(positions));
  }
  tables_ = std::make_unique<Tables>();
  Tables &fresh = *tables_;
  std::vector<uint32_t> ids;
  for (const auto &positions : stacks) {
    uint32_t parent = 0;
    for (auto it = positions.rbegin(); it != positions.rend(); ++it)
      parent = fresh.node(*it, parent);
    ids.push_back(parent);
  }
  std::sort(ids.begin(), ids.end());
  cur_.state = fresh.intern_set(ids);
  ++stats_.table_resets;
}

void GrammarMatcher::compute_mask(std::vector<uint64_t> &mask) {
  const auto n_vocab = static_cast<size_t>(trie_->n_vocab());
  mask.assign((n_vocab + 63) / 64, 0);
  auto set_bit = [&](int32_t id) { mask[id >> 6] |= uint64_t{1} << (id & 63); };
  if (accepting())
    for (int32_t id : trie_->eog_tokens())
      set_bit(id);
  if (cur_.state == kDead)
    return;
  const auto &nodes = trie_->nodes();
  const auto &tokens = trie_->tokens();
  struct Frame {
    uint32_t node;
    Cursor c;
  };
  std::vector<Frame> stack{{0, cur_}};
  while (!stack.empty()) {
    const Frame f = stack.back();
    stack.pop_back();
    const TokenTrie::Node &parent = nodes[f.node];
    for (uint32_t i = parent.first_child; i < parent.first_child + parent.n_children; ++i) {
      Cursor c = f.c;
      if (!step_byte(c, nodes[i].byte))
        continue;
      for (uint32_t k = nodes[i].tok_begin; k < nodes[i].tok_end; ++k)
        set_bit(tokens[k]);
      if (nodes[i].n_children)
        stack.push_back({i, c});
    }
  }
}

void GrammarMatcher::apply(std::span<float> logits) {
  maybe_reset();
  Tables &t = *tables_;
  auto it = std::find_if(t.masks.begin(), t.masks.end(), [&](const Tables::Mask &m) {
    return m.state == cur_.state && m.utf8 == cur_.utf8;
  });
  if (it != t.masks.end()) {
    ++stats_.mask_cache_hits;
    std::rotate(t.masks.begin(), it, it + 1);
  } else {
    ++stats_.mask_cache_misses;
    Tables::Mask m;
    m.state = cur_.state;
    m.utf8 = cur_.utf8;
    compute_mask(m.bits);
    if (t.masks.size() >= kMaskCacheEntries)
      t.masks.pop_back();
    t.masks.insert(t.masks.begin(), std::move(m));
  }
  const std::vector<uint64_t> &bits = t.masks.front().bits;
  const size_t n_vocab = static_cast<size_t>(trie_->n_vocab());
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  for (size_t i = 0; i < logits.size(); ++i)
    if (i >= n_vocab || !((bits[i >> 6] >> (i & 63)) & 1))
      logits[i] = kNegInf;
}

std::unique_ptr<TokenConstraint> GrammarMatcher::clone() const {
  return std::make_unique<GrammarMatcher>(*this);
}

std::unique_ptr<TokenConstraint> make_grammar_constraint(std::shared_ptr<const Grammar> grammar,
                                                         std::shared_ptr<const TokenTrie> trie) {
  return std::make_unique<GrammarMatcher>(std::move(grammar), std::move(trie));
}

} // namespace gantry::engine
