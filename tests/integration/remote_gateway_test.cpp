// `gantry serve` with remote models, end to end: a Gantry in front of other `gantry serve`
// processes (and nginx), spoken to over HTTP like any client. Keys, usage, the request log,
// /readyz and /metrics must work for remote models as for local ones.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include <unistd.h>

#include "integration/api_helpers.h"
#include "integration/nginx_process.h"
#include "integration/server_process.h"
#include "support/loopback_port.h"

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
  o.env = {"GANTRY_ADMIN_TOKEN=remote-admin-token-0123456789abcdef0123"};
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

// A streamed call whose backends all fail before sending anything is answered with the
// failure's HTTP status and an OpenAI-shaped body, as the same call unstreamed is: clients (and
// the official SDKs' retries on 429/5xx) see a 503, not a 200 stream carrying an error event.
TEST(RemoteGateway, AStreamThatFailsBeforeItsFirstByteAnswersItsHttpStatus) {
  auto a = upstream();
  ASSERT_TRUE(a);
  const std::string log = ::testing::TempDir() + "remote-failed-stream.log";
  std::filesystem::remove(log);
  ServerProcessOptions o;
  o.args = {"--threads",     "1", "--model", "remote=" + a->base_url() + "/v1", "--no-cache",
            "--request-log", log}; // the second call must reach the backend
  auto g = ServerProcess::start(o);
  ASSERT_TRUE(g.ok()) << g.error().message;

  // While the upstream answers, the stream is what it was: the role chunk, then the text.
  auto s = stream_request((*g)->client_options(), "/v1/chat/completions",
                          remote_chat("Once upon", {{"stream", true}}));
  EXPECT_EQ(s.status, 200);
  EXPECT_TRUE(s.done) << s.transport_error;
  EXPECT_FALSE(s.text[0].empty());
  ASSERT_FALSE(s.events.empty());
  EXPECT_NE(s.events[0].find("\"role\":\"assistant\""), std::string::npos) << s.events[0];

  a.reset(); // SIGKILL: nothing listens on its port any more
  http::HttpClient c((*g)->client_options());
  auto r = c.post("/v1/chat/completions", remote_chat("Once upon", {{"stream", true}}));
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->status, 503) << r->body;
  EXPECT_NE(r->body.find("\"error\""), std::string::npos) << r->body;
  bool json_body = false;
  for (const auto &h : r->headers)
    json_body = json_body || (h.name == "Content-Type" && h.value == "application/json");
  EXPECT_TRUE(json_body) << "an error body, not an event stream";

  // The Responses and Messages streams alike, each in its API's error shape (Anthropic's
  // overloaded_error is its 529).
  auto responses = c.post(
      "/v1/responses",
      json::serialize(json::object{{"model", "remote"}, {"input", "Once upon"}, {"stream", true}}));
  ASSERT_TRUE(responses) << responses.error().message;
  EXPECT_EQ(responses->status, 503) << responses->body;
  EXPECT_NE(responses->body.find("\"unavailable\""), std::string::npos) << responses->body;
  auto messages = c.post(
      "/v1/messages",
      json::serialize(json::object{
          {"model", "remote"},
          {"max_tokens", 4},
          {"stream", true},
          {"messages", json::array{json::object{{"role", "user"}, {"content", "Once upon"}}}}}));
  ASSERT_TRUE(messages) << messages.error().message;
  EXPECT_EQ(messages->status, 529) << messages->body;
  EXPECT_NE(messages->body.find("\"overloaded_error\""), std::string::npos) << messages->body;

  // The request log records the status each client saw.
  std::vector<json::object> lines;
  for (int i = 0; i < 100 && lines.size() < 4; ++i, std::this_thread::sleep_for(50ms))
    lines = read_log(log);
  ASSERT_EQ(lines.size(), 4u);
  const int64_t seen[] = {200, 503, 503, 529};
  for (size_t i = 0; i < lines.size(); ++i)
    EXPECT_EQ(lines[i].at("status").as_int64(), seen[i]) << json::serialize(lines[i]);
}

// logprobs, logit_bias and several prompts pass through unchanged, and the upstream's logprobs
// come back in both shapes, streamed and not.
TEST(RemoteGateway, LogprobsAndSeveralPromptsPassThrough) {
  auto a = upstream();
  ASSERT_TRUE(a);
  ServerProcessOptions o;
  o.args = {"--threads", "1", "--model", "remote=" + a->base_url() + "/v1"};
  auto g = ServerProcess::start(o);
  ASSERT_TRUE(g.ok()) << g.error().message;
  http::HttpClient direct(a->client_options()), gw((*g)->client_options());

  const json::object chat_extra{
      {"logprobs", true}, {"top_logprobs", 2}, {"logit_bias", {{"300", 5}}}};
  auto d =
      direct.post("/v1/chat/completions", chat_body("Once upon", {{"max_tokens", 6},
                                                                  {"temperature", 0},
                                                                  {"logprobs", true},
                                                                  {"top_logprobs", 2},
                                                                  {"logit_bias", {{"300", 5}}}}));
  auto r = gw.post("/v1/chat/completions", remote_chat("Once upon", chat_extra));
  ASSERT_TRUE(d && r);
  ASSERT_EQ(r->status, 200) << r->body;
  const auto want = parse_object(d->body).at("choices").at(0).at("logprobs");
  const auto got = parse_object(r->body).at("choices").at(0).at("logprobs");
  ASSERT_EQ(want.at("content").as_array().size(), 6u);
  EXPECT_EQ(got, want) << "the upstream's logprobs, unchanged";

  json::object streamed = chat_extra;
  streamed["stream"] = true;
  auto s = stream_request((*g)->client_options(), "/v1/chat/completions",
                          remote_chat("Once upon", streamed));
  json::array content;
  for (const auto &e : s.events) {
    if (e == "[DONE]")
      continue;
    const json::value chunk = json::parse(e); // outlives the loops over its parts
    for (const auto &c : chunk.at("choices").as_array()) {
      if (c.at("logprobs").is_null())
        continue;
      for (const auto &t : c.at("logprobs").at("content").as_array())
        content.push_back(t);
    }
  }
  EXPECT_EQ(content, want.at("content").as_array());

  json::object comp{{"model", "remote"},
                    {"prompt", json::array{"Once upon", "Lily"}},
                    {"n", 2},
                    {"max_tokens", 4},
                    {"temperature", 0},
                    {"logprobs", 1}};
  auto c = gw.post("/v1/completions", json::serialize(comp));
  ASSERT_TRUE(c);
  ASSERT_EQ(c->status, 200) << c->body;
  const auto co = parse_object(c->body);
  const auto &choices = co.at("choices").as_array();
  ASSERT_EQ(choices.size(), 4u);
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(choices[i].at("index"), static_cast<int64_t>(i));
    EXPECT_EQ(choices[i].at("logprobs").at("tokens").as_array().size(), 4u) << i;
  }
  EXPECT_EQ(choices[0].at("text"), choices[1].at("text"));
  EXPECT_NE(choices[0].at("text"), choices[2].at("text"));
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

// A gateway in front of one upstream with prices, keys on (the admin token is 32+ characters).
constexpr const char *kRemoteAdmin = "remote-gateway-admin-token-0123456789";

std::unique_ptr<ServerProcess> priced_gateway(const ServerProcess &up) {
  ServerProcessOptions o;
  o.config_toml = "request_log = \"off\"\n[jobs]\nworkers = 2\n[[models]]\nname = \"remote\"\n"
                  "price_input_per_mtok = 1000\nprice_output_per_mtok = 2000\n"
                  "backends = [{ url = \"" +
                  up.base_url() + "/v1\" }]\n";
  o.args = {"--no-cache"};
  o.env = {std::string("GANTRY_ADMIN_TOKEN=") + kRemoteAdmin};
  auto g = ServerProcess::start(o);
  EXPECT_TRUE(g.ok()) << g.error().message;
  return g ? std::move(*g) : nullptr;
}

http::Headers remote_admin() { return {{"Authorization", std::string("Bearer ") + kRemoteAdmin}}; }

std::string new_key(http::HttpClient &c, const std::string &project) {
  auto r =
      c.post("/admin/v1/keys", json::serialize(json::object{{"project", project}}), remote_admin());
  EXPECT_TRUE(r && r->status == 201) << (r ? r->body : r.error().message);
  return r && r->status == 201 ? std::string(parse_object(r->body)["key"].as_string()) : "";
}

// Issue 12, "how it is judged": a remote model's calls appear in /admin/v1/usage and the ledger
// with the backend's real token counts and the model's prices; the streamed usage carries it.
TEST(RemoteGateway, RemoteCallsAreBilledOnTheBackendsRealUsage) {
  auto up = upstream();
  ASSERT_TRUE(up);
  auto g = priced_gateway(*up);
  ASSERT_TRUE(g);
  http::HttpClient c(g->client_options());
  const std::string key = new_key(c, "acme");
  ASSERT_FALSE(key.empty());
  const http::Headers auth{{"Authorization", "Bearer " + key}};

  // The backend's usage decides: prompt tokens it served from its prefix cache are billed at
  // nothing (ControlPlane prices input_tokens - cached_tokens), the rest at the model's prices.
  auto cost_of = [](json::object usage) {
    int64_t cached = 0;
    if (auto *d = usage.if_contains("prompt_tokens_details"); d && d->is_object())
      if (auto *c = d->as_object().if_contains("cached_tokens"); c && c->is_int64())
        cached = c->as_int64();
    return (usage["prompt_tokens"].as_int64() - cached) * 1000e-6 +
           usage["completion_tokens"].as_int64() * 2000e-6;
  };
  auto r = c.post("/v1/chat/completions", remote_chat("Once upon"), auth);
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  auto usage1 = parse_object(r->body)["usage"].as_object();
  const int64_t prompt = usage1["prompt_tokens"].as_int64();
  EXPECT_GT(prompt, 0);
  EXPECT_EQ(usage1["completion_tokens"].as_int64(), 6);
  const double first_cost = cost_of(usage1);
  EXPECT_GT(first_cost, 6 * 2000e-6) << "a cold upstream bills the prompt too";
  auto cost = r->header("x-gantry-cost-usd");
  ASSERT_TRUE(cost);
  EXPECT_NEAR(std::stod(std::string(*cost)), first_cost, 1e-9);

  auto streamed = stream_request(
      g->client_options(), "/v1/chat/completions",
      remote_chat("Once upon",
                  {{"stream", true}, {"stream_options", json::object{{"include_usage", true}}}}),
      auth);
  ASSERT_TRUE(streamed.usage) << streamed.transport_error;
  EXPECT_EQ((*streamed.usage)["prompt_tokens"].as_int64(), prompt);
  const double second_cost = cost_of(*streamed.usage);
  EXPECT_NEAR((*streamed.usage)["cost_usd"].to_number<double>(), second_cost, 1e-9);

  auto u = c.get("/admin/v1/usage?group_by=model", remote_admin());
  ASSERT_TRUE(u && u->status == 200) << (u ? u->body : u.error().message);
  bool found = false;
  auto report = parse_object(u->body);
  for (const auto &row : report["data"].as_array()) {
    auto o = row.as_object();
    if (o["model"] != "remote")
      continue;
    found = true;
    EXPECT_EQ(o["requests"].as_int64(), 2);
    EXPECT_EQ(o["input_tokens"].as_int64(), 2 * prompt);
    EXPECT_EQ(o["output_tokens"].as_int64(), 12);
    EXPECT_NEAR(o["cost_usd"].to_number<double>(), first_cost + second_cost, 1e-9);
  }
  EXPECT_TRUE(found) << u->body;
}

// Jobs and batches run against a remote model unchanged (issue 12, item 3).
TEST(RemoteGateway, JobsAndBatchesRunOnARemoteModel) {
  auto up = upstream();
  ASSERT_TRUE(up);
  auto g = priced_gateway(*up);
  ASSERT_TRUE(g);
  http::HttpClient c(g->client_options());
  const std::string key = new_key(c, "acme");
  ASSERT_FALSE(key.empty());
  const http::Headers auth{{"Authorization", "Bearer " + key}};
  auto direct = http::HttpClient(up->client_options())
                    .post("/v1/chat/completions",
                          chat_body("Once upon", {{"max_tokens", 6}, {"temperature", 0}}));
  ASSERT_TRUE(direct && direct->status == 200);
  const std::string want = choice_text(parse_object(direct->body));

  auto j = c.post("/v1/jobs",
                  json::serialize(json::object{{"endpoint", "/v1/chat/completions"},
                                               {"body", json::parse(remote_chat("Once upon"))}}),
                  auth);
  ASSERT_TRUE(j && j->status == 202) << (j ? j->body : j.error().message);
  const std::string id(parse_object(j->body)["id"].as_string());
  json::object job;
  for (auto deadline = std::chrono::steady_clock::now() + 60s;
       std::chrono::steady_clock::now() < deadline; std::this_thread::sleep_for(50ms)) {
    auto r = c.get("/v1/jobs/" + id, auth);
    ASSERT_TRUE(r && r->status == 200);
    job = parse_object(r->body);
    if (job["status"] != "queued" && job["status"] != "running")
      break;
  }
  ASSERT_EQ(job["status"], "succeeded") << json::serialize(job);
  EXPECT_NE(json::serialize(job).find(want.substr(0, 8)), std::string::npos)
      << "the job's result is the backend's answer: " << json::serialize(job);

  // A batch of two lines through the Batch API.
  std::string lines;
  for (int i = 0; i < 2; ++i)
    lines += json::serialize(json::object{{"custom_id", "line-" + std::to_string(i)},
                                          {"method", "POST"},
                                          {"url", "/v1/chat/completions"},
                                          {"body", json::parse(remote_chat("Once upon"))}}) +
             "\n";
  const std::string boundary = "----remote-batch";
  std::string body = "--" + boundary +
                     "\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n--" +
                     boundary +
                     "\r\nContent-Disposition: form-data; name=\"file\"; filename=\"in.jsonl\"\r\n"
                     "Content-Type: application/jsonl\r\n\r\n" +
                     lines + "\r\n--" + boundary + "--\r\n";
  http::Headers fh = auth;
  fh.push_back({"Content-Type", "multipart/form-data; boundary=" + boundary});
  auto f = c.post("/v1/files", body, fh);
  ASSERT_TRUE(f && f->status == 200) << (f ? f->body : f.error().message);
  auto b = c.post("/v1/batches",
                  json::serialize(json::object{{"input_file_id", parse_object(f->body)["id"]},
                                               {"endpoint", "/v1/chat/completions"},
                                               {"completion_window", "24h"}}),
                  auth);
  ASSERT_TRUE(b && b->status == 200) << (b ? b->body : b.error().message);
  const std::string batch_id(parse_object(b->body)["id"].as_string());
  json::object batch;
  for (auto deadline = std::chrono::steady_clock::now() + 60s;
       std::chrono::steady_clock::now() < deadline; std::this_thread::sleep_for(50ms)) {
    auto r = c.get("/v1/batches/" + batch_id, auth);
    ASSERT_TRUE(r && r->status == 200);
    batch = parse_object(r->body);
    if (batch["status"] == "completed" || batch["status"] == "failed")
      break;
  }
  ASSERT_EQ(batch["status"], "completed") << json::serialize(batch);
  auto out =
      c.get("/v1/files/" + std::string(batch["output_file_id"].as_string()) + "/content", auth);
  ASSERT_TRUE(out && out->status == 200);
  EXPECT_EQ(std::count(out->body.begin(), out->body.end(), '\n'), 2) << out->body;
  EXPECT_NE(out->body.find(want.substr(0, 8)), std::string::npos) << out->body;

  // Three calls reached the ledger at the remote model's prices.
  auto u = c.get("/admin/v1/usage?group_by=model", remote_admin());
  ASSERT_TRUE(u && u->status == 200);
  EXPECT_NE(u->body.find("\"model\":\"remote\",\"requests\":3"), std::string::npos) << u->body;
}

// A client that goes away mid-stream cancels the upstream request at once (issue 12, item 6):
// the upstream Gantry counts a cancelled sequence and stops generating.
TEST(RemoteGateway, AClientDisconnectCancelsTheUpstreamRequest) {
  // A context long enough for a stream that outlives the test (16,000 tokens of the tiny model
  // take several seconds even in a Release build; 3,000 once finished first under load), so
  // only a cancellation can end it early.
  auto started = ServerProcess::start({"--threads", "1", "--ctx", "16384"});
  ASSERT_TRUE(started) << started.error().message;
  auto up = std::move(*started);
  auto g = priced_gateway(*up);
  ASSERT_TRUE(g);
  http::HttpClient c(g->client_options());
  const std::string key = new_key(c, "acme");
  ASSERT_FALSE(key.empty());
  const std::string cancelled = "gantry:request_cancelled_total";
  auto before = http::HttpClient(up->client_options()).get("/metrics");
  ASSERT_TRUE(before);
  http::HttpClient sc(g->client_options());
  auto s = sc.open_sse(http::Method::kPost, "/v1/chat/completions",
                       remote_chat("Once upon a time",
                                   {{"stream", true}, {"max_tokens", 16000}, {"ignore_eos", true}}),
                       {{"Authorization", "Bearer " + key}});
  ASSERT_TRUE(s) << s.error().message;
  auto first = read_stream(*s, 2);
  ASSERT_EQ(first.events.size(), 2u);
  ASSERT_NE(first.events[1].find("\"delta\""), std::string::npos) << first.events[1];
  s->close();
  auto sum = [&](const std::string &m) {
    double total = 0;
    for (size_t at = m.find(cancelled + "{"); at != std::string::npos;
         at = m.find(cancelled + "{", at + 1)) {
      const size_t sp = m.find("} ", at);
      total += std::stod(m.substr(sp + 2, m.find('\n', sp) - sp - 2));
    }
    return total;
  };
  const double was = sum(before->body);
  auto [ok, text] = wait_for_metrics(
      up->client_options(), [&](const std::string &m) { return sum(m) >= was + 1; }, 5s);
  EXPECT_TRUE(ok) << "the upstream never saw the cancellation:\n" << text;
}

// Issue 12, item 1/3: a fallback that answers is billed at its own prices (what its backend
// charges), under the model the client asked for; the request log names the model that served.
TEST(RemoteGateway, AFallbackThatAnswersIsPricedAtItsOwnPrices) {
  auto up = upstream();
  ASSERT_TRUE(up);
  const std::string log =
      ::testing::TempDir() + "fallback_priced_" + std::to_string(::getpid()) + ".jsonl";
  std::filesystem::remove(log);
  const DeadLoopbackPort dead_port;
  const std::string dead = "http://127.0.0.1:" + std::to_string(dead_port.port()) + "/v1";
  ServerProcessOptions o;
  o.config_toml = "request_log = \"" + log +
                  "\"\n"
                  "[[models]]\nname = \"primary\"\n"
                  "price_input_per_mtok = 1000\nprice_output_per_mtok = 2000\n"
                  "fallbacks = [\"backup\"]\n"
                  "backends = [{ url = \"" +
                  dead +
                  "\", model = \"gone\" }]\n"
                  "[[models]]\nname = \"backup\"\n"
                  "price_input_per_mtok = 10\nprice_output_per_mtok = 20\n"
                  "backends = [{ url = \"" +
                  up->base_url() + "/v1\" }]\n";
  o.args = {"--no-cache"};
  auto g = ServerProcess::start(o);
  ASSERT_TRUE(g.ok()) << g.error().message;
  http::HttpClient c((*g)->client_options());
  json::object body{{"model", "primary"},
                    {"messages", json::array{json::object{{"role", "user"}, {"content", "Once"}}}},
                    {"max_tokens", 6},
                    {"temperature", 0}};
  auto r = c.post("/v1/chat/completions", json::serialize(body));
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  auto usage = parse_object(r->body)["usage"].as_object();
  int64_t cached = 0;
  if (auto *d = usage.if_contains("prompt_tokens_details"); d && d->is_object())
    if (auto *ct = d->as_object().if_contains("cached_tokens"); ct && ct->is_int64())
      cached = ct->as_int64();
  const double backup_cost = (usage["prompt_tokens"].as_int64() - cached) * 10e-6 +
                             usage["completion_tokens"].as_int64() * 20e-6;
  auto cost = r->header("x-gantry-cost-usd");
  ASSERT_TRUE(cost);
  EXPECT_NEAR(std::stod(std::string(*cost)), backup_cost, 1e-12)
      << "priced at the fallback's prices, not the primary's (1000/2000 per Mtok)";
  std::vector<json::object> lines;
  for (int i = 0; i < 100 && lines.empty(); ++i, std::this_thread::sleep_for(50ms))
    lines = read_log(log);
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0].at("model").as_string(), "primary");
  EXPECT_EQ(lines[0].at("served_model").as_string(), "backup");
  EXPECT_NE(lines[0].at("worker").as_string().find(std::to_string(up->port())), std::string::npos);
  std::filesystem::remove(log);
}

} // namespace
} // namespace gantry::testing
