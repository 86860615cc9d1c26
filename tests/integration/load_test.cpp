// The scheduler under concurrent clients: 64 streams each get exactly their solo text, a client
// that disconnects frees its sequence, and a full queue answers 429 with retry hints.
#include <future>
#include <latch>
#include <thread>

#include <gtest/gtest.h>

#include "integration/api_helpers.h"
#include "integration/server_process.h"

namespace gantry::testing {
namespace {

using namespace std::chrono_literals;

// 64 distinct prompts, so that text delivered to the wrong client would show.
std::vector<std::string> prompts(int n) {
  const char *who[] = {"Lily", "Tom",        "a little dog", "the old king",
                       "Sue",  "a red bird", "Ben",          "the moon"};
  const char *what[] = {"went to the park", "found a box", "was very sad",  "wanted to fly",
                        "saw a big tree",   "had a toy",   "liked to sing", "lost a shoe"};
  std::vector<std::string> out;
  for (int i = 0; i < n; ++i) {
    out.push_back(std::string("Once upon a time, ") + who[i % 8] + " " + what[(i / 8) % 8] + ".");
  }
  return out;
}

TEST(LoadTest, SixtyFourConcurrentStreamsEachGetTheirSoloText) {
  constexpr int kClients = 64;
  constexpr int kTokens = 24;
  auto started = ServerProcess::start({"--threads", "1", "--max-seqs", "64"});
  ASSERT_TRUE(started) << started.error().message;
  ServerProcess &server = **started;
  const auto ps = prompts(kClients);
  auto body = [&](int i, bool stream) {
    json::object extra{{"max_tokens", kTokens}, {"temperature", 0}};
    if (stream)
      extra["stream"] = true;
    // Alternate endpoints: both share one batch.
    return i % 2 ? chat_body(ps[i], extra) : completion_body(ps[i], extra);
  };
  auto path = [](int i) { return i % 2 ? "/v1/chat/completions" : "/v1/completions"; };

  // Each request alone first.
  std::vector<std::string> solo(kClients);
  http::HttpClient client(server.client_options());
  for (int i = 0; i < kClients; ++i) {
    auto r = client.post(path(i), body(i, false));
    ASSERT_TRUE(r && r->status == 200) << i;
    solo[i] = choice_text(parse_object(r->body));
  }
  // Different prompts give different texts, or the check below could not see cross-talk.
  std::set<std::string> distinct(solo.begin(), solo.end());
  EXPECT_GT(distinct.size(), static_cast<size_t>(kClients / 2));

  // All together, released at once.
  std::latch go(kClients);
  std::vector<std::future<StreamResult>> results;
  for (int i = 0; i < kClients; ++i) {
    results.push_back(std::async(std::launch::async, [&, i] {
      go.arrive_and_wait();
      return stream_request(server.client_options(std::chrono::seconds(60)), path(i),
                            body(i, true));
    }));
  }
  for (int i = 0; i < kClients; ++i) {
    StreamResult s = results[i].get();
    SCOPED_TRACE("client " + std::to_string(i) + ": " + ps[i]);
    EXPECT_EQ(s.status, 200);
    EXPECT_TRUE(s.transport_error.empty()) << s.transport_error;
    EXPECT_TRUE(s.done);
    EXPECT_TRUE(s.consistent_ids);
    EXPECT_EQ(s.text[0], solo[i]);
  }
}

TEST(LoadTest, ClientDisconnectMidStreamFreesItsSequence) {
  auto started = ServerProcess::start({"--threads", "1", "--ctx", "4096"});
  ASSERT_TRUE(started) << started.error().message;
  ServerProcess &server = **started;
  const auto opts = server.client_options();
  const std::string running = model_series("gantry:num_requests_running");
  const std::string cancelled = model_series("gantry:request_cancelled_total");
  const std::string kv = model_series("gantry:kv_cache_usage_perc");
  auto [ok0, m0] = wait_for_metrics(
      opts, [](const std::string &) { return true; }, 1s);
  ASSERT_TRUE(ok0);

  http::HttpClient c(opts);
  auto s = c.open_sse(http::Method::kPost, "/v1/chat/completions",
                      chat_body("Once upon a time",
                                {{"max_tokens", 4000}, {"ignore_eos", true}, {"stream", true}}));
  ASSERT_TRUE(s) << s.error().message;
  ASSERT_EQ(s->status(), 200);
  auto first = read_stream(*s, 3);
  ASSERT_EQ(first.events.size(), 3u);
  auto [busy, m1] = wait_for_metrics(
      opts, [&](const std::string &m) { return metric_or_zero(m, running) == 1; }, 5s);
  EXPECT_TRUE(busy) << "the stream's sequence is not running:\n" << m1;
  EXPECT_GT(metric_or_zero(m1, kv), 0) << m1;
  s->close();

  auto [freed, m2] = wait_for_metrics(
      opts,
      [&](const std::string &m) {
        return metric_or_zero(m, running) == 0 &&
               metric_or_zero(m, cancelled) == metric_or_zero(m0, cancelled) + 1 &&
               metric_or_zero(m, "gantry:http_client_disconnects_total") ==
                   metric_or_zero(m0, "gantry:http_client_disconnects_total") + 1 &&
               metric_or_zero(m, kv) == 0;
      },
      5s);
  EXPECT_TRUE(freed) << "expected no running sequence, one more cancellation and disconnect, and "
                        "an empty KV cache within 5 s:\n"
                     << m2;
}

TEST(LoadTest, FullQueueAnswers429WithRetryHints) {
  auto started = ServerProcess::start(
      {"--threads", "1", "--ctx", "4096", "--max-seqs", "1", "--max-queued-requests", "1"});
  ASSERT_TRUE(started) << started.error().message;
  ServerProcess &server = **started;
  const auto opts = server.client_options(std::chrono::seconds(120));
  const std::string running = model_series("gantry:num_requests_running");
  const std::string waiting = model_series("gantry:num_requests_waiting");
  const std::string rejected = std::string("gantry:requests_rejected_total{model_name=\"") +
                               kModel + "\",reason=\"queue_full\"}";

  // A occupies the only sequence slot; B waits in the only queue slot; C is refused.
  http::HttpClient ca(opts);
  auto a =
      ca.open_sse(http::Method::kPost, "/v1/completions",
                  completion_body("Once upon a time",
                                  {{"max_tokens", 4000}, {"ignore_eos", true}, {"stream", true}}));
  ASSERT_TRUE(a) << a.error().message;
  auto [a_running, m1] = wait_for_metrics(
      opts, [&](const std::string &m) { return metric_or_zero(m, running) == 1; }, 5s);
  ASSERT_TRUE(a_running) << m1;

  auto b = std::async(std::launch::async, [&] {
    http::HttpClient cb(opts);
    return cb.post("/v1/completions", completion_body("Once upon a time", {{"max_tokens", 8}}));
  });
  auto [b_waiting, m2] = wait_for_metrics(
      opts, [&](const std::string &m) { return metric_or_zero(m, waiting) == 1; }, 5s);
  ASSERT_TRUE(b_waiting) << m2;

  http::HttpClient cc(opts);
  for (const char *path : {"/v1/completions", "/v1/chat/completions"}) {
    SCOPED_TRACE(path);
    auto r =
        cc.post(path, std::string(path) == "/v1/completions"
                          ? completion_body("Once upon a time", {{"max_tokens", 8}})
                          : chat_body("Once upon a time", {{"max_tokens", 8}, {"stream", true}}));
    ASSERT_TRUE(r) << r.error().message;
    auto err = expect_error(*r, 429, "rate_limit_error", "");
    EXPECT_EQ(json::serialize(err.at("code")), "\"queue_full\"");
    EXPECT_EQ(r->header("retry-after").value_or(""), "1");
    EXPECT_EQ(r->header("retry-after-ms").value_or(""), "1000");
  }
  // A burst of concurrent requests: all refused while A runs and B waits.
  std::vector<std::future<int>> burst;
  for (int i = 0; i < 6; ++i) {
    burst.push_back(std::async(std::launch::async, [&] {
      http::HttpClient c(opts);
      auto r = c.post("/v1/completions", completion_body("Once upon a time", {{"max_tokens", 8}}));
      return r ? r->status : -1;
    }));
  }
  for (auto &f : burst)
    EXPECT_EQ(f.get(), 429);
  auto [counted, m3] = wait_for_metrics(
      opts, [&](const std::string &m) { return metric_or_zero(m, rejected) == 8; }, 2s);
  EXPECT_TRUE(counted) << "expected 8 queue_full rejections:\n" << m3;

  // Freeing A lets B run to completion.
  a->close();
  auto rb = b.get();
  ASSERT_TRUE(rb) << rb.error().message;
  EXPECT_EQ(rb->status, 200) << rb->body;
}

} // namespace
} // namespace gantry::testing
