// Issue 6's contract: after a scripted mix of traffic (non-streamed, streamed, rejected, failed),
// the metrics hold exactly the counts the script implies and the request log has exactly one
// complete JSON line per inference call.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <thread>

#include "integration/api_helpers.h"
#include "integration/server_process.h"
#include "support/store_under_test.h"

namespace gantry::testing {
namespace {

using namespace std::chrono_literals;

std::vector<json::object> read_log(const std::string &path) {
  std::vector<json::object> out;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) {
    boost::system::error_code ec;
    auto v = json::parse(line, ec);
    EXPECT_FALSE(ec) << "not JSON: " << line;
    if (!ec && v.is_object())
      out.push_back(v.as_object());
  }
  return out;
}

TEST(Observability, MetricsAndLogMatchAScriptedMixOfTraffic) {
  char tmpl[] = "/tmp/gantry-obs-XXXXXX";
  const std::string dir = mkdtemp(tmpl);
  const std::string log = dir + "/requests.log";
  ServerProcessOptions o;
  o.args = {"--request-log", log};
  o.env = {"GANTRY_ADMIN_TOKEN=obs-admin-token-0123456789abcdef0123"};
  auto started = ServerProcess::start(std::move(o));
  ASSERT_TRUE(started) << started.error().message;
  auto &s = *started;
  http::HttpClient c(s->client_options());

  // 3 non-streamed OK (2 completions, 1 chat), 2 streamed OK, 1 bad request (400),
  // 1 unknown model (404), 1 context overflow (400) = 8 inference calls.
  for (int i = 0; i < 2; ++i) {
    auto r = c.post("/v1/completions", completion_body("Once", {{"max_tokens", 4}}));
    ASSERT_EQ(r->status, 200);
  }
  ASSERT_EQ(c.post("/v1/chat/completions", chat_body("Hi", {{"max_tokens", 3}}))->status, 200);
  for (int i = 0; i < 2; ++i) {
    auto sr = stream_request(s->client_options(), "/v1/chat/completions",
                             chat_body("Hi", {{"max_tokens", 5}, {"stream", true}}));
    ASSERT_TRUE(sr.done);
  }
  ASSERT_EQ(c.post("/v1/completions", R"({"model":"stories260K","prompt":1.5})")->status, 400);
  ASSERT_EQ(c.post("/v1/completions", R"({"model":"nope","prompt":"x"})")->status, 404);
  ASSERT_EQ(c.post("/v1/completions", completion_body("Once", {{"max_tokens", 100000}}))->status,
            400);
  // Then a key with RPM 1: one OK, one rejected (429) = 2 more calls, in project "obs".
  auto k = c.post("/admin/v1/keys", R"({"project":"obs","rpm":1})",
                  {{"Authorization", "Bearer obs-admin-token-0123456789abcdef0123"}});
  ASSERT_EQ(k->status, 201);
  const std::string key(parse_object(k->body)["key"].as_string());
  http::Headers auth{{"Authorization", "Bearer " + key}};
  ASSERT_EQ(c.post("/v1/completions", completion_body("Once", {{"max_tokens", 2}}), auth)->status,
            200);
  ASSERT_EQ(c.post("/v1/completions", completion_body("Once", {{"max_tokens", 2}}), auth)->status,
            429);
  // And one without the now-required key = 401. Total: 11 inference calls.
  ASSERT_EQ(c.post("/v1/completions", completion_body("Once", {{"max_tokens", 2}}))->status, 401);

  // The engine publishes its token counters right after the step that answered the last call.
  auto [settled, t] = wait_for_metrics(
      s->client_options(),
      [](const std::string &text) {
        return metric_or_zero(text, "gantry:generation_tokens_total{model_name=\"stories260K\"}") ==
               23;
      },
      5s);
  EXPECT_TRUE(settled);
  auto v = [&](const std::string &series) { return metric_or_zero(t, series); };
  const std::string sm = "model_name=\"stories260K\"";
  EXPECT_EQ(v("gantry:requests_total{" + sm +
              ",endpoint=\"/v1/completions\",status=\"200\",project=\"\"}"),
            2);
  EXPECT_EQ(v("gantry:requests_total{" + sm +
              ",endpoint=\"/v1/chat/completions\",status=\"200\",project=\"\"}"),
            3);
  EXPECT_EQ(v("gantry:requests_total{" + sm +
              ",endpoint=\"/v1/completions\",status=\"200\",project=\"obs\"}"),
            1);
  EXPECT_EQ(v("gantry:requests_total{" + sm +
              ",endpoint=\"/v1/completions\",status=\"429\",project=\"obs\"}"),
            1);
  EXPECT_EQ(v("gantry:requests_total{" + sm +
              ",endpoint=\"/v1/completions\",status=\"400\",project=\"\"}"),
            1); // the context overflow (model known)
  EXPECT_EQ(v("gantry:requests_total{model_name=\"none\",endpoint=\"/v1/completions\","
              "status=\"400\",project=\"\"}"),
            1); // the bad prompt (model not resolved yet)
  EXPECT_EQ(v("gantry:requests_total{model_name=\"none\",endpoint=\"/v1/completions\","
              "status=\"404\",project=\"\"}"),
            1);
  EXPECT_EQ(v("gantry:requests_total{model_name=\"none\",endpoint=\"/v1/completions\","
              "status=\"401\",project=\"\"}"),
            1);
  EXPECT_EQ(v("gantry:time_to_first_token_seconds_count{" + sm + "}"), 6);
  EXPECT_EQ(v("gantry:request_success_total{" + sm + ",finished_reason=\"length\"}"), 6);
  EXPECT_EQ(
      v("gantry:e2e_request_latency_seconds_count{" + sm + ",endpoint=\"/v1/chat/completions\"}"),
      3);
  EXPECT_EQ(v("gantry:requests_rejected_total{reason=\"rate_limit\"}"), 1);
  EXPECT_EQ(v("gantry:requests_rejected_total{reason=\"unauthorized\"}"), 1);
  // 4 + 4 + 3 + 5 + 5 + 2 tokens; each choice's first token has no gap before it.
  EXPECT_EQ(v("gantry:generation_tokens_total{" + sm + "}"), 23);
  EXPECT_EQ(v("gantry:inter_token_latency_seconds_count{" + sm + "}"), 23 - 6);
  EXPECT_EQ(t.find(key.substr(4)), std::string::npos);

  // The log is written off the request path: wait for all 11 lines.
  std::vector<json::object> lines;
  for (auto deadline = std::chrono::steady_clock::now() + 5s;
       std::chrono::steady_clock::now() < deadline; std::this_thread::sleep_for(20ms)) {
    lines = read_log(log);
    if (lines.size() >= 11)
      break;
  }
  std::this_thread::sleep_for(200ms);
  lines = read_log(log);
  ASSERT_EQ(lines.size(), 11u);
  std::set<std::string> ids;
  std::map<int64_t, int> by_status;
  for (const auto &l : lines) {
    for (const char *f : {"timestamp", "request_id", "project", "key_id", "model", "endpoint",
                          "input_tokens", "output_tokens", "ttft_ms", "latency_ms", "queue_ms",
                          "worker", "cost_usd", "cached", "status", "finish_reason", "error"}) {
      EXPECT_TRUE(l.contains(f)) << f << " missing in " << json::serialize(l);
    }
    ids.insert(std::string(l.at("request_id").as_string()));
    ++by_status[l.at("status").as_int64()];
    EXPECT_EQ(json::serialize(l).find(key.substr(4)), std::string::npos) << "key leaked";
    EXPECT_EQ(json::serialize(l).find("Once"), std::string::npos) << "prompt text logged";
  }
  EXPECT_EQ(ids.size(), 11u);
  EXPECT_EQ(by_status[200], 6);
  EXPECT_EQ(by_status[400], 2);
  EXPECT_EQ(by_status[404], 1);
  EXPECT_EQ(by_status[429], 1);
  EXPECT_EQ(by_status[401], 1);
  std::filesystem::remove_all(dir);
}

} // namespace
} // namespace gantry::testing

namespace gantry::testing {
namespace {

TEST(Observability, ReadinessFailsWithinTwoSecondsWhenTheStoreGoesAway) {
  auto started = ServerProcess::start(std::vector<std::string>{});
  ASSERT_TRUE(started) << started.error().message;
  auto &s = *started;
  http::HttpClient c(s->client_options());
  auto ok = c.get("/readyz");
  ASSERT_TRUE(ok);
  ASSERT_EQ(ok->status, 200) << ok->body;
  // The database file disappears under the running server (a wiped volume); on PostgreSQL the
  // database is dropped.
  if (postgres_selected())
    ASSERT_TRUE(TestDatabases::drop(s->database_url())) << s->database_url();
  else
    std::filesystem::remove(s->data_dir() + "/gantry.db");
  const auto t0 = std::chrono::steady_clock::now();
  int status = 200;
  std::string body;
  while (std::chrono::steady_clock::now() - t0 < 2s) {
    auto r = c.get("/readyz");
    ASSERT_TRUE(r);
    status = r->status;
    body = r->body;
    if (status == 503)
      break;
    std::this_thread::sleep_for(50ms);
  }
  ASSERT_EQ(status, 503);
  auto o = parse_object(body);
  bool store_failed = false;
  for (const auto &chk : o["checks"].as_array()) {
    if (chk.as_object().at("name") == "store") {
      store_failed = chk.as_object().at("status") == "failed";
      EXPECT_TRUE(chk.as_object().contains("error"));
      EXPECT_TRUE(chk.as_object().contains("latency_ms"));
    }
  }
  EXPECT_TRUE(store_failed) << body;
  // Liveness is unaffected: the process is fine, only a dependency is not.
  EXPECT_EQ(c.get("/healthz")->status, 200);
}

} // namespace
} // namespace gantry::testing

namespace gantry::testing {
namespace {

TEST(Observability, AdminPortServesHealthMetricsAndAdminButNotTheApi) {
  ServerProcessOptions o;
  o.args = {"--admin-port", "0"};
  o.env = {"GANTRY_ADMIN_TOKEN=admin-port-token-0123456789abcdef012"};
  auto started = ServerProcess::start(std::move(o));
  ASSERT_TRUE(started) << started.error().message;
  auto &s = *started;
  // "  admin port: http://127.0.0.1:PORT (...)" follows the listening line.
  uint16_t admin = 0;
  for (auto deadline = std::chrono::steady_clock::now() + 5s;
       admin == 0 && std::chrono::steady_clock::now() < deadline;
       std::this_thread::sleep_for(20ms)) {
    const std::string out = s->output();
    const auto at = out.find("admin port: http://127.0.0.1:");
    if (at != std::string::npos) {
      admin = static_cast<uint16_t>(std::stoi(out.substr(at + 29)));
    }
  }
  ASSERT_NE(admin, 0);
  http::ClientOptions co = s->client_options();
  co.port = admin;
  http::HttpClient a(co);
  EXPECT_EQ(a.get("/healthz")->status, 200);
  EXPECT_EQ(a.get("/readyz")->status, 200);
  auto m = a.get("/metrics");
  ASSERT_TRUE(m);
  EXPECT_NE(m->body.find("gantry:model_loaded"), std::string::npos);
  EXPECT_EQ(
      a.get("/admin/v1/keys", {{"Authorization", "Bearer admin-port-token-0123456789abcdef012"}})
          ->status,
      200);
  EXPECT_EQ(a.get("/v1/models")->status, 404); // the API stays on the main port
  http::HttpClient c(s->client_options());
  EXPECT_EQ(c.get("/v1/models")->status, 200);
  // Audit M1: with an admin port, the operator surface is not on the public port at all.
  const http::Headers admin_auth{{"Authorization", "Bearer admin-port-token-0123456789abcdef012"}};
  EXPECT_EQ(c.get("/admin/v1/keys", admin_auth)->status, 404);
  EXPECT_EQ(c.get("/admin/v1/errors", admin_auth)->status, 404);
  EXPECT_EQ(c.post("/admin/v1/projects/p/webhook_secrets", "", admin_auth)->status, 404);
  EXPECT_EQ(c.get("/metrics")->status, 404);
  EXPECT_EQ(c.get("/healthz")->status, 200); // probes stay on both
  EXPECT_EQ(a.get("/admin/v1/errors", admin_auth)->status, 200);
  EXPECT_EQ(a.post("/admin/v1/projects/p/webhook_secrets", "", admin_auth)->status, 201);
}

} // namespace
} // namespace gantry::testing
