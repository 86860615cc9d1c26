// `gantry serve` end to end over HTTP: the OpenAI endpoints on the bundled model, their
// streaming and non-streaming forms, request ids, probes and routing errors.
#include <gtest/gtest.h>

#include "integration/api_helpers.h"
#include "integration/server_process.h"

namespace gantry::testing {
namespace {

class ServerTest : public ::testing::Test {
protected:
  void SetUp() override {
    // Without the response cache: these tests compare live generations with each other (e.g.
    // streamed against non-streamed), which a cache hit would replace by a replay.
    // cache_test.cpp covers the cache.
    auto s = ServerProcess::start({"--threads", "1", "--no-cache"});
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
  http::ClientResponse get(const std::string &path) {
    auto r = client_->get(path);
    EXPECT_TRUE(r) << path << ": " << r.error().message;
    return r ? *r : http::ClientResponse{};
  }
  StreamResult stream(const std::string &path, const std::string &body) {
    return stream_request(server_->client_options(), path, body);
  }

  std::unique_ptr<ServerProcess> server_;
  std::unique_ptr<http::HttpClient> client_;
};

TEST_F(ServerTest, ListsAndRetrievesModels) {
  auto list = get("/v1/models");
  ASSERT_EQ(list.status, 200) << list.body;
  auto o = parse_object(list.body);
  EXPECT_EQ(o.at("object").as_string(), "list");
  ASSERT_EQ(o.at("data").as_array().size(), 1u) << list.body;
  const auto &m = o.at("data").as_array()[0].as_object();
  EXPECT_EQ(m.at("id").as_string(), kModel);
  EXPECT_EQ(m.at("object").as_string(), "model");
  EXPECT_TRUE(m.at("created").is_int64() || m.at("created").is_uint64());

  auto one = get(std::string("/v1/models/") + kModel);
  ASSERT_EQ(one.status, 200) << one.body;
  EXPECT_EQ(parse_object(one.body).at("id").as_string(), kModel);

  auto missing = get("/v1/models/no-such-model");
  auto err = expect_error(missing, 404, "invalid_request_error", "model");
  EXPECT_EQ(err.at("code").as_string(), "not_found");
}

TEST_F(ServerTest, ChatCompletionNonStreaming) {
  auto r = post("/v1/chat/completions",
                chat_body("Once upon a time", {{"max_tokens", 16}, {"temperature", 0}}));
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_NE(r.header("content-type").value_or("").find("application/json"), std::string::npos);
  auto o = parse_object(r.body);
  EXPECT_EQ(o.at("object").as_string(), "chat.completion");
  EXPECT_TRUE(o.at("id").as_string().starts_with("chatcmpl-")) << o.at("id");
  EXPECT_EQ(o.at("model").as_string(), kModel);
  const auto &choice = o.at("choices").as_array().at(0).as_object();
  EXPECT_EQ(choice.at("index").as_int64(), 0);
  EXPECT_EQ(choice.at("message").at("role").as_string(), "assistant");
  EXPECT_FALSE(choice.at("message").at("content").as_string().empty());
  const std::string finish(choice.at("finish_reason").as_string());
  EXPECT_TRUE(finish == "length" || finish == "stop") << finish;
  const auto &u = o.at("usage").as_object();
  EXPECT_GT(u.at("prompt_tokens").as_int64(), 0);
  EXPECT_GT(u.at("completion_tokens").as_int64(), 0);
  EXPECT_LE(u.at("completion_tokens").as_int64(), 16);
  EXPECT_EQ(u.at("total_tokens").as_int64(),
            u.at("prompt_tokens").as_int64() + u.at("completion_tokens").as_int64());
}

TEST_F(ServerTest, CompletionNonStreamingMatchesPlainChat) {
  json::object extra{{"max_tokens", 24}, {"temperature", 0}, {"ignore_eos", true}};
  auto r = post("/v1/completions", completion_body("Once upon a time", extra));
  ASSERT_EQ(r.status, 200) << r.body;
  auto o = parse_object(r.body);
  EXPECT_EQ(o.at("object").as_string(), "text_completion");
  EXPECT_TRUE(o.at("id").as_string().starts_with("cmpl-")) << o.at("id");
  EXPECT_EQ(o.at("choices").as_array().at(0).at("finish_reason").as_string(), "length");
  EXPECT_EQ(o.at("usage").at("completion_tokens").as_int64(), 24);
  const std::string text = choice_text(o);
  EXPECT_FALSE(text.empty());

  // The bundled model's chat format is plain: one user message renders as its content.
  auto chat = post("/v1/chat/completions", chat_body("Once upon a time", extra));
  ASSERT_EQ(chat.status, 200) << chat.body;
  auto co = parse_object(chat.body);
  EXPECT_EQ(choice_text(co), text);
  EXPECT_EQ(co.at("usage").at("prompt_tokens").as_int64(),
            o.at("usage").at("prompt_tokens").as_int64());
}

// Streaming and non-streaming give the same text, for greedy and for seeded sampling, on both
// endpoints.
TEST_F(ServerTest, StreamTextEqualsNonStreamText) {
  const std::vector<json::object> samplings = {
      {{"temperature", 0}},
      {{"temperature", 1}, {"seed", 1234}},
      {{"temperature", 1}, {"top_p", 0.9}, {"seed", 77}},
  };
  for (const auto &sampling : samplings) {
    for (const bool chat : {true, false}) {
      SCOPED_TRACE((chat ? "chat " : "completion ") + json::serialize(sampling));
      json::object extra = sampling;
      extra["max_tokens"] = 40;
      const std::string path = chat ? "/v1/chat/completions" : "/v1/completions";
      const std::string body =
          chat ? chat_body("Once upon a time", extra) : completion_body("Once upon a time", extra);
      auto r = post(path, body);
      ASSERT_EQ(r.status, 200) << r.body;
      const std::string expected = choice_text(parse_object(r.body));

      extra["stream"] = true;
      auto s = stream(path, chat ? chat_body("Once upon a time", extra)
                                 : completion_body("Once upon a time", extra));
      ASSERT_EQ(s.status, 200);
      EXPECT_TRUE(s.transport_error.empty()) << s.transport_error;
      EXPECT_TRUE(s.done) << "no [DONE] at the end";
      EXPECT_FALSE(s.error) << json::serialize(*s.error);
      EXPECT_TRUE(s.consistent_ids);
      EXPECT_TRUE(s.id.starts_with(chat ? "chatcmpl-" : "cmpl-")) << s.id;
      EXPECT_EQ(s.text[0], expected);
      EXPECT_TRUE(s.finish_reason.contains(0)) << "no chunk with a finish_reason";
      EXPECT_FALSE(s.usage) << "usage sent without include_usage";
    }
  }
  // Seeded sampling at temperature 1 is not greedy: a different seed gives another text.
  json::object a{{"temperature", 1}, {"seed", 1}, {"max_tokens", 40}, {"ignore_eos", true}};
  json::object b = a;
  b["seed"] = 2;
  auto ra = post("/v1/completions", completion_body("Once upon a time", a));
  auto rb = post("/v1/completions", completion_body("Once upon a time", b));
  EXPECT_NE(choice_text(parse_object(ra.body)), choice_text(parse_object(rb.body)));
}

TEST_F(ServerTest, StreamIncludeUsageSendsAFinalUsageChunk) {
  for (const bool chat : {true, false}) {
    SCOPED_TRACE(chat ? "chat" : "completion");
    json::object extra{{"max_tokens", 12},
                       {"temperature", 0},
                       {"ignore_eos", true},
                       {"stream", true},
                       {"stream_options", {{"include_usage", true}}}};
    const std::string path = chat ? "/v1/chat/completions" : "/v1/completions";
    auto s = stream(path, chat ? chat_body("Once upon a time", extra)
                               : completion_body("Once upon a time", extra));
    ASSERT_EQ(s.status, 200);
    ASSERT_TRUE(s.done);
    ASSERT_TRUE(s.usage) << "no usage chunk";
    EXPECT_EQ(s.usage->at("completion_tokens").as_int64(), 12);
    EXPECT_GT(s.usage->at("prompt_tokens").as_int64(), 0);
    EXPECT_EQ(s.usage->at("total_tokens").as_int64(), s.usage->at("prompt_tokens").as_int64() + 12);
    // The usage chunk is the last one before [DONE], with no choices; the others carry
    // "usage": null.
    ASSERT_GE(s.events.size(), 3u);
    auto last = parse_object(s.events[s.events.size() - 2]);
    EXPECT_TRUE(last.at("choices").as_array().empty());
    auto first = parse_object(s.events.front());
    ASSERT_TRUE(first.contains("usage"));
    EXPECT_TRUE(first.at("usage").is_null());
  }
}

TEST_F(ServerTest, NChoicesStreamAndNonStream) {
  json::object extra{
      {"max_tokens", 10}, {"temperature", 1}, {"seed", 5}, {"n", 3}, {"ignore_eos", true}};
  auto r = post("/v1/chat/completions", chat_body("Once upon a time", extra));
  ASSERT_EQ(r.status, 200) << r.body;
  auto o = parse_object(r.body);
  const auto &choices = o.at("choices").as_array();
  ASSERT_EQ(choices.size(), 3u);
  for (size_t i = 0; i < 3; ++i)
    EXPECT_EQ(choices[i].at("index").as_int64(), static_cast<int64_t>(i));
  EXPECT_EQ(o.at("usage").at("completion_tokens").as_int64(), 30);
  // Each choice has its own seed, so the three texts are not all the same.
  EXPECT_FALSE(choice_text(o, 0) == choice_text(o, 1) && choice_text(o, 1) == choice_text(o, 2));

  extra["stream"] = true;
  auto s = stream("/v1/chat/completions", chat_body("Once upon a time", extra));
  ASSERT_EQ(s.status, 200);
  ASSERT_TRUE(s.done);
  ASSERT_EQ(s.text.size(), 3u);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(s.text[i], choice_text(o, static_cast<size_t>(i))) << "choice " << i;
    EXPECT_EQ(s.finish_reason[i], "length") << "choice " << i;
  }
}

TEST_F(ServerTest, StopStringsCutTheText) {
  json::object extra{{"max_tokens", 48}, {"temperature", 0}, {"ignore_eos", true}};
  auto full = post("/v1/completions", completion_body("Once upon a time", extra));
  ASSERT_EQ(full.status, 200) << full.body;
  const std::string text = choice_text(parse_object(full.body));
  ASSERT_GE(text.size(), 30u) << text;
  // A stop string taken from the middle of the greedy text; the response ends just before it.
  const std::string stop = text.substr(20, 4);
  const std::string expected = text.substr(0, text.find(stop));

  for (const json::value &stops : {json::value(stop), json::value(json::array{"zzzq", stop})}) {
    SCOPED_TRACE(json::serialize(stops));
    json::object e = extra;
    e["stop"] = stops;
    auto r = post("/v1/completions", completion_body("Once upon a time", e));
    ASSERT_EQ(r.status, 200) << r.body;
    auto o = parse_object(r.body);
    EXPECT_EQ(choice_text(o), expected);
    EXPECT_EQ(o.at("choices").as_array()[0].at("finish_reason").as_string(), "stop");

    e["stream"] = true;
    auto s = stream("/v1/completions", completion_body("Once upon a time", e));
    EXPECT_EQ(s.text[0], expected);
    EXPECT_EQ(s.finish_reason[0], "stop");
    EXPECT_TRUE(s.done);
  }
}

// Audit I: the response id was "cmpl-" + the client's X-Request-Id, so clients chose it (and
// two responses could share one). The header is still echoed; the id is the server's own.
TEST_F(ServerTest, RequestIdIsEchoedButTheResponseIdIsTheServers) {
  auto r = post("/v1/chat/completions", chat_body("Once", {{"max_tokens", 2}}),
                {{"X-Request-Id", "it-test-42"}});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.header("x-request-id").value_or(""), "it-test-42");
  const std::string id1(parse_object(r.body).at("id").as_string());
  EXPECT_TRUE(id1.starts_with("chatcmpl-")) << id1;
  EXPECT_EQ(id1.find("it-test-42"), std::string::npos) << id1;
  auto r2 = post("/v1/chat/completions", chat_body("Once", {{"max_tokens", 2}}),
                 {{"X-Request-Id", "it-test-42"}});
  ASSERT_EQ(r2.status, 200) << r2.body;
  EXPECT_NE(parse_object(r2.body).at("id").as_string(), id1) << "the same client id twice";

  auto a = post("/v1/completions", completion_body("Once", {{"max_tokens", 2}}));
  auto b = post("/v1/completions", completion_body("Once", {{"max_tokens", 2}}));
  const std::string ida(a.header("x-request-id").value_or(""));
  const std::string idb(b.header("x-request-id").value_or(""));
  EXPECT_FALSE(ida.empty());
  EXPECT_FALSE(idb.empty());
  EXPECT_NE(ida, idb);
  EXPECT_TRUE(parse_object(a.body).at("id").as_string().starts_with("cmpl-"));
  EXPECT_NE(parse_object(a.body).at("id"), parse_object(b.body).at("id"));

  // Errors and other routes carry one too.
  auto e = get("/v1/nope");
  EXPECT_FALSE(e.header("x-request-id").value_or("").empty());

  // A streamed response carries the client's id in its header; every chunk has the server's.
  http::HttpClient c(server_->client_options());
  auto s = c.open_sse(http::Method::kPost, "/v1/chat/completions",
                      chat_body("Once", {{"max_tokens", 3}, {"stream", true}}),
                      {{"x-request-id", "it-stream-7"}});
  ASSERT_TRUE(s) << s.error().message;
  EXPECT_EQ(find_header(s->headers(), "x-request-id").value_or(""), "it-stream-7");
  auto sr = read_stream(*s);
  EXPECT_TRUE(sr.id.starts_with("chatcmpl-")) << sr.id;
  EXPECT_EQ(sr.id.find("it-stream-7"), std::string::npos) << sr.id;
}

TEST_F(ServerTest, HealthAndReadiness) {
  auto h = get("/healthz");
  EXPECT_EQ(h.status, 200) << h.body;
  EXPECT_EQ(parse_object(h.body).at("status").as_string(), "ok");

  auto r = get("/readyz");
  ASSERT_EQ(r.status, 200) << r.body;
  auto o = parse_object(r.body);
  EXPECT_EQ(o.at("status").as_string(), "ok");
  const auto &checks = o.at("checks").as_array();
  ASSERT_EQ(checks.size(), 3u);
  EXPECT_EQ(checks[0].at("name").as_string(), std::string("model:") + kModel);
  EXPECT_EQ(checks[0].at("status").as_string(), "ok");
  EXPECT_EQ(checks[1].at("name").as_string(), "store");
  EXPECT_EQ(checks[1].at("status").as_string(), "ok");
  // The job queue is a dependency too (issue 15, item 4): a round trip with its depth.
  EXPECT_EQ(checks[2].at("name").as_string(), "jobs");
  EXPECT_EQ(checks[2].at("status").as_string(), "ok");
  EXPECT_EQ(checks[2].at("queued").as_int64(), 0);
  EXPECT_EQ(checks[2].at("oldest_queued_s").as_int64(), 0);

  auto m = get("/metrics");
  ASSERT_EQ(m.status, 200);
  EXPECT_TRUE(metric_value(m.body, model_series("gantry:num_requests_running"))) << m.body;
  EXPECT_TRUE(metric_value(m.body, model_series("gantry:kv_cache_usage_perc"))) << m.body;
}

TEST_F(ServerTest, RoutingErrors) {
  auto model = post("/v1/chat/completions",
                    json::serialize(json::object{
                        {"model", "no-such-model"},
                        {"messages", json::array{{{"role", "user"}, {"content", "hi"}}}}}));
  auto err = expect_error(model, 404, "invalid_request_error", "model");
  EXPECT_NE(err.at("message").as_string().find("no-such-model"), std::string::npos);

  auto route = get("/v1/no/such/route");
  expect_error(route, 404, "invalid_request_error", "");

  auto method = get("/v1/chat/completions");
  auto merr = expect_error(method, 405, "invalid_request_error", "");
  EXPECT_EQ(merr.at("code").as_string(), "method_not_allowed");
  EXPECT_NE(method.header("allow").value_or("").find("POST"), std::string::npos);

  auto del = client_->request(http::Method::kDelete, "/v1/models");
  ASSERT_TRUE(del);
  EXPECT_EQ(del->status, 405);
}

} // namespace
} // namespace gantry::testing
