#include "engine/batch/engine.h"

#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <fstream>
#include <map>
#include <sstream>

namespace gantry::engine {
namespace {

struct GreedyCase {
  std::string prompt;
  std::vector<int32_t> prompt_ids;
  std::vector<int32_t> expected;
  std::string text;
};

std::vector<GreedyCase> load_cases() {
  std::ifstream in(std::string(GANTRY_TEST_DATA_DIR) + "/stories-greedy.json");
  std::stringstream ss;
  ss << in.rdbuf();
  auto j = boost::json::parse(ss.str());
  std::vector<GreedyCase> out;
  for (const auto &c : j.at("cases").as_array()) {
    GreedyCase g;
    g.prompt = std::string(c.at("prompt").as_string());
    for (const auto &v : c.at("prompt_token_ids_with_bos").as_array())
      g.prompt_ids.push_back(static_cast<int32_t>(v.as_int64()));
    for (const auto &v : c.at("generated_token_ids").as_array())
      g.expected.push_back(static_cast<int32_t>(v.as_int64()));
    g.text = std::string(c.at("generated_text").as_string());
    out.push_back(std::move(g));
  }
  return out;
}

class EngineTest : public ::testing::Test {
protected:
  static void SetUpTestSuite() {
    auto m = Model::load(std::string(GANTRY_MODELS_DIR) + "/stories260K.gguf");
    ASSERT_TRUE(m.ok()) << m.error().message;
    model_ = std::move(m).value().release();
  }
  static void TearDownTestSuite() {
    delete model_;
    model_ = nullptr;
  }

  static GenerationRequest greedy(std::vector<int32_t> prompt, int max_tokens) {
    GenerationRequest r;
    r.prompt = std::move(prompt);
    r.max_tokens = max_tokens;
    r.sampling.temperature = 0;
    return r;
  }

  // Runs the engine until idle; returns generated ids and text per sequence.
  static void drain(Engine &eng, std::map<SeqId, std::vector<int32_t>> &ids,
                    std::map<SeqId, std::string> *text = nullptr,
                    std::map<SeqId, FinishReason> *finish = nullptr) {
    int guard = 0;
    while (!eng.idle() && ++guard < 100000) {
      for (auto &ev : eng.step()) {
        if (ev.token >= 0)
          ids[ev.seq].push_back(ev.token);
        if (text)
          (*text)[ev.seq] += ev.text;
        if (finish && ev.finish != FinishReason::kNone)
          (*finish)[ev.seq] = ev.finish;
      }
    }
  }

  static Model *model_;
};
Model *EngineTest::model_ = nullptr;

TEST_F(EngineTest, TokenizerMatchesLlamaCppPromptIds) {
  for (const auto &c : load_cases()) {
    EXPECT_EQ(model_->tokenizer().encode(c.prompt, true, true), c.prompt_ids) << c.prompt;
  }
}

TEST_F(EngineTest, GreedyMatchesLlamaCppTokenForToken) {
  for (const auto &c : load_cases()) {
    EngineConfig ec;
    ec.n_threads = 2;
    Engine eng(*model_, ec);
    auto id = eng.submit(greedy(c.prompt_ids, static_cast<int>(c.expected.size())));
    ASSERT_TRUE(id.ok()) << id.error().message;
    std::map<SeqId, std::vector<int32_t>> ids;
    std::map<SeqId, std::string> text;
    drain(eng, ids, &text);
    EXPECT_EQ(ids[*id], c.expected) << "prompt: " << c.prompt;
    EXPECT_EQ(text[*id], c.text) << "prompt: " << c.prompt;
  }
}

TEST_F(EngineTest, BatchedSequencesMatchTheirSoloRuns) {
  auto cases = load_cases();
  EngineConfig ec;
  ec.n_threads = 2;
  ec.max_batch_tokens = 7; // forces chunked prefill interleaved with decoding
  ec.max_seqs = 4;         // (the engine raises the budget to max_seqs)
  Engine eng(*model_, ec);
  std::vector<SeqId> seqs;
  // Each case twice, with different lengths, so that sequences join and leave mid-batch.
  for (int rep = 0; rep < 2; ++rep) {
    for (const auto &c : cases) {
      int n = rep == 0 ? static_cast<int>(c.expected.size()) : 20;
      auto id = eng.submit(greedy(c.prompt_ids, n));
      ASSERT_TRUE(id.ok());
      seqs.push_back(*id);
    }
  }
  std::map<SeqId, std::vector<int32_t>> ids;
  drain(eng, ids);
  for (size_t i = 0; i < seqs.size(); ++i) {
    const auto &c = cases[i % cases.size()];
    std::vector<int32_t> want = c.expected;
    if (i >= cases.size())
      want.resize(20);
    EXPECT_EQ(ids[seqs[i]], want) << "sequence " << i << " (" << c.prompt << ")";
  }
  EXPECT_EQ(eng.stats().kv_blocks_used, 0) << "finished sequences return their KV blocks";
}

// A budget below max_seqs used to give every step's decode tokens to the sequences at the front
// of the running list: the others (and the prompts still being read) waited for them to finish.
TEST_F(EngineTest, EverySequenceStartsBeforeAnyFinishesWhenTheBudgetIsBelowMaxSeqs) {
  const auto cases = load_cases();
  EngineConfig ec;
  ec.n_threads = 1;
  ec.max_batch_tokens = 2;
  ec.max_seqs = 4;
  Engine eng(*model_, ec);
  std::vector<SeqId> seqs;
  for (int i = 0; i < 4; ++i) {
    auto r = greedy(cases[i % cases.size()].prompt_ids, 30);
    r.ignore_eos = true;
    auto id = eng.submit(std::move(r));
    ASSERT_TRUE(id.ok());
    seqs.push_back(*id);
  }
  std::map<SeqId, int> generated;
  bool any_finished = false;
  int guard = 0;
  while (!eng.idle() && ++guard < 100000) {
    for (const auto &ev : eng.step()) {
      if (ev.token >= 0) {
        EXPECT_FALSE(any_finished && generated[ev.seq] == 0)
            << "sequence " << ev.seq << " started only after another one finished";
        ++generated[ev.seq];
      }
      any_finished = any_finished || ev.finish != FinishReason::kNone;
    }
  }
  for (SeqId s : seqs)
    EXPECT_EQ(generated[s], 30) << "sequence " << s;
}

TEST_F(EngineTest, CancelFreesTheSequenceAtTheNextStep) {
  auto cases = load_cases();
  EngineConfig ec;
  ec.n_threads = 1;
  Engine eng(*model_, ec);
  auto a = eng.submit(greedy(cases[0].prompt_ids, 50));
  auto b = eng.submit(greedy(cases[1].prompt_ids, 10));
  ASSERT_TRUE(a.ok() && b.ok());
  eng.step();
  eng.step();
  EXPECT_GT(eng.stats().kv_blocks_used, 0);
  eng.cancel(*a);
  auto evs = eng.step();
  bool saw_cancel = false;
  for (auto &ev : evs) {
    if (ev.seq == *a) {
      EXPECT_EQ(ev.finish, FinishReason::kCancelled);
      saw_cancel = true;
    }
  }
  EXPECT_TRUE(saw_cancel);
  EXPECT_FALSE(eng.has_sequence(*a));
  EXPECT_TRUE(eng.has_sequence(*b)) << "cancelling one sequence leaves the other running";
  std::map<SeqId, std::vector<int32_t>> ids;
  drain(eng, ids);
  EXPECT_EQ(eng.stats().kv_blocks_used, 0);
}

TEST_F(EngineTest, FullKvMakesLaterSequencesWaitNotFail) {
  auto cases = load_cases();
  EngineConfig ec;
  ec.n_threads = 1;
  // Room for exactly one sequence of 5 + 27 tokens (2 blocks).
  ec.kv_bytes = KvCache::bytes_per_block(model_->config().n_layer, model_->config().kv_dim()) * 2;
  Engine eng(*model_, ec);
  auto a = eng.submit(greedy(cases[0].prompt_ids, 27));
  auto b = eng.submit(greedy(cases[0].prompt_ids, 27));
  ASSERT_TRUE(a.ok() && b.ok());
  std::map<SeqId, std::vector<int32_t>> ids;
  for (auto &ev : eng.step())
    ids[ev.seq].push_back(ev.token);
  EXPECT_EQ(eng.stats().running, 1);
  EXPECT_EQ(eng.stats().waiting, 1) << "the second sequence waits for KV memory";
  drain(eng, ids);
  EXPECT_EQ(ids[*a], ids[*b]);
  EXPECT_EQ(ids[*a].size(), 27u);

  auto too_big = eng.submit(greedy(cases[0].prompt_ids, 100));
  ASSERT_FALSE(too_big.ok()) << "a request larger than the whole KV budget can never run";
  EXPECT_EQ(too_big.error().code, ErrorCode::kContextLengthExceeded);
}

TEST_F(EngineTest, RejectsBadRequestsWithTheFieldNamed) {
  EngineConfig ec;
  ec.n_ctx = 64;
  Engine eng(*model_, ec);
  auto empty = eng.submit(greedy({}, 5));
  ASSERT_FALSE(empty.ok());
  EXPECT_EQ(empty.error().param, "prompt");
  auto long_ctx = eng.submit(greedy(std::vector<int32_t>(60, 5), 10));
  ASSERT_FALSE(long_ctx.ok());
  EXPECT_EQ(long_ctx.error().code, ErrorCode::kContextLengthExceeded);
  auto bad_tok = eng.submit(greedy({1, 99999}, 5));
  ASSERT_FALSE(bad_tok.ok());
  auto bad_temp = greedy({1, 2}, 5);
  bad_temp.sampling.temperature = -1;
  EXPECT_EQ(eng.submit(bad_temp).error().param, "temperature");
}

TEST_F(EngineTest, StopStringsAndMaxTokensSetTheFinishReason) {
  auto cases = load_cases();
  EngineConfig ec;
  Engine eng(*model_, ec);
  auto req = greedy(cases[0].prompt_ids, 64);
  req.stop = {"Lily."};
  auto a = eng.submit(req);
  auto b = eng.submit(greedy(cases[0].prompt_ids, 5));
  std::map<SeqId, std::vector<int32_t>> ids;
  std::map<SeqId, std::string> text;
  std::map<SeqId, FinishReason> finish;
  drain(eng, ids, &text, &finish);
  EXPECT_EQ(text[*a], ", there was a little girl named ");
  EXPECT_EQ(finish[*a], FinishReason::kStop);
  EXPECT_EQ(finish[*b], FinishReason::kLength);
  EXPECT_EQ(ids[*b].size(), 5u);
}

TEST_F(EngineTest, PrefixReuseGivesTheSameTokensAndReportsCachedTokens) {
  auto cases = load_cases();
  // A 40-token prompt: the story of case 0 followed by its own greedy continuation.
  std::vector<int32_t> prompt = cases[0].prompt_ids;
  prompt.insert(prompt.end(), cases[0].expected.begin(), cases[0].expected.begin() + 35);
  auto run = [&](Engine &eng, std::vector<int32_t> p, int *cached) {
    auto id = eng.submit(greedy(std::move(p), 20));
    EXPECT_TRUE(id.ok());
    std::vector<int32_t> out;
    while (!eng.idle()) {
      for (auto &ev : eng.step()) {
        if (ev.seq != *id)
          continue;
        out.push_back(ev.token);
        *cached = ev.n_cached;
      }
    }
    return out;
  };
  EngineConfig off;
  off.prefix_cache = false;
  Engine plain(*model_, off);
  int c0 = -1;
  const auto want = run(plain, prompt, &c0);
  EXPECT_EQ(c0, 0);

  EngineConfig ec;
  Engine eng(*model_, ec);
  int c1 = -1, c2 = -1, c3 = -1;
  EXPECT_EQ(run(eng, prompt, &c1), want);
  EXPECT_EQ(c1, 0) << "nothing cached yet";
  EXPECT_EQ(run(eng, prompt, &c2), want) << "reused KV must give the same tokens";
  EXPECT_EQ(c2, 32) << "two full 16-token blocks of the 40-token prompt";
  // A prompt that shares only the first block.
  auto other = prompt;
  other[20] = 300;
  run(eng, other, &c3);
  EXPECT_EQ(c3, 16);
  EXPECT_GT(eng.stats().prefix_hit_tokens, 0u);
  EXPECT_EQ(eng.stats().kv_blocks_used, 0) << "cached blocks are reclaimable, not in use";
  EXPECT_GT(eng.stats().kv_blocks_cached, 0);
}

TEST_F(EngineTest, SeededSamplingIsReproducible) {
  auto cases = load_cases();
  auto run = [&](uint64_t seed) {
    EngineConfig ec;
    Engine eng(*model_, ec);
    auto r = greedy(cases[1].prompt_ids, 30);
    r.sampling.temperature = 1.0f;
    r.sampling.seed = seed;
    auto id = eng.submit(r);
    std::map<SeqId, std::vector<int32_t>> ids;
    drain(eng, ids);
    return ids[*id];
  };
  EXPECT_EQ(run(11), run(11));
  EXPECT_NE(run(11), run(12));
}

// The default KV budget is what max_seqs sequences at full context can hold, capped: a small
// model must not reserve (and, through the prefix cache, slowly make resident) a gigabyte.
TEST_F(EngineTest, DefaultKvBudgetFitsEverySequenceAtFullContextAndNoMore) {
  const ModelConfig &c = model_->config();
  const size_t per_block = KvCache::bytes_per_block(c.n_layer, c.kv_dim());
  const size_t cap = size_t{1024} << 20;
  // stories260K: 2048-token context = 128 blocks per sequence.
  EXPECT_EQ(kv_bytes_for_context(c, 0, 16, cap), per_block * (2048 / 16) * 16);
  // A context that is not a whole number of blocks rounds up; max_seqs below 1 counts as 1.
  EXPECT_EQ(kv_bytes_for_context(c, 100, 3, cap), per_block * 7 * 3);
  EXPECT_EQ(kv_bytes_for_context(c, 100, 0, cap), per_block * 7);
  EXPECT_EQ(kv_bytes_for_context(c, 1 << 20, 64, cap), cap);
  // Every sequence of the budget fits at full context.
  EngineConfig ec;
  ec.max_seqs = 4;
  ec.kv_bytes = kv_bytes_for_context(c, 256, ec.max_seqs, cap);
  ec.n_ctx = 256;
  Engine eng(*model_, ec);
  EXPECT_EQ(eng.stats().kv_blocks_total, 4 * 256 / 16);
}

} // namespace
} // namespace gantry::engine
