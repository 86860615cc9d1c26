#include "server/response_cache.h"

#include <gtest/gtest.h>

#include <functional>
#include <set>

#include "cache/memory_cache.h"
#include "support/fake_clock.h"

namespace gantry::server {
namespace {

using std::chrono::seconds;

engine::GenerationRequest base_request() {
  engine::GenerationRequest r;
  r.prompt = {1, 15043, 3186};
  r.sampling.temperature = 0;
  r.max_tokens = 16;
  return r;
}

const ModelIdentity kModel{"stories", "digest-a"};

// Changing any one input that can change the generated tokens changes the key.
TEST(CompletionKeyTest, EveryOutputAffectingParameterChangesTheKey) {
  struct Case {
    const char *name;
    std::function<void(ModelIdentity &, api::Endpoint &, int &, engine::GenerationRequest &)> edit;
  };
  const std::vector<Case> cases = {
      {"model name", [](auto &m, auto &, auto &, auto &) { m.name = "other"; }},
      {"model digest", [](auto &m, auto &, auto &, auto &) { m.digest = "digest-b"; }},
      {"endpoint", [](auto &, auto &e, auto &, auto &) { e = api::Endpoint::kCompletions; }},
      {"n", [](auto &, auto &, auto &n, auto &) { n = 2; }},
      {"prompt token", [](auto &, auto &, auto &, auto &r) { r.prompt[2] = 3187; }},
      {"prompt length", [](auto &, auto &, auto &, auto &r) { r.prompt.push_back(13); }},
      {"max_tokens", [](auto &, auto &, auto &, auto &r) { r.max_tokens = 17; }},
      {"ignore_eos", [](auto &, auto &, auto &, auto &r) { r.ignore_eos = true; }},
      {"temperature", [](auto &, auto &, auto &, auto &r) { r.sampling.temperature = 0.7f; }},
      {"top_k", [](auto &, auto &, auto &, auto &r) { r.sampling.top_k = 40; }},
      {"top_p", [](auto &, auto &, auto &, auto &r) { r.sampling.top_p = 0.9f; }},
      {"min_p", [](auto &, auto &, auto &, auto &r) { r.sampling.min_p = 0.05f; }},
      {"repetition_penalty",
       [](auto &, auto &, auto &, auto &r) { r.sampling.repetition_penalty = 1.1f; }},
      {"repeat_last_n", [](auto &, auto &, auto &, auto &r) { r.sampling.repeat_last_n = 32; }},
      {"frequency_penalty",
       [](auto &, auto &, auto &, auto &r) { r.sampling.frequency_penalty = 0.5f; }},
      {"presence_penalty",
       [](auto &, auto &, auto &, auto &r) { r.sampling.presence_penalty = -0.5f; }},
      {"seed set", [](auto &, auto &, auto &, auto &r) { r.sampling.seed = 0; }},
      {"stop added", [](auto &, auto &, auto &, auto &r) { r.stop = {"\n"}; }},
      {"stop split differently",
       [](auto &, auto &, auto &, auto &r) {
         r.stop = {"a", "b"};
       }},
      {"stop joined", [](auto &, auto &, auto &, auto &r) { r.stop = {"ab"}; }},
      {"logit_bias",
       [](auto &, auto &, auto &, auto &r) {
         r.logit_bias = {{5, 1.0f}};
       }},
      {"logit_bias value",
       [](auto &, auto &, auto &, auto &r) {
         r.logit_bias = {{5, 2.0f}};
       }},
  };
  const std::string base =
      completion_key(kModel, api::Endpoint::kChatCompletions, 1, base_request());
  EXPECT_EQ(base, completion_key(kModel, api::Endpoint::kChatCompletions, 1, base_request()));
  std::set<std::string> seen{base};
  for (const auto &c : cases) {
    ModelIdentity m = kModel;
    api::Endpoint e = api::Endpoint::kChatCompletions;
    int n = 1;
    engine::GenerationRequest r = base_request();
    c.edit(m, e, n, r);
    const std::string key = completion_key(m, e, n, r);
    EXPECT_TRUE(seen.insert(key).second) << c.name << " did not give a new key";
  }
  // Two seeds differ from each other, not only from "no seed".
  auto seeded = base_request();
  seeded.sampling.seed = 1;
  EXPECT_TRUE(
      seen.insert(completion_key(kModel, api::Endpoint::kChatCompletions, 1, seeded)).second);
}

std::unique_ptr<ResponseCache> make_cache(FakeClock &clock, ResponseCacheConfig cfg = {}) {
  return std::make_unique<ResponseCache>(std::make_unique<cache::MemoryCache>(1 << 20, clock), cfg);
}

CachedCompletion sample_result() {
  CachedCompletion c;
  c.prompt_tokens = 3;
  c.choices.push_back({{"Once", " upon", " a"}, "length", 3});
  return c;
}

TEST(ResponseCacheTest, SampledWithoutSeedIsAlwaysBypassed) {
  FakeClock clock;
  auto rc = make_cache(clock);
  auto r = base_request();
  r.sampling.temperature = 0.7f;
  for (int i = 0; i < 2; ++i) {
    auto d = rc->lookup(kModel, api::Endpoint::kChatCompletions, 1, r, CachePolicy{});
    EXPECT_EQ(d.outcome, CacheOutcome::kBypass);
    EXPECT_FALSE(d.store_key.has_value()) << "unseeded sampled output must never be stored";
  }
  // Even an explicit TTL does not make it cacheable.
  api::CacheOption opt;
  opt.ttl_s = 60;
  auto d = rc->lookup(kModel, api::Endpoint::kChatCompletions, 1, r, cache_policy({}, opt));
  EXPECT_EQ(d.outcome, CacheOutcome::kBypass);
  EXPECT_EQ(rc->counters().bypass, 3u);
  EXPECT_EQ(rc->counters().misses, 0u);
}

TEST(ResponseCacheTest, SeededSampledIsCachedAndHits) {
  FakeClock clock;
  auto rc = make_cache(clock);
  auto r = base_request();
  r.sampling.temperature = 0.7f;
  r.sampling.seed = 42;
  auto miss = rc->lookup(kModel, api::Endpoint::kChatCompletions, 1, r, CachePolicy{});
  ASSERT_EQ(miss.outcome, CacheOutcome::kMiss);
  ASSERT_TRUE(miss.store_key.has_value());
  EXPECT_EQ(miss.ttl, seconds(3600));
  rc->store(*miss.store_key, miss.ttl, sample_result());
  auto hit = rc->lookup(kModel, api::Endpoint::kChatCompletions, 1, r, CachePolicy{});
  ASSERT_EQ(hit.outcome, CacheOutcome::kHit);
  EXPECT_EQ(hit.hit->choices.at(0).pieces, (std::vector<std::string>{"Once", " upon", " a"}));
  EXPECT_EQ(hit.hit->prompt_tokens, 3);
  // Another seed is another entry.
  r.sampling.seed = 43;
  EXPECT_EQ(rc->lookup(kModel, api::Endpoint::kChatCompletions, 1, r, CachePolicy{}).outcome,
            CacheOutcome::kMiss);
  const auto c = rc->counters();
  EXPECT_EQ(c.hits, 1u);
  EXPECT_EQ(c.misses, 2u);
  EXPECT_EQ(c.stored, 1u);
}

TEST(ResponseCacheTest, EntriesExpireWithTheirTtl) {
  FakeClock clock;
  auto rc = make_cache(clock, {true, seconds(100)});
  api::CacheOption opt;
  opt.ttl_s = 10;
  auto d =
      rc->lookup(kModel, api::Endpoint::kCompletions, 1, base_request(), cache_policy({}, opt));
  ASSERT_TRUE(d.store_key.has_value());
  EXPECT_EQ(d.ttl, seconds(10));
  rc->store(*d.store_key, d.ttl, sample_result());
  rc->flush(); // the put runs on the cache's worker; its ttl starts when it has run
  clock.advance(seconds(9));
  EXPECT_EQ(rc->lookup(kModel, api::Endpoint::kCompletions, 1, base_request(), {}).outcome,
            CacheOutcome::kHit);
  clock.advance(seconds(1));
  EXPECT_EQ(rc->lookup(kModel, api::Endpoint::kCompletions, 1, base_request(), {}).outcome,
            CacheOutcome::kMiss);
}

TEST(ResponseCacheTest, NoCacheSkipsTheReadNoStoreSkipsBoth) {
  FakeClock clock;
  auto rc = make_cache(clock);
  const auto r = base_request();
  auto first = rc->lookup(kModel, api::Endpoint::kChatCompletions, 1, r, {});
  rc->store(*first.store_key, first.ttl, sample_result());

  auto no_cache =
      rc->lookup(kModel, api::Endpoint::kChatCompletions, 1, r, cache_policy("no-cache", {}));
  EXPECT_EQ(no_cache.outcome, CacheOutcome::kMiss);
  EXPECT_TRUE(no_cache.store_key.has_value()) << "no-cache still refreshes the entry";

  auto no_store = rc->lookup(kModel, api::Endpoint::kChatCompletions, 1, r,
                             cache_policy("max-age=0, No-Store", {}));
  EXPECT_EQ(no_store.outcome, CacheOutcome::kBypass);
  EXPECT_FALSE(no_store.store_key.has_value());

  api::CacheOption off;
  off.enabled = false;
  EXPECT_EQ(
      rc->lookup(kModel, api::Endpoint::kChatCompletions, 1, r, cache_policy({}, off)).outcome,
      CacheOutcome::kBypass);
  api::CacheOption ttl0;
  ttl0.ttl_s = 0;
  auto read_only =
      rc->lookup(kModel, api::Endpoint::kChatCompletions, 1, r, cache_policy({}, ttl0));
  EXPECT_EQ(read_only.outcome, CacheOutcome::kHit);
}

TEST(ResponseCacheTest, DisabledCacheBypassesEverything) {
  FakeClock clock;
  auto rc = make_cache(clock, {false, seconds(60)});
  auto d = rc->lookup(kModel, api::Endpoint::kChatCompletions, 1, base_request(), {});
  EXPECT_EQ(d.outcome, CacheOutcome::kBypass);
  EXPECT_FALSE(d.store_key.has_value());
}

TEST(CachedCompletionCodecTest, RoundTripsAndRefusesCorruptBytes) {
  CachedCompletion c = sample_result();
  c.choices.push_back({{"", "\xe2\x82\xac", std::string("a\0b", 3)}, "stop", 2});
  const std::string bytes = encode_completion(c);
  auto back = decode_completion(bytes);
  ASSERT_TRUE(back.ok()) << back.error().message;
  EXPECT_EQ(back->prompt_tokens, 3);
  ASSERT_EQ(back->choices.size(), 2u);
  EXPECT_EQ(back->choices[1].pieces, c.choices[1].pieces);
  EXPECT_EQ(back->choices[1].finish_reason, "stop");
  EXPECT_EQ(back->choices[1].completion_tokens, 2);
  for (size_t cut = 0; cut < bytes.size(); ++cut) {
    EXPECT_FALSE(decode_completion(bytes.substr(0, cut)).ok()) << "truncated at " << cut;
  }
  EXPECT_FALSE(decode_completion(bytes + "x").ok());
  std::string bad_magic = bytes;
  bad_magic[0] = 'X';
  EXPECT_FALSE(decode_completion(bad_magic).ok());
}

} // namespace
} // namespace gantry::server
