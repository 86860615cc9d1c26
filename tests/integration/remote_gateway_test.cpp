// `gantry serve` with remote models, end to end: a Gantry in front of other `gantry serve`
// processes (and nginx), spoken to over HTTP like any client. Keys, usage, the request log,
// /readyz and /metrics must work for remote models as for local ones.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "integration/api_helpers.h"
#include "integration/nginx_process.h"
#include "integration/server_process.h"

namespace gantry::testing {
namespace {

using namespace std::chrono_literals;

std::unique_ptr<ServerProcess> upstream() {
  auto s = ServerProcess::start({"--threads", "1"});
  EXPECT_TRUE(s.ok()) << s.error().message;
  return s ? std::move(*s) : nullptr;
}

std::string remote_chat(const std::string &content, json::object extra = {}) {
  json::object o{{"model", "remote"},
                 {"messages", json::array{json::object{{"role", "user"}, {"content", content}}}},
                 {"max_tokens", 6},
                 {"temperature", 0}};
  for (auto &kv : extra)
    o[kv.key()] = kv.value();
  return json::serialize(o);
}

std::vector<json::object> read_log(const std::string &path) {
  std::vector<json::object> out;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);)
    if (!line.empty())
      out.push_back(json::parse(line).as_object());
  return out;
}

TEST(RemoteGateway, ServesARemoteModelWithUsageLogAndMetrics) {
  auto a = upstream();
  auto b = upstream();
  ASSERT_TRUE(a && b);
  const std::string log = ::testing::TempDir() + "remote-requests.log";
  std::filesystem::remove(log);
  ServerProcessOptions o;
  o.args = {"--threads",     "1",
            "--model",       "remote=" + a->base_url() + "/v1",
            "--model",       "remote=" + b->base_url() + "/v1",
            "--model",       "stories=" GANTRY_MODELS_DIR "/stories260K.gguf",
            "--request-log", log};
  o.env = {"GANTRY_ADMIN_TOKEN=remote-admin"};
  auto g = ServerProcess::start(o);
  ASSERT_TRUE(g.ok()) << g.error().message;
  http::HttpClient c((*g)->client_options());

  auto models = c.get("/v1/models");
  ASSERT_TRUE(models && models->status == 200);
  EXPECT_NE(models->body.find("\"remote\""), std::string::npos);
  EXPECT_NE(models->body.find("\"stories\""), std::string::npos) << "local and remote mix";

  // Non-streamed: the upstream's own text and usage.
  auto direct = http::HttpClient(a->client_options())
                    .post("/v1/chat/completions",
                          chat_body("Once upon", {{"max_tokens", 6}, {"temperature", 0}}));
  ASSERT_TRUE(direct && direct->status == 200);
  auto r = c.post("/v1/chat/completions", remote_chat("Once upon"));
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  auto ro = parse_object(r->body);
  EXPECT_EQ(ro["model"], "remote");
  EXPECT_EQ(choice_text(ro), choice_text(parse_object(direct->body)));
  EXPECT_EQ(ro["usage"].as_object()["completion_tokens"], 6);
  EXPECT_EQ(ro["usage"].as_object()["prompt_tokens"],
            parse_object(direct->body)["usage"].as_object()["prompt_tokens"]);

  // Streamed without include_usage: no usage chunk reaches the client...
  auto plain = stream_request((*g)->client_options(), "/v1/chat/completions",
                              remote_chat("Once upon", {{"stream", true}}));
  EXPECT_EQ(plain.status, 200);
  EXPECT_TRUE(plain.done);
  EXPECT_FALSE(plain.usage) << "the upstream's usage chunk is stripped";
  EXPECT_EQ(plain.text[0], choice_text(ro));
  // ...and with it, the upstream's real counts.
  auto with = stream_request(
      (*g)->client_options(), "/v1/chat/completions",
      remote_chat("Once upon",
                  {{"stream", true}, {"stream_options", json::object{{"include_usage", true}}}}));
  ASSERT_TRUE(with.usage);
  EXPECT_EQ((*with.usage)["completion_tokens"], 6);

  // Embeddings are forwarded.
  auto e = c.post("/v1/embeddings", R"({"model":"remote","input":["hello","world"]})");
  ASSERT_TRUE(e);
  EXPECT_EQ(e->status, 200) << e->body;

  // Readiness per backend, metrics per backend.
  auto ready = c.get("/readyz");
  ASSERT_TRUE(ready);
  EXPECT_EQ(ready->status, 200) << ready->body;
  EXPECT_NE(ready->body.find(std::to_string(a->port())), std::string::npos) << ready->body;
  auto m = c.get("/metrics");
  ASSERT_TRUE(m);
  EXPECT_NE(
      m->body.find("gantry:backend_requests_total{model_name=\"remote\",backend=\"127.0.0.1:" +
                   std::to_string(a->port()) + "\"}"),
      std::string::npos);

  // The request log names the backend that served each call.
  std::vector<json::object> lines;
  for (int i = 0; i < 100 && lines.size() < 3; ++i, std::this_thread::sleep_for(50ms))
    lines = read_log(log);
  ASSERT_GE(lines.size(), 3u);
  for (const auto &l : lines) {
    if (l.at("model").as_string() != "remote" || l.at("endpoint").as_string() == "/v1/embeddings" ||
        (l.at("cached").is_bool() && l.at("cached").as_bool()))
      continue; // a response-cache hit is served by this instance
    const std::string worker(l.at("worker").as_string());
    EXPECT_TRUE(worker.find(std::to_string(a->port())) != std::string::npos ||
                worker.find(std::to_string(b->port())) != std::string::npos)
        << worker;
    EXPECT_GT(l.at("output_tokens").as_int64(), 0);
  }
}

TEST(RemoteGateway, AmbiguousUpstreamStopsStartUp) {
  if (!NginxProcess::available())
    GTEST_SKIP() << "nginx not installed";
  NginxOptions n;
  n.locations = R"(location = /v1/models { default_type application/json;
      return 200 '{"object":"list","data":[{"id":"a"},{"id":"b"}]}'; })";
  auto ngx = NginxProcess::start(n);
  ASSERT_TRUE(ngx.ok()) << ngx.error().message;
  ServerProcessOptions o;
  o.args = {"--model", "remote=" + (*ngx)->url() + "/v1"};
  o.start_timeout = 10s;
  auto g = ServerProcess::start(o);
  ASSERT_FALSE(g.ok());
  EXPECT_NE(g.error().message.find("exited before listening (exit 1)"), std::string::npos)
      << g.error().message; // the reason ("serves 2 models ...") goes to stderr
}

} // namespace
} // namespace gantry::testing
