// Constrained decoding's per-step cost on the Llama 2 vocabulary (32000 tokens): allows() of a
// sampled token (what most steps pay), apply() from a state never seen (the trie walk; what a
// step pays when the sampled token is refused and the mask is not cached), and whole random
// walks that call apply() at every step (a model whose every pick is refused: the worst case),
// for the json_object grammar and a nested schema.
//
//   build/bench/grammar_bench --benchmark_repetitions=3 --benchmark_report_aggregates_only=true
#include <benchmark/benchmark.h>

#include <cmath>
#include <random>

#include "api/json_schema_grammar.h"
#include "engine/gguf/gguf.h"
#include "engine/grammar/matcher.h"
#include "engine/tokenizer/tokenizer.h"

namespace {

using namespace gantry;

const char *kNested =
    R"({"type":"object","properties":{"name":{"type":"string","maxLength":40},
    "age":{"type":"integer","minimum":0,"maximum":150},
    "address":{"type":"object","properties":{"street":{"type":"string"},"city":{"type":"string"},
    "zip":{"type":"string","pattern":"^[0-9]{5}$"}},"required":["street","city","zip"]},
    "tags":{"type":"array","items":{"enum":["a","b","c"]},"maxItems":4},
    "friends":{"type":"array","items":{"type":"object","properties":{"name":{"type":"string"},
    "score":{"type":"number","minimum":0,"maximum":10}},"required":["name","score"]}}},
    "required":["name","age","address","tags","friends"]})";

struct Setup {
  std::unique_ptr<engine::Tokenizer> tok;
  std::shared_ptr<const engine::TokenTrie> trie;
  std::shared_ptr<const engine::Grammar> json_object, nested;

  Setup() {
    auto f = gguf::GgufFile::open(std::string(GANTRY_TEST_DATA_DIR) + "/llama-2-tiny-random.gguf");
    if (!f.ok())
      std::abort();
    tok = std::move(engine::Tokenizer::from_gguf(**f)).value();
    trie = engine::TokenTrie::build(*tok);
    json_object = engine::compile_gbnf(api::json_object_gbnf("")).value();
    nested = api::compile_json_schema(kNested).value();
  }
};

Setup &setup() {
  static Setup s;
  return s;
}

// Mid-document states: inside a string, after a value, at the start of a value.
const char *kPrefixes[] = {R"({"name": "Ali)", R"({"name": "Alice", "age": 3)",
                           R"({"name": "Alice", "age": 30, "address": )"};

const std::shared_ptr<const engine::Grammar> &grammar_of(int64_t which) {
  return which == 0 ? setup().json_object : setup().nested;
}

void BM_Allows(benchmark::State &state) {
  auto &s = setup();
  engine::GrammarMatcher m(grammar_of(state.range(0)), s.trie);
  if (!m.accept_text(kPrefixes[state.range(1)]))
    std::abort();
  std::mt19937 rng(1);
  int32_t t = 0;
  for (auto _ : state) {
    t = static_cast<int32_t>(rng() % 32000);
    benchmark::DoNotOptimize(m.allows(t));
  }
}

void BM_ApplyCold(benchmark::State &state) {
  auto &s = setup();
  std::vector<float> logits(32000);
  for (auto _ : state) {
    state.PauseTiming();
    engine::GrammarMatcher m(grammar_of(state.range(0)), s.trie);
    if (!m.accept_text(kPrefixes[state.range(1)]))
      std::abort();
    std::fill(logits.begin(), logits.end(), 0.0f);
    state.ResumeTiming();
    m.apply(logits);
    benchmark::DoNotOptimize(logits.data());
  }
}

// apply() at every step of random walks (restarting when a document ends): per step.
void BM_WalkApplyEveryStep(benchmark::State &state) {
  auto &s = setup();
  const engine::GrammarMatcher proto(grammar_of(state.range(0)), s.trie);
  std::vector<float> logits(32000);
  std::mt19937_64 rng(7);
  auto m = proto.clone();
  std::vector<int32_t> allowed;
  int steps = 0;
  for (auto _ : state) {
    std::fill(logits.begin(), logits.end(), 0.0f);
    m->apply(logits);
    state.PauseTiming();
    allowed.clear();
    for (int32_t t = 0; t < 32000; ++t)
      if (std::isfinite(logits[t]))
        allowed.push_back(t);
    const int32_t t = allowed[rng() % allowed.size()];
    state.ResumeTiming();
    if (s.tok->is_eog(t) || m->finished() || ++steps > 300) {
      m = proto.clone();
      steps = 0;
    } else {
      m->accept(t);
    }
  }
}

} // namespace

BENCHMARK(BM_Allows)->ArgsProduct({{0, 1}, {0, 1, 2}})->ArgNames({"nested", "state"});
BENCHMARK(BM_ApplyCold)
    ->ArgsProduct({{0, 1}, {0, 1, 2}})
    ->ArgNames({"nested", "state"})
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_WalkApplyEveryStep)->Arg(0)->Arg(1)->ArgName("nested")->Unit(benchmark::kMicrosecond);
BENCHMARK_MAIN();
