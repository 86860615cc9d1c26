// Graceful shutdown of the real process: SIGTERM lets running streams finish (or ends them
// cleanly after the grace), refuses new requests, and exits 0.
#include <csignal>
#include <thread>

#include <gtest/gtest.h>

#include "integration/api_helpers.h"
#include "integration/server_process.h"

namespace gantry::testing {
namespace {

using namespace std::chrono_literals;

// Sends small requests on fresh connections until one is refused (connection error or 503).
// Returns what the refused one got, or an empty string at the deadline.
std::string wait_until_refused(const ServerProcess &server, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    http::HttpClient c(server.client_options(2s));
    auto r = c.post("/v1/completions", completion_body("Once", {{"max_tokens", 1}}));
    if (!r)
      return "connection error: " + r.error().message;
    if (r->status == 503) {
      auto err = parse_object(r->body);
      EXPECT_EQ(err.at("error").at("type").as_string(), "server_error") << r->body;
      return "503";
    }
    EXPECT_EQ(r->status, 200) << r->body;
    std::this_thread::sleep_for(10ms); // the signal is handled asynchronously by the server
  }
  return "";
}

TEST(ShutdownTest, SigtermLetsARunningStreamFinishAndExitsZero) {
  constexpr int kTokens = 1000;
  auto started =
      ServerProcess::start({"--threads", "1", "--ctx", "1024"}, "shutdown_grace_s = 60\n");
  ASSERT_TRUE(started) << started.error().message;
  ServerProcess &server = **started;
  const auto opts = server.client_options(60s);

  http::HttpClient c(opts);
  auto s = c.open_sse(
      http::Method::kPost, "/v1/completions",
      completion_body("Once upon a time", {{"max_tokens", kTokens},
                                           {"temperature", 0},
                                           {"ignore_eos", true},
                                           {"stream", true},
                                           {"stream_options", {{"include_usage", true}}}}));
  ASSERT_TRUE(s) << s.error().message;
  ASSERT_EQ(s->status(), 200);
  auto first = read_stream(*s, 1);
  ASSERT_EQ(first.events.size(), 1u);
  auto [running, m] = wait_for_metrics(
      opts,
      [](const std::string &t) {
        return metric_or_zero(t, model_series("gantry:num_requests_running")) == 1;
      },
      5s); // the gauges are published after the engine step whose events we already read
  EXPECT_TRUE(running) << "the stream was not running when SIGTERM was sent:\n" << m;

  server.signal(SIGTERM);
  const std::string refused = wait_until_refused(server, 10s);
  EXPECT_FALSE(refused.empty()) << "new requests were still accepted after SIGTERM";

  auto rest = read_stream(*s);
  EXPECT_TRUE(rest.transport_error.empty()) << rest.transport_error;
  EXPECT_FALSE(rest.error) << json::serialize(*rest.error);
  EXPECT_TRUE(rest.done) << "the stream did not end with [DONE]";
  EXPECT_EQ(rest.finish_reason[0], "length");
  ASSERT_TRUE(rest.usage);
  EXPECT_EQ(rest.usage->at("completion_tokens").as_int64(), kTokens);

  EXPECT_EQ(server.wait_exit(60s), std::optional<int>(0)) << server.output();
  EXPECT_NE(server.output().find("shutdown complete"), std::string::npos) << server.output();
}

TEST(ShutdownTest, StreamsOutlivingTheGraceEndCleanly) {
  auto started =
      ServerProcess::start({"--threads", "1", "--ctx", "4096"}, "shutdown_grace_s = 0.2\n");
  ASSERT_TRUE(started) << started.error().message;
  ServerProcess &server = **started;

  http::HttpClient c(server.client_options(30s));
  auto s = c.open_sse(http::Method::kPost, "/v1/chat/completions",
                      chat_body("Once upon a time",
                                {{"max_tokens", 4000}, {"ignore_eos", true}, {"stream", true}}));
  ASSERT_TRUE(s) << s.error().message;
  ASSERT_EQ(read_stream(*s, 2).events.size(), 2u);

  const auto t0 = std::chrono::steady_clock::now();
  server.signal(SIGTERM);
  auto rest = read_stream(*s);
  // Cut short: an error event naming the cancellation, then [DONE], then the end of the body.
  EXPECT_TRUE(rest.transport_error.empty()) << rest.transport_error;
  ASSERT_TRUE(rest.error) << "no error event; events: " << rest.events.size();
  EXPECT_EQ(rest.error->at("type").as_string(), "server_error");
  EXPECT_NE(std::string(rest.error->at("message").as_string()).find("draining"), std::string::npos)
      << json::serialize(*rest.error);
  EXPECT_TRUE(rest.done);
  EXPECT_EQ(server.wait_exit(10s), std::optional<int>(0)) << server.output();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 8s);
  EXPECT_NE(server.output().find("in-flight requests cancelled"), std::string::npos)
      << server.output();
}

TEST(ShutdownTest, SigintOnAnIdleServerExitsZeroAtOnce) {
  auto started = ServerProcess::start({"--threads", "1"});
  ASSERT_TRUE(started) << started.error().message;
  ServerProcess &server = **started;
  const auto t0 = std::chrono::steady_clock::now();
  server.signal(SIGINT);
  EXPECT_EQ(server.wait_exit(10s), std::optional<int>(0)) << server.output();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 3s);
}

} // namespace
} // namespace gantry::testing
