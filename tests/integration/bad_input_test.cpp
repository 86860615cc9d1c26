// Hostile and broken clients — malformed JSON, wrong types, unknown fields, huge max_tokens,
// prompts longer than the context, 10 MB bodies, slowloris-style clients, abrupt disconnects —
// each get the right error or are cut off, while a long stream keeps running and then completes
// correctly.
#include <algorithm>
#include <cstdio>
#include <future>
#include <thread>

#include <gtest/gtest.h>

#include "integration/api_helpers.h"
#include "integration/server_process.h"

namespace gantry::testing {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr int kCtx = 3072;
constexpr int kMaxLongTokens = 3000; // kCtx bounds the long stream
constexpr int kMinLongTokens = 1500;
constexpr int kPrefixTokens = 100;

// Short network deadlines so that the slow clients are cut off within a second.
constexpr const char *kConfig = R"(
header_timeout_s = 0.5
body_timeout_s = 0.5
idle_timeout_s = 5
)";

struct BadRequest {
  std::string name;
  std::string path;
  std::string body;
  int status;
  std::string param; // empty: null
  std::string code;  // empty: not checked
};

std::string with(const std::string &path, json::object fields) {
  json::object o{{"model", kModel}};
  if (path == "/v1/chat/completions") {
    o["messages"] = json::array{json::object{{"role", "user"}, {"content", "Hello"}}};
  } else {
    o["prompt"] = "Hello";
  }
  for (auto &[k, v] : fields)
    o[k] = v;
  return json::serialize(o);
}

std::vector<BadRequest> bad_requests() {
  const std::string chat = "/v1/chat/completions", cmpl = "/v1/completions";
  std::string long_prompt;
  for (int i = 0; i < kCtx; ++i)
    long_prompt += "Once upon a time ";
  std::vector<BadRequest> v = {
      // Malformed JSON.
      {"truncated JSON", cmpl, R"({"model":"stories260K","prompt":)", 400, "", "invalid_value"},
      {"not JSON", chat, "hello there", 400, "", "invalid_value"},
      {"empty body", chat, "", 400, "", "invalid_value"},
      {"JSON array", chat, "[1,2,3]", 400, "", "invalid_value"},
      {"trailing garbage", cmpl, with(cmpl, {}) + "}}", 400, "", "invalid_value"},
      // Wrong types.
      {"prompt number", cmpl, with(cmpl, {{"prompt", 42}}), 400, "prompt", ""},
      {"messages string", chat, with(chat, {{"messages", "hi"}}), 400, "messages", ""},
      {"content number", chat,
       with(chat, {{"messages", json::array{{{"role", "user"}, {"content", 5}}}}}), 400,
       "messages[0].content", ""},
      {"bad role", chat,
       with(chat, {{"messages", json::array{{{"role", "wizard"}, {"content", "x"}}}}}), 400,
       "messages[0].role", ""},
      {"max_tokens string", cmpl, with(cmpl, {{"max_tokens", "ten"}}), 400, "max_tokens", ""},
      {"max_tokens zero", cmpl, with(cmpl, {{"max_tokens", 0}}), 400, "max_tokens", ""},
      {"max_tokens fraction", cmpl, with(cmpl, {{"max_tokens", 1.5}}), 400, "max_tokens", ""},
      {"temperature string", chat, with(chat, {{"temperature", "hot"}}), 400, "temperature", ""},
      {"temperature range", chat, with(chat, {{"temperature", 3}}), 400, "temperature", ""},
      {"top_p range", chat, with(chat, {{"top_p", 1.5}}), 400, "top_p", ""},
      {"stream string", chat, with(chat, {{"stream", "yes"}}), 400, "stream", ""},
      {"n too large", chat, with(chat, {{"n", 17}}), 400, "n", ""},
      {"stop numbers", cmpl, with(cmpl, {{"stop", json::array{1}}}), 400, "stop", ""},
      {"model number", chat, with(chat, {{"model", 5}}), 400, "model", ""},
      {"seed string", chat, with(chat, {{"seed", "x"}}), 400, "seed", ""},
      {"usage without stream", chat, with(chat, {{"stream_options", {{"include_usage", true}}}}),
       400, "stream_options", ""},
      {"missing messages", chat, R"({"model":"stories260K"})", 400, "messages", ""},
      // Unknown fields.
      {"unknown field", chat, with(chat, {{"frobnicate", 1}}), 400, "frobnicate", ""},
      {"unknown stream option", chat,
       with(chat, {{"stream", true}, {"stream_options", {{"foo", true}}}}), 400,
       "stream_options.foo", ""},
      {"prompt on chat", chat, with(chat, {{"prompt", "x"}}), 400, "prompt", ""},
      // Huge max_tokens.
      {"max_tokens 1e9", cmpl, with(cmpl, {{"max_tokens", 1000000000}}), 400, "max_tokens",
       "context_length_exceeded"},
      {"max_tokens int64 max", cmpl, with(cmpl, {{"max_tokens", INT64_MAX}}), 400, "max_tokens",
       "context_length_exceeded"},
      {"max_tokens int64 max, streamed", cmpl,
       with(cmpl, {{"max_tokens", INT64_MAX}, {"stream", true}}), 400, "max_tokens",
       "context_length_exceeded"},
      {"max_tokens uint64 max", cmpl, with(cmpl, {{"max_tokens", UINT64_MAX}}), 400, "max_tokens",
       ""},
      {"max_tokens 1e300", cmpl, with(cmpl, {{"max_tokens", 1e300}}), 400, "max_tokens", ""},
      {"max_completion_tokens 1e9", chat, with(chat, {{"max_completion_tokens", 1000000000}}), 400,
       "max_tokens", "context_length_exceeded"},
      {"prompt + max_tokens over context", cmpl, with(cmpl, {{"max_tokens", kCtx}}), 400,
       "max_tokens", "context_length_exceeded"},
      // Prompts longer than the context.
      {"long prompt", cmpl, with(cmpl, {{"prompt", long_prompt}}), 400, "prompt",
       "context_length_exceeded"},
      {"long message", chat,
       with(chat, {{"messages", json::array{{{"role", "user"}, {"content", long_prompt}}}}}), 400,
       "messages", "context_length_exceeded"},
      {"token ids outside the vocabulary", cmpl,
       with(cmpl, {{"prompt", json::array{1, 2, 99999999}}}), 400, "prompt", ""},
  };
  return v;
}

// Sends `at_once`, then trickles `trickle` one byte per 100 ms; returns how long the server took
// to close the connection (or the time given up after).
std::chrono::milliseconds slowloris(std::uint16_t port, const std::string &at_once,
                                    const std::string &trickle) {
  RawConnection c(port);
  EXPECT_TRUE(c.ok());
  const auto start = Clock::now();
  c.send(at_once);
  size_t i = 0;
  while (Clock::now() - start < 4s) {
    if (i < trickle.size() && !c.send(trickle.substr(i++, 1)))
      break;
    auto [got, closed] = c.read_until_closed(100ms);
    if (closed)
      break;
  }
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start);
}

TEST(BadInputTest, EachBadInputGetsItsErrorWhileAStreamKeepsRunning) {
  auto started = ServerProcess::start({"--threads", "1", "--ctx", std::to_string(kCtx)}, kConfig);
  ASSERT_TRUE(started) << started.error().message;
  ServerProcess &server = **started;
  const auto opts = server.client_options(std::chrono::seconds(120));
  const std::string running = model_series("gantry:num_requests_running");
  const std::string cancelled = model_series("gantry:request_cancelled_total");

  // The greedy prefix the long stream must start with.
  http::HttpClient client(server.client_options());
  const auto t_prefix = Clock::now();
  auto prefix_r = client.post(
      "/v1/completions",
      completion_body("Once upon a time",
                      {{"max_tokens", kPrefixTokens}, {"temperature", 0}, {"ignore_eos", true}}));
  ASSERT_TRUE(prefix_r && prefix_r->status == 200);
  const std::string prefix = choice_text(parse_object(prefix_r->body));
  // The long stream must outlive every bad input below (about two seconds of work): aim for 15 s
  // at the measured speed (6 s was not enough when the measurement fell in a busy moment of a
  // shared machine that then went quiet), so that slow builds (ASan, -O0) do not run for minutes,
  // but never fewer than kMinLongTokens, because one measurement on a loaded machine is noisy.
  // Longer sequences decode more slowly, so this errs long.
  const double prefix_s = std::chrono::duration<double>(Clock::now() - t_prefix).count();
  const int long_tokens =
      std::clamp(static_cast<int>(15.0 / std::max(prefix_s, 1e-3) * kPrefixTokens), kMinLongTokens,
                 kMaxLongTokens);
  std::printf("  %d greedy tokens took %.0f ms; the long stream generates %d\n", kPrefixTokens,
              prefix_s * 1000, long_tokens);

  // The long stream, read on its own thread the whole time.
  auto long_stream = std::async(std::launch::async, [&] {
    return stream_request(
        opts, "/v1/completions",
        completion_body("Once upon a time", {{"max_tokens", long_tokens},
                                             {"temperature", 0},
                                             {"ignore_eos", true},
                                             {"stream", true},
                                             {"stream_options", {{"include_usage", true}}}}));
  });
  auto [stream_started, m0] = wait_for_metrics(
      opts, [&](const std::string &m) { return metric_or_zero(m, running) >= 1; }, 5s);
  ASSERT_TRUE(stream_started) << "the long stream never started running:\n" << m0;
  const auto bad_start = Clock::now();
  auto phase = [&](const char *name) {
    std::printf("  [%6lld ms] %s\n",
                static_cast<long long>(
                    std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - bad_start)
                        .count()),
                name);
  };

  // 1. Bad request bodies: status, OpenAI error type and param.
  for (const auto &b : bad_requests()) {
    SCOPED_TRACE(b.name);
    auto r = client.post(b.path, b.body, {{"Content-Type", "application/json"}});
    ASSERT_TRUE(r) << r.error().message;
    auto err = expect_error(*r, b.status, "invalid_request_error", b.param);
    if (!b.code.empty() && err.contains("code")) {
      EXPECT_EQ(json::serialize(err.at("code")), json::serialize(json::value(b.code)));
    }
  }

  phase("bad bodies done");
  // 2. A 10 MB body: 413 and the connection is closed; the next request reconnects.
  {
    std::string huge = completion_body(std::string(10 << 20, 'a'));
    auto r = client.post("/v1/completions", std::move(huge));
    ASSERT_TRUE(r) << r.error().message;
    auto err = expect_error(*r, 413, "invalid_request_error", "");
    EXPECT_EQ(json::serialize(err.at("code")), "\"payload_too_large\"");
    auto ok = client.get("/healthz");
    ASSERT_TRUE(ok);
    EXPECT_EQ(ok->status, 200);
  }

  phase("10 MB body done");
  // 3. Broken HTTP: garbage gets 400, oversized headers 431.
  {
    RawConnection c(server.port());
    c.send("THIS IS NOT HTTP\r\n\r\n");
    auto [got, closed] = c.read_until_closed(3s);
    EXPECT_TRUE(got.starts_with("HTTP/1.1 400")) << got;
    EXPECT_TRUE(closed);
  }
  {
    RawConnection c(server.port());
    c.send("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + std::string(64 << 10, 'b') + "\r\n\r\n");
    auto [got, closed] = c.read_until_closed(3s);
    EXPECT_TRUE(got.starts_with("HTTP/1.1 431")) << got.substr(0, 200);
  }

  phase("broken HTTP done");
  // 4. Slowloris: silent, trickled head, trickled body — all cut off by the deadlines (0.5 s),
  // run together.
  auto before = wait_for_metrics(
                    opts, [](const std::string &) { return true; }, 1s)
                    .second;
  {
    auto silent = std::async(std::launch::async, [&] { return slowloris(server.port(), "", ""); });
    auto head = std::async(std::launch::async, [&] {
      return slowloris(server.port(), "",
                       "POST /v1/completions HTTP/1.1\r\nHost: x\r\nX-Slow: " +
                           std::string(100, 'z'));
    });
    auto body = std::async(std::launch::async, [&] {
      return slowloris(server.port(),
                       "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n",
                       std::string(100, ' '));
    });
    EXPECT_LT(silent.get(), 3s) << "a silent connection was not cut off";
    EXPECT_LT(head.get(), 3s) << "a trickled request head was not cut off";
    EXPECT_LT(body.get(), 3s) << "a trickled request body was not cut off";
  }
  phase("slowloris done");
  auto [timeouts_counted, after_slow] = wait_for_metrics(
      opts,
      [&](const std::string &m) {
        return metric_or_zero(m, "gantry:http_timeouts_total{kind=\"header\"}") >=
                   metric_or_zero(before, "gantry:http_timeouts_total{kind=\"header\"}") + 2 &&
               metric_or_zero(m, "gantry:http_timeouts_total{kind=\"body\"}") >=
                   metric_or_zero(before, "gantry:http_timeouts_total{kind=\"body\"}") + 1;
      },
      5s);
  EXPECT_TRUE(timeouts_counted) << "expected 2 more header and 1 more body timeouts:\n"
                                << after_slow;

  phase("timeouts counted");
  // 5. Abrupt disconnects: half a request, a reset during generation, a stream dropped after
  // two events. The two started generations are cancelled.
  {
    RawConnection half(server.port());
    half.send("POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"model\"");
    half.reset();

    RawConnection mid(server.port());
    const std::string b =
        completion_body("Once upon a time", {{"max_tokens", long_tokens}, {"ignore_eos", true}});
    mid.send("POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
             "Content-Length: " +
             std::to_string(b.size()) + "\r\n\r\n" + b);
    auto [mid_running, m1] = wait_for_metrics(
        opts, [&](const std::string &m) { return metric_or_zero(m, running) >= 2; }, 5s);
    EXPECT_TRUE(mid_running) << m1;
    mid.reset();

    http::HttpClient sc(opts);
    auto s = sc.open_sse(
        http::Method::kPost, "/v1/chat/completions",
        chat_body("Once upon a time",
                  {{"max_tokens", long_tokens}, {"ignore_eos", true}, {"stream", true}}));
    ASSERT_TRUE(s) << s.error().message;
    auto first = read_stream(*s, 2);
    EXPECT_EQ(first.events.size(), 2u);
    s->close();
  }
  phase("disconnects done");
  auto [dropped, after_drop] = wait_for_metrics(
      opts,
      [&](const std::string &m) {
        return metric_or_zero(m, cancelled) >= metric_or_zero(before, cancelled) + 2 &&
               metric_or_zero(m, "gantry:http_client_disconnects_total") >=
                   metric_or_zero(before, "gantry:http_client_disconnects_total") + 2 &&
               metric_or_zero(m, running) <= 1;
      },
      5s);
  EXPECT_TRUE(dropped) << "expected 2 more cancelled sequences and client disconnects, and at most "
                          "the long stream running:\n"
                       << after_drop;

  phase("disconnects counted");
  // Other clients are still served, and the long stream was running through all of the above.
  auto ok = client.post("/v1/chat/completions", chat_body("Once upon a time", {{"max_tokens", 4}}));
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->status, 200) << ok->body;
  auto [still, m2] = wait_for_metrics(
      opts, [&](const std::string &m) { return metric_or_zero(m, running) >= 1; }, 0ms);
  const auto bad_elapsed = Clock::now() - bad_start;
  EXPECT_TRUE(still) << "the long stream finished before the bad inputs did ("
                     << std::chrono::duration_cast<std::chrono::milliseconds>(bad_elapsed).count()
                     << " ms); raise the stream's length";

  // The long stream completes correctly.
  ASSERT_EQ(long_stream.wait_for(120s), std::future_status::ready);
  StreamResult s = long_stream.get();
  EXPECT_EQ(s.status, 200);
  EXPECT_TRUE(s.transport_error.empty()) << s.transport_error;
  EXPECT_FALSE(s.error) << json::serialize(*s.error);
  EXPECT_TRUE(s.done);
  EXPECT_EQ(s.finish_reason[0], "length");
  ASSERT_TRUE(s.usage);
  EXPECT_EQ(s.usage->at("completion_tokens").as_int64(), long_tokens);
  EXPECT_TRUE(s.text[0].starts_with(prefix))
      << "stream text diverged from the greedy completion:\n  stream: "
      << s.text[0].substr(0, prefix.size()) << "\n  greedy: " << prefix;
}

} // namespace
} // namespace gantry::testing
