// Security audit H8 against the real server: replaying one large cached stream under fresh
// Idempotency-Keys must not grow the idempotency store past `idempotency_max_bytes`, and a
// response too large to keep is not replayed — its retry is told so (409).
#include <gtest/gtest.h>

#include "integration/api_helpers.h"
#include "integration/server_process.h"

namespace gantry::testing {
namespace {

constexpr int64_t kMaxBytes = 256 << 10;

std::unique_ptr<ServerProcess> start_server() {
  ServerProcessOptions o;
  o.config_toml = "idempotency_max_bytes = " + std::to_string(kMaxBytes) +
                  "\n[[models]]\npath = \"" + std::string(GANTRY_MODELS_DIR) +
                  "/stories260K.gguf\"\n";
  auto s = ServerProcess::start(std::move(o));
  EXPECT_TRUE(s) << (s ? "" : s.error().message);
  return s ? std::move(s).value() : nullptr;
}

double metric(const ServerProcess &s, const std::string &series) {
  http::HttpClient c(s.client_options());
  auto m = c.get("/metrics");
  EXPECT_TRUE(m);
  EXPECT_NE(m->body.find(series), std::string::npos) << series << " missing from /metrics";
  return metric_or_zero(m->body, series);
}

TEST(Idempotency, ReplaysOfALargeStreamUnderFreshKeysStayWithinTheByteBound) {
  auto s = start_server();
  ASSERT_TRUE(s);
  http::HttpClient c(s->client_options());
  // The audit's shape, smaller: greedy, so every repeat is a response-cache hit (no engine work,
  // no tokens). 4 × 1000 tokens streamed is several hundred KB of events, over the cap.
  const std::string big = completion_body(
      "Once",
      {{"n", 4}, {"max_tokens", 1000}, {"temperature", 0}, {"ignore_eos", true}, {"stream", true}});
  auto first =
      stream_request(s->client_options(), "/v1/completions", big, {{"Idempotency-Key", "big-0"}});
  ASSERT_TRUE(first.done) << first.transport_error;
  size_t streamed = 0;
  for (const auto &e : first.events)
    streamed += e.size();
  ASSERT_GT(streamed, static_cast<size_t>(kMaxBytes)) << "the stream must be over the cap";
  // Not kept, so a retry cannot be replayed; it is not silently run (and billed) again either.
  auto retry = c.post("/v1/completions", big, {{"Idempotency-Key", "big-0"}});
  ASSERT_TRUE(retry);
  auto err = expect_error(*retry, 409, "invalid_request_error", "Idempotency-Key");
  EXPECT_NE(std::string(err["message"].as_string()).find("too large"), std::string::npos);
  for (int i = 1; i <= 30; ++i) {
    auto r = stream_request(s->client_options(), "/v1/completions", big,
                            {{"Idempotency-Key", "big-" + std::to_string(i)}});
    ASSERT_TRUE(r.done) << r.transport_error;
  }
  EXPECT_LE(metric(*s, "gantry:idempotency_bytes"), kMaxBytes);
  EXPECT_EQ(metric(*s, "gantry:idempotency_not_stored_total"), 31);

  // Responses under the cap are kept, and the oldest make room for the newest.
  const std::string small = completion_body(
      "Once", {{"max_tokens", 100}, {"temperature", 0}, {"ignore_eos", true}, {"stream", true}});
  for (int i = 0; i < 40; ++i) {
    auto r = stream_request(s->client_options(), "/v1/completions", small,
                            {{"Idempotency-Key", "small-" + std::to_string(i)}});
    ASSERT_TRUE(r.done) << r.transport_error;
  }
  const double bytes = metric(*s, "gantry:idempotency_bytes");
  EXPECT_GT(bytes, 0);
  EXPECT_LE(bytes, kMaxBytes);
  EXPECT_GT(metric(*s, "gantry:idempotency_evictions_total"), 0);
  auto replay = stream_request(s->client_options(), "/v1/completions", small,
                               {{"Idempotency-Key", "small-39"}});
  EXPECT_TRUE(replay.done);
  auto again = c.post("/v1/completions", small, {{"Idempotency-Key", "small-39"}});
  ASSERT_TRUE(again);
  EXPECT_EQ(again->header("idempotent-replayed").value_or(""), "true");
}

} // namespace
} // namespace gantry::testing
