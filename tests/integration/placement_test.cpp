// Placement (issue 14 item 6) with real processes. One node hosts the two test models with
// `--models-max 1`: alternating requests load one and unload the other each time, and all
// succeed; the loads and unloads show in /metrics and /v1/models. Then a gateway in front of two
// workers (real redis-server and PostgreSQL), each hosting both models with one loaded: every
// request for a model goes to the worker that has it loaded, and when that worker dies the
// other loads it on demand and serves it.
#include <gtest/gtest.h>

#include <csignal>
#include <cstdio>
#include <map>

#include "integration/api_helpers.h"
#include "integration/server_process.h"
#include "support/postgres_process.h"
#include "support/redis_process.h"

namespace gantry::testing {
namespace {

using namespace std::chrono_literals;

const std::string kStories = std::string(GANTRY_MODELS_DIR) + "/stories260K.gguf";
const std::string kTiny = std::string(GANTRY_TEST_DATA_DIR) + "/llama-2-tiny-random.gguf";
constexpr const char *kToken = "placement-test-internal-token-0123456789";
constexpr const char *kPepper = "placement-test-pepper-0123456789abcdef";

std::string body(const std::string &model) {
  return json::serialize(
      json::object{{"model", model}, {"prompt", "Once upon a time"}, {"max_tokens", 4}});
}

std::string series(const std::string &name, const std::string &model) {
  return name + "{model_name=\"" + model + "\"}";
}

std::string metrics(const ServerProcess &s) {
  http::HttpClient c(s.client_options());
  auto m = c.get("/metrics");
  EXPECT_TRUE(m && m->status == 200);
  return m ? m->body : "";
}

// /v1/models' "status.value" per model id.
std::map<std::string, std::string> statuses(const ServerProcess &s, const http::Headers &h = {}) {
  http::HttpClient c(s.client_options());
  auto r = c.get("/v1/models", h);
  std::map<std::string, std::string> out;
  if (!r || r->status != 200)
    return out;
  const json::object list = parse_object(r->body); // kept: the loop reads into it
  for (const auto &m : list.at("data").as_array()) {
    const auto &o = m.as_object();
    const auto *st = o.if_contains("status");
    out[std::string(o.at("id").as_string())] =
        st ? std::string(st->as_object().at("value").as_string()) : "";
  }
  return out;
}

TEST(Placement, OneNodeHostsTwoModelsWithOneLoadedAtATime) {
  auto s = ServerProcess::start(
      {"--model", "a=" + kStories, "--model", "b=" + kTiny, "--models-max", "1", "--no-cache"},
      "request_log = \"off\"\n");
  ASSERT_TRUE(s) << s.error().message;
  EXPECT_EQ(statuses(**s), (std::map<std::string, std::string>{{"a", "loaded"}, {"b", "unloaded"}}))
      << "the first model is preloaded, the other loads on demand";
  http::HttpClient c((*s)->client_options());
  for (int i = 0; i < 6; ++i) {
    const std::string model = i % 2 == 0 ? "b" : "a";
    auto r = c.post("/v1/completions", body(model));
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 200) << model << ": " << r->body;
    EXPECT_EQ(std::string(parse_object(r->body)["model"].as_string()), model);
  }
  const std::string m = metrics(**s);
  // b a b a b a: each request swaps the two. a: preloaded, then loaded by each of its three
  // requests and unloaded by each of b's; b: loaded three times, unloaded three times.
  EXPECT_EQ(metric_or_zero(m, series("gantry:model_loads_total", "a")), 4) << m;
  EXPECT_EQ(metric_or_zero(m, series("gantry:model_unloads_total", "a")), 3);
  EXPECT_EQ(metric_or_zero(m, series("gantry:model_loads_total", "b")), 3);
  EXPECT_EQ(metric_or_zero(m, series("gantry:model_unloads_total", "b")), 3);
  EXPECT_EQ(metric_or_zero(m, series("gantry:model_loaded", "a")), 1);
  EXPECT_EQ(metric_or_zero(m, series("gantry:model_loaded", "b")), 0);
  EXPECT_EQ(metric_or_zero(m, "gantry:models_max"), 1);
  EXPECT_EQ(metric_or_zero(m, series("gantry:model_load_failures_total", "a")), 0);
  EXPECT_EQ(statuses(**s),
            (std::map<std::string, std::string>{{"a", "loaded"}, {"b", "unloaded"}}));
}

std::string run(const std::string &args, int *rc, const std::string &env) {
  std::string cmd = env + std::string(GANTRY_BINARY) + " " + args + " 2>&1";
  FILE *f = popen(cmd.c_str(), "r");
  std::string out;
  char buf[4096];
  while (f && fgets(buf, sizeof(buf), f))
    out += buf;
  const int status = f ? pclose(f) : -1;
  *rc = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return out;
}

class PlacementRoles : public ::testing::Test {
protected:
  void SetUp() override {
    std::string why;
    pg_ = PostgresProcess::start_new(&why);
    ASSERT_TRUE(pg_) << why;
    db_ = pg_->create_database("placement");
    redis_ = RedisProcess::start_new();
    ASSERT_TRUE(redis_) << "redis-server did not start (scripts/bootstrap.sh installs it)";
    int rc = 0;
    const std::string out = run("keys create --project alpha --json --database-url " + db_, &rc,
                                std::string("GANTRY_KEY_PEPPER=") + kPepper + " ");
    ASSERT_EQ(rc, 0) << out;
    key_ = std::string(parse_object(out.substr(out.find('{')))["key"].as_string());
  }

  std::unique_ptr<ServerProcess> start(const std::string &role, std::vector<std::string> extra) {
    ServerProcessOptions o;
    o.config_toml = "request_log = \"off\"\nworker_heartbeat_ms = 200\nworker_ttl_ms = 1000\n";
    o.args = {"--role", role, "--redis-url", redis_->url(), "--database-url", db_, "--no-cache"};
    o.args.insert(o.args.end(), extra.begin(), extra.end());
    o.env = {std::string("GANTRY_WORKER_TOKEN=") + kToken,
             std::string("GANTRY_KEY_PEPPER=") + kPepper};
    auto s = ServerProcess::start(std::move(o));
    EXPECT_TRUE(s) << (s ? "" : s.error().message);
    return s ? std::move(s).value() : nullptr;
  }

  http::Headers auth() const { return {{"Authorization", "Bearer " + key_}}; }

  // The gateway's attempts for `model` on `worker` (its pool's per-backend counter).
  double attempts(const std::string &gateway_metrics, const std::string &model,
                  const ServerProcess &worker) {
    return metric_or_zero(gateway_metrics,
                          "gantry:backend_requests_total{model_name=\"" + model +
                              "\",backend=\"127.0.0.1:" + std::to_string(worker.port()) + "\"}");
  }

  std::unique_ptr<PostgresProcess> pg_;
  std::unique_ptr<RedisProcess> redis_;
  std::string db_, key_;
};

TEST_F(PlacementRoles, TheGatewayRoutesToTheWorkerThatHasTheModelLoaded) {
  // w1 has a loaded (first in its list) and can load b; w2 the other way round.
  auto w1 =
      start("worker", {"--model", "a=" + kStories, "--model", "b=" + kTiny, "--models-max", "1"});
  auto w2 =
      start("worker", {"--model", "b=" + kTiny, "--model", "a=" + kStories, "--models-max", "1"});
  auto gw = start("gateway", {});
  ASSERT_TRUE(w1 && w2 && gw);
  auto [seen, text] = wait_for_metrics(
      gw->client_options(),
      [](const std::string &t) {
        return metric_or_zero(t, series("gantry:workers", "a")) == 1 &&
               metric_or_zero(t, series("gantry:workers_available", "a")) == 1 &&
               metric_or_zero(t, series("gantry:workers", "b")) == 1 &&
               metric_or_zero(t, series("gantry:workers_available", "b")) == 1;
      },
      20s);
  ASSERT_TRUE(seen) << "each model: one worker with it loaded, one that can load it\n" << text;
  EXPECT_EQ(statuses(*gw, auth()),
            (std::map<std::string, std::string>{{"a", "loaded"}, {"b", "loaded"}}));

  http::HttpClient c(gw->client_options());
  for (int i = 0; i < 20; ++i) {
    const std::string model = i % 2 == 0 ? "a" : "b";
    auto r = c.post("/v1/completions", body(model), auth());
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 200) << r->body;
  }
  std::string m = metrics(*gw);
  EXPECT_EQ(attempts(m, "a", *w1), 10) << m;
  EXPECT_EQ(attempts(m, "a", *w2), 0) << "w2 would have had to load a";
  EXPECT_EQ(attempts(m, "b", *w2), 10);
  EXPECT_EQ(attempts(m, "b", *w1), 0);
  for (auto *w : {w1.get(), w2.get()}) {
    const std::string wm = metrics(*w);
    EXPECT_EQ(metric_or_zero(wm, series("gantry:model_loads_total", "a")) +
                  metric_or_zero(wm, series("gantry:model_loads_total", "b")),
              1)
        << "no worker loaded anything beyond its start-up model\n"
        << wm;
  }

  // The worker with a loaded dies: the other one is the fallback, loads a and serves it.
  w1->signal(SIGKILL);
  ASSERT_TRUE(w1->wait_exit(10s));
  int ok = 0;
  for (int i = 0; i < 10; ++i) {
    auto r = c.post("/v1/completions", body("a"), auth());
    ok += r && r->status == 200;
  }
  // Requests sent before the gateway noticed may have failed on w1 with nothing to retry on
  // while w2 is not yet preferred; the last ones must succeed.
  auto last = c.post("/v1/completions", body("a"), auth());
  ASSERT_TRUE(last);
  EXPECT_EQ(last->status, 200) << last->body;
  EXPECT_GT(ok, 0);
  const std::string wm = metrics(*w2);
  EXPECT_EQ(metric_or_zero(wm, series("gantry:model_loads_total", "a")), 1) << wm;
  EXPECT_EQ(metric_or_zero(wm, series("gantry:model_loaded", "a")), 1);
  auto [moved, after] = wait_for_metrics(
      gw->client_options(),
      [](const std::string &t) { return metric_or_zero(t, series("gantry:workers", "a")) == 1; },
      20s);
  EXPECT_TRUE(moved) << "w2's next heartbeat announces a as loaded\n" << after;
}

} // namespace
} // namespace gantry::testing
