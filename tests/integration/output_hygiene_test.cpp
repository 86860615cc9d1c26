// What leaves the server is well-formed and bounded, whatever the client sent:
// - audit L2: every JSON body and SSE event is valid UTF-8, even when `echo` decodes a
//   byte-fallback token or generation stops inside a character;
// - audit L6: client text echoed in an error message is capped, and the request log's error
//   text is bounded and has secrets redacted.
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <thread>

#include "core/utf8.h"
#include "integration/api_helpers.h"
#include "integration/server_process.h"

namespace gantry::testing {
namespace {

using namespace std::chrono_literals;

// Token 231 of the bundled model is the byte-fallback token <0xE4>: the lead byte of a
// three-byte character, alone.
constexpr const char *kLoneByteEcho =
    R"({"model":"stories260K","prompt":[231],"echo":true,"max_tokens":1)";

TEST(OutputHygiene, EchoOfAByteTokenIsValidUtf8) {
  auto started = ServerProcess::start(ServerProcessOptions{});
  ASSERT_TRUE(started) << started.error().message;
  auto &s = *started;
  http::HttpClient c(s->client_options());

  auto r = c.post("/v1/completions", std::string(kLoneByteEcho) + "}");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_TRUE(utf8_valid(r->body)) << "the body is not valid UTF-8";
  const auto text = choice_text(parse_object(r->body));
  EXPECT_EQ(text.rfind("\xEF\xBF\xBD", 0), 0u) << "the echoed byte becomes U+FFFD: " << text;

  auto sr = stream_request(s->client_options(), "/v1/completions",
                           std::string(kLoneByteEcho) + R"(,"stream":true})");
  ASSERT_TRUE(sr.done) << sr.transport_error;
  for (const auto &e : sr.events)
    EXPECT_TRUE(utf8_valid(e)) << "an SSE event is not valid UTF-8";
}

TEST(OutputHygiene, EchoedFieldsAndLoggedErrorsAreBoundedAndRedacted) {
  char tmpl[] = "/tmp/gantry-hyg-XXXXXX";
  const std::string dir = mkdtemp(tmpl);
  const std::string log = dir + "/requests.log";
  ServerProcessOptions o;
  o.args = {"--request-log", log};
  auto started = ServerProcess::start(std::move(o));
  ASSERT_TRUE(started) << started.error().message;
  auto &s = *started;
  http::HttpClient c(s->client_options());

  // A 100,000-character field name: the reply names it, capped.
  const std::string huge(100'000, 'k');
  auto r1 =
      c.post("/v1/completions", R"({"model":"stories260K","prompt":"x",")" + huge + R"(":1})");
  ASSERT_TRUE(r1);
  EXPECT_EQ(r1->status, 400);
  EXPECT_LT(r1->body.size(), 1000u) << "the reply echoes the whole field name";

  // A key pasted as the model name, padded so the message is long.
  const std::string secret = "gsk_ABCDEFGHIJKL_" + std::string(40, 'S');
  auto r2 = c.post("/v1/completions",
                   R"({"model":")" + secret + std::string(5000, 'm') + R"(","prompt":"x"})");
  ASSERT_TRUE(r2);
  EXPECT_EQ(r2->status, 404);
  EXPECT_LT(r2->body.size(), 1000u);

  // The log is written off the request path: wait for both lines.
  std::vector<std::string> lines;
  for (auto deadline = std::chrono::steady_clock::now() + 5s;
       std::chrono::steady_clock::now() < deadline && lines.size() < 2;
       std::this_thread::sleep_for(20ms)) {
    lines.clear();
    std::ifstream in(log);
    for (std::string line; std::getline(in, line);)
      lines.push_back(line);
  }
  ASSERT_EQ(lines.size(), 2u);
  for (const auto &line : lines) {
    EXPECT_LT(line.size(), 1500u) << line.substr(0, 300);
    EXPECT_EQ(line.find(std::string(40, 'S')), std::string::npos) << "a key reached the log";
    EXPECT_EQ(line.find(std::string(200, 'k')), std::string::npos);
    auto obj = parse_object(line);
    ASSERT_TRUE(obj.contains("error"));
    ASSERT_TRUE(obj["error"].is_string());
    EXPECT_LE(obj["error"].as_string().size(), 260u);
  }
}

} // namespace
} // namespace gantry::testing
