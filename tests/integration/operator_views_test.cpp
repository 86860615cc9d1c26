// The operator's view through the real binary (issue 15): the admin API behind /dashboard refuses
// without the admin token, /status and /status.json are public and say nothing sensitive, and the
// readiness history survives a restart (it is in gantry.db). The browser and Prometheus checks
// are in tests/observability/.
#include <gtest/gtest.h>

#include <chrono>
#include <csignal>
#include <functional>
#include <future>
#include <optional>
#include <thread>

#include "integration/api_helpers.h"
#include "integration/server_process.h"

namespace gantry::testing {
namespace {

using namespace std::chrono_literals;
const std::string kAdmin = "ops-admin-token-0123456789abcdef0123456789";

Result<std::unique_ptr<ServerProcess>> start_with(std::vector<std::string> env,
                                                  std::string data_dir = {}) {
  ServerProcessOptions o;
  o.env = std::move(env);
  o.data_dir = std::move(data_dir);
  return ServerProcess::start(std::move(o));
}

// Polls /status.json until `pred` holds (the sampler probes once a second here).
json::object wait_status(http::HttpClient &c, const std::function<bool(json::object &)> &pred) {
  json::object o;
  for (auto end = std::chrono::steady_clock::now() + 15s; std::chrono::steady_clock::now() < end;
       std::this_thread::sleep_for(100ms)) {
    auto r = c.get("/status.json");
    if (!r || r->status != 200)
      continue;
    o = parse_object(r->body);
    if (pred(o))
      break;
  }
  return o;
}

TEST(OperatorViews, DashboardApiRefusesWithoutTheAdminToken) {
  auto s = start_with({"GANTRY_ADMIN_TOKEN=" + kAdmin});
  ASSERT_TRUE(s) << s.error().message;
  http::HttpClient c((*s)->client_options());
  auto none = c.get("/admin/v1/dashboard");
  ASSERT_TRUE(none);
  EXPECT_EQ(none->status, 401);
  auto wrong = c.get("/admin/v1/dashboard", {{"Authorization", "Bearer " + kAdmin + "x"}});
  ASSERT_TRUE(wrong);
  EXPECT_EQ(wrong->status, 401);
  auto ok = c.get("/admin/v1/dashboard", {{"Authorization", "Bearer " + kAdmin}});
  ASSERT_TRUE(ok);
  ASSERT_EQ(ok->status, 200) << ok->body;
  auto o = parse_object(ok->body);
  for (const char *k : {"points", "models", "jobs", "budgets", "spend", "errors"})
    EXPECT_TRUE(o.contains(k)) << k;
  auto bad = c.get("/admin/v1/dashboard?since=yesterday", {{"Authorization", "Bearer " + kAdmin}});
  ASSERT_TRUE(bad);
  EXPECT_EQ(bad->status, 400);
  // The page itself is a static shell (no data) under a strict CSP.
  auto page = c.get("/dashboard");
  ASSERT_TRUE(page);
  EXPECT_EQ(page->status, 200);
  EXPECT_NE(page->header("Content-Security-Policy").value_or("").find("default-src 'none'"),
            std::string::npos);
}

TEST(OperatorViews, DashboardApiIsDisabledWithoutAConfiguredToken) {
  auto s = start_with({});
  ASSERT_TRUE(s) << s.error().message;
  http::HttpClient c((*s)->client_options());
  auto r = c.get("/admin/v1/dashboard", {{"Authorization", "Bearer anything"}});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 403);
}

TEST(OperatorViews, StatusIsPublicAndItsHistorySurvivesARestart) {
  std::string data_dir;
  int64_t before = 0;
  std::unique_ptr<ServerProcess> keep_dir; // the first server's temporary directory holds the db
  {
    auto s = start_with({"GANTRY_STATUS_PROBE_S=1", "GANTRY_ADMIN_TOKEN=" + kAdmin});
    ASSERT_TRUE(s) << s.error().message;
    http::HttpClient c((*s)->client_options());
    auto o = wait_status(c, [](json::object &o) {
      return o["models"].as_array().size() == 1 &&
             o["models"].as_array()[0].as_object()["samples_30d"].to_number<int64_t>() >= 3;
    });
    ASSERT_EQ(o["status"], "up") << json::serialize(o);
    auto m = o["models"].as_array()[0].as_object();
    EXPECT_EQ(m["name"], "stories260K");
    EXPECT_EQ(m["state"], "up");
    EXPECT_EQ(m["uptime_24h"].to_number<double>(), 1.0);
    before = m["samples_30d"].to_number<int64_t>();
    auto html = c.get("/status");
    ASSERT_TRUE(html);
    EXPECT_EQ(html->status, 200);
    EXPECT_NE(html->body.find("data-model=\"stories260K\" data-state=\"up\""), std::string::npos)
        << html->body;
    EXPECT_NE(html->header("Content-Security-Policy").value_or("").find("default-src 'none'"),
              std::string::npos);
    EXPECT_EQ(html->body.find(kAdmin), std::string::npos);
    (*s)->signal(SIGTERM);
    ASSERT_EQ((*s)->wait_exit(15s).value_or(-999), 0);
    data_dir = (*s)->data_dir();
    keep_dir = std::move(*s);
  }
  auto s = start_with({"GANTRY_STATUS_PROBE_S=1"}, data_dir);
  ASSERT_TRUE(s) << s.error().message;
  http::HttpClient c((*s)->client_options());
  auto o = wait_status(c, [](json::object &o) { return o["models"].as_array().size() == 1; });
  ASSERT_EQ(o["models"].as_array().size(), 1u) << json::serialize(o);
  // At the restarted server's first answer it has taken at most a sample of its own (one a
  // second), so the first run's `before` (at least 3) can only come from the stored history.
  // Not "greater than": under ASan on a loaded machine the first answer came before the new
  // server's first sample, and the count was exactly the first run's.
  EXPECT_GE(o["models"].as_array()[0].as_object()["samples_30d"].to_number<int64_t>(), before)
      << "the samples of the first run are still counted";
}

// Issue 15 item 4: readiness a load balancer can trust. The model's one-token probe fails while
// its queue is full (one sequence generating, one request waiting, max 1 queued): /readyz turns
// 503 within 2 s, naming the model, and back to 200 within 2 s once the work is gone.
TEST(OperatorViews, ReadinessFlipsWhenAModelProbeFailsAndRecovers) {
  auto started = ServerProcess::start(
      // 16k context: A must still be generating when the probe runs; 4,000 tokens of the tiny
      // model can finish within a few scrapes on a fast machine.
      {"--threads", "1", "--ctx", "16384", "--max-seqs", "1", "--max-queued-requests", "1"});
  ASSERT_TRUE(started) << started.error().message;
  ServerProcess &server = **started;
  const auto opts = server.client_options(std::chrono::seconds(120));
  http::HttpClient c(opts);
  ASSERT_EQ(c.get("/readyz")->status, 200);

  // A occupies the only sequence slot; B waits in the only queue slot.
  http::HttpClient ca(opts);
  std::optional<http::SseStream> a;
  {
    auto opened = ca.open_sse(
        http::Method::kPost, "/v1/completions",
        completion_body("Once upon a time",
                        {{"max_tokens", 16000}, {"ignore_eos", true}, {"stream", true}}));
    ASSERT_TRUE(opened) << opened.error().message;
    a.emplace(std::move(opened).value());
  }
  const std::string running = model_series("gantry:num_requests_running");
  const std::string waiting = model_series("gantry:num_requests_waiting");
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

  auto poll_until = [&](int want) {
    const auto t0 = std::chrono::steady_clock::now();
    std::pair<int, std::string> last{0, ""};
    while (std::chrono::steady_clock::now() - t0 < 2s) {
      auto r = c.get("/readyz");
      if (r) {
        last = {r->status, r->body};
        if (r->status == want)
          break;
      }
      std::this_thread::sleep_for(50ms);
    }
    return last;
  };
  auto [down, down_body] = poll_until(503);
  ASSERT_EQ(down, 503) << down_body;
  auto o = parse_object(down_body);
  bool model_failed = false;
  for (const auto &chk : o["checks"].as_array()) {
    if (chk.as_object().at("name") == "model:stories260K")
      model_failed = chk.as_object().at("status") == "failed";
  }
  EXPECT_TRUE(model_failed) << down_body;
  EXPECT_EQ(c.get("/healthz")->status, 200) << "liveness is unaffected";

  a.reset(); // the client goes away: A is cancelled, B runs and finishes
  ASSERT_TRUE(b.get());
  auto [up, up_body] = poll_until(200);
  EXPECT_EQ(up, 200) << up_body;
}

} // namespace
} // namespace gantry::testing
