// The response cache through the real server: hits, misses and bypasses announced in
// x-gantry-cache, identical content on a hit (with a fresh id), Cache-Control and the "cache"
// body field, streamed hits that are valid SSE, and the metrics that count them.
#include <gtest/gtest.h>

#include "integration/api_helpers.h"
#include "integration/server_process.h"

namespace gantry::testing {
namespace {

class CacheTest : public ::testing::Test {
protected:
  void SetUp() override {
    auto s = ServerProcess::start({"--threads", "1"});
    ASSERT_TRUE(s) << s.error().message;
    server_ = std::move(*s);
    client_ = std::make_unique<http::HttpClient>(server_->client_options());
  }

  http::ClientResponse post(const std::string &path, const std::string &body,
                            http::Headers headers = {}) {
    auto r = client_->post(path, body, std::move(headers));
    EXPECT_TRUE(r) << path << ": " << r.error().message;
    return r ? *r : http::ClientResponse{};
  }
  static std::string cache_header(const http::ClientResponse &r) {
    return std::string(r.header("x-gantry-cache").value_or("<none>"));
  }
  std::string chat_outcome(const json::object &extra, http::Headers headers = {}) {
    auto r = post("/v1/chat/completions", chat_body("Once upon a time", extra), std::move(headers));
    EXPECT_EQ(r.status, 200) << r.body;
    return cache_header(r);
  }
  // A stream read to its end, with the response's x-gantry-cache header.
  std::pair<StreamResult, std::string> stream(const std::string &path, const std::string &body) {
    http::HttpClient c(server_->client_options());
    auto s = c.open_sse(http::Method::kPost, path, body);
    if (!s) {
      ADD_FAILURE() << s.error().message;
      return {};
    }
    std::string header(find_header(s->headers(), "x-gantry-cache").value_or("<none>"));
    StreamResult r = read_stream(*s);
    r.status = s->status();
    return {std::move(r), header};
  }
  double metric(const std::string &series) {
    auto r = client_->get("/metrics");
    EXPECT_TRUE(r);
    return r ? metric_or_zero(r->body, series) : -1;
  }

  std::unique_ptr<ServerProcess> server_;
  std::unique_ptr<http::HttpClient> client_;
};

const json::object kGreedy{{"max_tokens", 24}, {"temperature", 0}};

TEST_F(CacheTest, IdenticalDeterministicRequestsHitWithTheSameContentAndAFreshId) {
  for (const bool chat : {true, false}) {
    SCOPED_TRACE(chat ? "chat" : "completion");
    const std::string path = chat ? "/v1/chat/completions" : "/v1/completions";
    const std::string body = chat ? chat_body("Once upon a time", kGreedy)
                                  : completion_body("Once upon a time", kGreedy);
    auto first = post(path, body);
    ASSERT_EQ(first.status, 200) << first.body;
    EXPECT_EQ(cache_header(first), "miss");
    auto second = post(path, body);
    ASSERT_EQ(second.status, 200) << second.body;
    EXPECT_EQ(cache_header(second), "hit");

    auto a = parse_object(first.body), b = parse_object(second.body);
    EXPECT_NE(a.at("id"), b.at("id")) << "a hit is a new response with its own id";
    EXPECT_EQ(a.at("choices"), b.at("choices"));
    EXPECT_EQ(a.at("model"), b.at("model"));
    EXPECT_EQ(a.at("object"), b.at("object"));
    const auto &ua = a.at("usage").as_object(), &ub = b.at("usage").as_object();
    EXPECT_EQ(ua.at("prompt_tokens"), ub.at("prompt_tokens"));
    EXPECT_EQ(ua.at("completion_tokens"), ub.at("completion_tokens"));
    EXPECT_EQ(ua.at("total_tokens"), ub.at("total_tokens"));
    EXPECT_EQ(ub.at("prompt_tokens_details").at("cached_tokens"), ub.at("prompt_tokens"))
        << "a hit reports every prompt token as cached";
  }
  EXPECT_EQ(metric("gantry:cache_hits_total{cache=\"response\"}"), 2);
  EXPECT_EQ(metric("gantry:cache_misses_total{cache=\"response\"}"), 2);
  EXPECT_EQ(metric("gantry:cache_entries{cache=\"response\"}"), 2);
  EXPECT_GT(metric("gantry:cache_bytes{cache=\"response\"}"), 0);
}

TEST_F(CacheTest, HitCostsNoEngineWork) {
  auto miss = post("/v1/chat/completions", chat_body("Once upon a time", kGreedy));
  ASSERT_EQ(cache_header(miss), "miss");
  const double generated =
      parse_object(miss.body).at("usage").at("completion_tokens").to_number<double>();
  // The engine thread publishes its counters after the step that finished the request.
  const auto series = model_series("gantry:generation_tokens_total");
  auto [settled, text] = wait_for_metrics(
      server_->client_options(),
      [&](const std::string &m) { return metric_or_zero(m, series) >= generated; },
      std::chrono::seconds(10));
  ASSERT_TRUE(settled) << text;
  ASSERT_EQ(chat_outcome(kGreedy), "hit");
  EXPECT_EQ(metric(series), generated) << "a hit must not generate";
}

TEST_F(CacheTest, AnyChangedParameterMisses) {
  ASSERT_EQ(chat_outcome(kGreedy), "miss");
  ASSERT_EQ(chat_outcome(kGreedy), "hit");
  const std::vector<std::pair<const char *, json::value>> changes = {
      {"max_tokens", 25},
      {"seed", 7},
      {"stop", "\n"},
      {"n", 2},
      {"ignore_eos", true},
      {"top_k", 5},
      {"top_p", 0.5},
      {"min_p", 0.1},
      {"presence_penalty", 0.5},
      {"frequency_penalty", 0.5},
      {"repetition_penalty", 1.3},
  };
  for (const auto &[field, value] : changes) {
    json::object extra = kGreedy;
    extra[field] = value;
    EXPECT_EQ(chat_outcome(extra), "miss") << field;
    EXPECT_EQ(chat_outcome(extra), "hit") << field << " (the changed request is cached too)";
  }
  // Another prompt, and the same prompt on the other endpoint.
  auto other = post("/v1/chat/completions", chat_body("Once upon a tim", kGreedy));
  EXPECT_EQ(cache_header(other), "miss");
  auto completion = post("/v1/completions", completion_body("Once upon a time", kGreedy));
  EXPECT_EQ(cache_header(completion), "miss");
  // Fields that do not change the tokens share the entry.
  json::object with_user = kGreedy;
  with_user["user"] = "someone";
  EXPECT_EQ(chat_outcome(with_user), "hit");
}

TEST_F(CacheTest, SampledWithoutSeedIsBypassedEveryTime) {
  json::object sampled{{"max_tokens", 16}, {"temperature", 0.7}};
  EXPECT_EQ(chat_outcome(sampled), "bypass");
  EXPECT_EQ(chat_outcome(sampled), "bypass");
  EXPECT_EQ(metric("gantry:cache_bypass_total{cache=\"response\"}"), 2);
  EXPECT_EQ(metric("gantry:cache_entries{cache=\"response\"}"), 0);
  // With a seed the same sampling is reproducible, hence cached.
  sampled["seed"] = 11;
  EXPECT_EQ(chat_outcome(sampled), "miss");
  EXPECT_EQ(chat_outcome(sampled), "hit");
}

TEST_F(CacheTest, CacheControlNoStoreAndNoCache) {
  const http::Headers no_store{{"Cache-Control", "no-store"}};
  const http::Headers no_cache{{"Cache-Control", "no-cache"}};
  EXPECT_EQ(chat_outcome(kGreedy, no_store), "bypass");
  EXPECT_EQ(chat_outcome(kGreedy, no_store), "bypass");
  EXPECT_EQ(chat_outcome(kGreedy), "miss") << "no-store must not have stored anything";
  EXPECT_EQ(chat_outcome(kGreedy), "hit");
  EXPECT_EQ(chat_outcome(kGreedy, no_cache), "miss") << "no-cache must not read";
  EXPECT_EQ(chat_outcome(kGreedy, no_store), "bypass") << "no-store must not read either";

  // no-cache refreshes the entry: a new request after it hits.
  json::object fresh = kGreedy;
  fresh["max_tokens"] = 9;
  EXPECT_EQ(chat_outcome(fresh, no_cache), "miss");
  EXPECT_EQ(chat_outcome(fresh), "hit");
}

TEST_F(CacheTest, CacheBodyField) {
  json::object off = kGreedy;
  off["cache"] = false;
  EXPECT_EQ(chat_outcome(off), "bypass");
  json::object ttl0 = kGreedy;
  ttl0["cache"] = json::object{{"ttl", 0}};
  EXPECT_EQ(chat_outcome(ttl0), "miss");
  EXPECT_EQ(chat_outcome(ttl0), "miss") << "ttl 0 stores nothing";
  json::object ttl = kGreedy;
  ttl["cache"] = json::object{{"ttl", 60}};
  EXPECT_EQ(chat_outcome(ttl), "miss");
  EXPECT_EQ(chat_outcome(kGreedy), "hit") << "the ttl does not enter the key";
  auto bad = post("/v1/chat/completions",
                  chat_body("Once upon a time", {{"cache", json::object{{"ttl", "soon"}}}}));
  expect_error(bad, 400, "invalid_request_error", "cache.ttl");
}

TEST_F(CacheTest, StreamedHitIsTheSameSseStreamWithAnotherId) {
  for (const bool chat : {true, false}) {
    SCOPED_TRACE(chat ? "chat" : "completion");
    json::object extra{{"max_tokens", 20},
                       {"temperature", 0},
                       {"stream", true},
                       {"stream_options", {{"include_usage", true}}}};
    const std::string path = chat ? "/v1/chat/completions" : "/v1/completions";
    const std::string body = chat ? chat_body("One day", extra) : completion_body("One day", extra);
    auto [live, live_header] = stream(path, body);
    auto [replay, replay_header] = stream(path, body);
    EXPECT_EQ(live_header, "miss");
    EXPECT_EQ(replay_header, "hit");
    ASSERT_EQ(replay.status, 200);
    EXPECT_TRUE(replay.transport_error.empty()) << replay.transport_error;
    EXPECT_TRUE(replay.done) << "no [DONE] at the end";
    EXPECT_FALSE(replay.error);
    EXPECT_TRUE(replay.consistent_ids);
    EXPECT_TRUE(replay.id.starts_with(chat ? "chatcmpl-" : "cmpl-")) << replay.id;
    EXPECT_NE(replay.id, live.id);
    EXPECT_EQ(replay.text, live.text);
    EXPECT_EQ(replay.finish_reason, live.finish_reason);
    // Chunked like the live stream: one chunk per piece the engine released.
    EXPECT_EQ(replay.events.size(), live.events.size());
    ASSERT_TRUE(replay.usage && live.usage);
    EXPECT_EQ(replay.usage->at("completion_tokens"), live.usage->at("completion_tokens"));
    EXPECT_EQ(replay.usage->at("prompt_tokens_details").at("cached_tokens"),
              replay.usage->at("prompt_tokens"));
    if (chat) {
      auto first = parse_object(replay.events.front());
      EXPECT_EQ(first.at("choices").at(0).at("delta").at("role"), "assistant");
    }
  }
}

TEST_F(CacheTest, NonStreamedResultReplaysAsAStreamAndEchoIsRenderedFresh) {
  auto plain = post("/v1/completions", completion_body("Once upon a time", kGreedy));
  ASSERT_EQ(cache_header(plain), "miss");
  const std::string text = choice_text(parse_object(plain.body));

  json::object streamed = kGreedy;
  streamed["stream"] = true;
  auto [s, header] = stream("/v1/completions", completion_body("Once upon a time", streamed));
  EXPECT_EQ(header, "hit");
  EXPECT_TRUE(s.done);
  EXPECT_EQ(s.text[0], text);

  json::object echo = kGreedy;
  echo["echo"] = true;
  auto echoed = post("/v1/completions", completion_body("Once upon a time", echo));
  EXPECT_EQ(cache_header(echoed), "hit");
  EXPECT_EQ(choice_text(parse_object(echoed.body)), "Once upon a time" + text);
}

TEST_F(CacheTest, NChoicesAreCachedTogether) {
  json::object extra{{"max_tokens", 10}, {"temperature", 1}, {"seed", 3}, {"n", 3}};
  auto a = post("/v1/chat/completions", chat_body("Once upon a time", extra));
  auto b = post("/v1/chat/completions", chat_body("Once upon a time", extra));
  EXPECT_EQ(cache_header(a), "miss");
  EXPECT_EQ(cache_header(b), "hit");
  EXPECT_EQ(parse_object(a.body).at("choices"), parse_object(b.body).at("choices"));
  EXPECT_EQ(parse_object(b.body).at("choices").as_array().size(), 3u);
}

// A stream cut off by its client is cancelled in the engine; its partial result must not be
// stored (a later identical request would otherwise get a truncated answer).
TEST(CacheCancelTest, CancelledResultIsNotStored) {
  auto started = ServerProcess::start({"--threads", "1", "--ctx", "4096"});
  ASSERT_TRUE(started) << started.error().message;
  const auto opts = (*started)->client_options();
  const std::string cancelled = model_series("gantry:request_cancelled_total");
  json::object extra{
      {"max_tokens", 4000}, {"temperature", 0}, {"ignore_eos", true}, {"stream", true}};
  http::HttpClient c(opts);
  auto s =
      c.open_sse(http::Method::kPost, "/v1/chat/completions", chat_body("Once upon a time", extra));
  ASSERT_TRUE(s) << s.error().message;
  EXPECT_EQ(find_header(s->headers(), "x-gantry-cache").value_or(""), "miss");
  ASSERT_EQ(read_stream(*s, 3).events.size(), 3u);
  s->close();
  auto [done, m] = wait_for_metrics(
      opts, [&](const std::string &m) { return metric_or_zero(m, cancelled) == 1; },
      std::chrono::seconds(10));
  ASSERT_TRUE(done) << "the stream was not cancelled:\n" << m;
  EXPECT_EQ(metric_or_zero(m, "gantry:cache_stores_total{cache=\"response\"}"), 0) << m;
  EXPECT_EQ(metric_or_zero(m, "gantry:cache_entries{cache=\"response\"}"), 0) << m;
}

TEST(CacheDisabledTest, NoCacheFlagBypassesEverything) {
  auto s = ServerProcess::start({"--threads", "1", "--no-cache"});
  ASSERT_TRUE(s) << s.error().message;
  http::HttpClient client((*s)->client_options());
  for (int i = 0; i < 2; ++i) {
    auto r = client.post("/v1/chat/completions", chat_body("Once upon a time", kGreedy));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->header("x-gantry-cache").value_or(""), "bypass");
  }
}

} // namespace
} // namespace gantry::testing
