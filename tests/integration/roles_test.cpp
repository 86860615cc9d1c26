// Roles (issue 13): one gateway and several workers on a real redis-server (the worker registry)
// and a real PostgreSQL (keys, the ledger, the job queue). The gateway loads no engine: it learns
// from the registry which workers have stories260K loaded and routes to them — traffic spreads
// over the workers, a third worker takes its share without any change on the gateway, a worker
// killed with SIGKILL drops out within its TTL while requests keep succeeding (the pool retries
// what had not started streaming), and jobs accepted by the gateway are run by workers once.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <map>
#include <set>
#include <thread>

#include "integration/api_helpers.h"
#include "integration/server_process.h"
#include "store/postgres/pg_db.h"
#include "support/postgres_process.h"
#include "support/redis_process.h"

namespace gantry::testing {
namespace {

using namespace std::chrono_literals;

constexpr const char *kToken = "roles-test-internal-token-0123456789";
// Keys are HMAC(pepper, secret): every node and the CLI share one pepper.
constexpr const char *kPepper = "roles-test-pepper-0123456789abcdef";
constexpr const char *kAdminToken = "roles-test-admin-token-0123456789abcdef";
// Short heartbeats keep the test quick: out of routing within ~1 s of a worker's death.
constexpr const char *kToml = "request_log = \"off\"\nworker_heartbeat_ms = 200\n"
                              "worker_ttl_ms = 1000\n[jobs]\nvisibility_s = 5\n";

std::string run(const std::string &args, int *rc, const std::string &env = {}) {
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

class Roles : public ::testing::Test {
protected:
  void SetUp() override {
    std::string why;
    pg_ = PostgresProcess::start_new(&why);
    ASSERT_TRUE(pg_) << why;
    db_ = pg_->create_database("roles");
    redis_ = RedisProcess::start_new();
    ASSERT_TRUE(redis_) << "redis-server did not start (scripts/bootstrap.sh installs it)";
    int rc = 0;
    const std::string out = run("keys create --project alpha --json --database-url " + db_, &rc,
                                std::string("GANTRY_KEY_PEPPER=") + kPepper + " ");
    ASSERT_EQ(rc, 0) << out;
    auto created = parse_object(out.substr(out.find('{')));
    key_ = std::string(created["key"].as_string());
  }

  // `extra_toml` follows the shared settings; a worker given one finds its model there.
  ServerProcess *start(const std::string &role, const std::string &extra_toml = {},
                       const std::vector<std::string> &extra_args = {}) {
    ServerProcessOptions o;
    o.config_toml = std::string(kToml) + extra_toml;
    o.args = {"--role", role, "--redis-url", redis_->url(), "--database-url", db_, "--no-cache"};
    o.args.insert(o.args.end(), extra_args.begin(), extra_args.end());
    if (role == "worker" && extra_toml.empty()) {
      o.args.push_back("--model");
      o.args.push_back(std::string(GANTRY_MODELS_DIR) + "/stories260K.gguf");
    }
    o.env = {std::string("GANTRY_WORKER_TOKEN=") + kToken,
             std::string("GANTRY_KEY_PEPPER=") + kPepper,
             std::string("GANTRY_ADMIN_TOKEN=") + kAdminToken};
    auto s = ServerProcess::start(std::move(o));
    EXPECT_TRUE(s) << (s ? "" : s.error().message);
    if (!s)
      return nullptr;
    nodes_.push_back(std::move(s).value());
    return nodes_.back().get();
  }

  http::Headers auth() const { return {{"Authorization", "Bearer " + key_}}; }

  // The gateway's attempts per worker so far (its pool's per-backend counter).
  std::map<uint16_t, double> per_worker(const std::vector<ServerProcess *> &workers) {
    http::HttpClient c(gateway_->client_options());
    auto m = c.get("/metrics");
    EXPECT_TRUE(m && m->status == 200);
    std::map<uint16_t, double> out;
    for (auto *w : workers)
      out[w->port()] = metric_or_zero(m ? m->body : "",
                                      "gantry:backend_requests_total{model_name=\"stories260K\","
                                      "backend=\"127.0.0.1:" +
                                          std::to_string(w->port()) + "\"}");
    return out;
  }

  // Waits until the gateway counts `n` live workers for the model (gantry:workers).
  bool wait_workers(int n) {
    auto [ok, text] = wait_for_metrics(
        gateway_->client_options(),
        [&](const std::string &t) {
          return metric_or_zero(t, model_series("gantry:workers")) == n;
        },
        20s);
    return ok;
  }

  // `count` completions through the gateway on `threads` connections; the statuses seen.
  std::map<int, int> traffic(int count, int threads = 4) {
    std::mutex mu;
    std::map<int, int> statuses;
    std::atomic<int> next{0};
    std::vector<std::thread> ts;
    for (int t = 0; t < threads; ++t)
      ts.emplace_back([&] {
        http::HttpClient c(gateway_->client_options());
        while (next.fetch_add(1) < count) {
          auto r = c.post("/v1/completions",
                          completion_body("Once upon a time", {{"max_tokens", 4}}), auth());
          std::lock_guard<std::mutex> lk(mu);
          ++statuses[r ? r->status : 0];
        }
      });
    for (auto &t : ts)
      t.join();
    return statuses;
  }

  std::unique_ptr<PostgresProcess> pg_;
  std::unique_ptr<RedisProcess> redis_;
  std::string db_, key_;
  std::vector<std::unique_ptr<ServerProcess>> nodes_;
  ServerProcess *gateway_ = nullptr;
};

TEST_F(Roles, AGatewayRoutesToLiveWorkersThatJoinAndDieWithoutAnyChangeOnIt) {
  ServerProcess *w1 = start("worker");
  ServerProcess *w2 = start("worker");
  gateway_ = start("gateway");
  ASSERT_TRUE(w1 && w2 && gateway_);

  // The gateway lists the model its workers announced.
  ASSERT_TRUE(wait_workers(2)) << "both workers in the gateway's pool";
  http::HttpClient gw(gateway_->client_options());
  auto models = gw.get("/v1/models", auth());
  ASSERT_TRUE(models && models->status == 200) << (models ? models->body : models.error().message);
  auto list = parse_object(models->body)["data"].as_array();
  ASSERT_EQ(list.size(), 1u) << models->body;
  EXPECT_EQ(list[0].as_object().at("id"), kModel);
  auto ready = gw.get("/readyz");
  ASSERT_TRUE(ready);
  EXPECT_NE(ready->body.find("\"workers\":2"), std::string::npos) << ready->body;

  // A worker refuses anyone but a gateway (the internal token), keys included.
  http::HttpClient direct(w1->client_options());
  auto refused = direct.post("/v1/completions", completion_body("Hi"), auth());
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->status, 401) << refused->body;

  // 100 requests spread over both workers: each gets 30-70 of them. Least outstanding requests
  // sends fewer to a worker that runs slower, which under ctest -j2 on 2 cores can be one that
  // other tests' processes kept off the CPU for part of the second (29 / 71 seen once): a share
  // outside the bounds is measured once more over the next 100, which a balancer that favours
  // one backend fails as well.
  std::map<int, int> st;
  std::map<uint16_t, double> share;
  for (int attempt = 0; attempt < 2; ++attempt) {
    const auto start = per_worker({w1, w2});
    st = traffic(100);
    EXPECT_EQ(st[200], 100) << "statuses other than 200: " << st.size();
    share = per_worker({w1, w2});
    for (auto &[port, n] : share)
      n -= start.at(port);
    if (std::all_of(share.begin(), share.end(),
                    [](const auto &p) { return p.second >= 30 && p.second <= 70; }))
      break;
    std::printf("share of 100 outside 30-70 (%.0f / %.0f), measured again\n", share.begin()->second,
                share.rbegin()->second);
  }
  for (auto &[port, n] : share) {
    EXPECT_GE(n, 30) << "worker on port " << port << " got " << n << " of 100";
    EXPECT_LE(n, 70) << "worker on port " << port << " got " << n << " of 100";
  }

  // Streaming through the gateway.
  auto s =
      stream_request(gateway_->client_options(), "/v1/chat/completions",
                     chat_body("Tell me a story", {{"max_tokens", 8}, {"stream", true}}), auth());
  EXPECT_EQ(s.status, 200);
  EXPECT_TRUE(s.done) << s.transport_error;
  EXPECT_FALSE(s.text[0].empty());

  // Embeddings through the gateway (forwarded to a worker's /v1/embeddings).
  auto emb = gw.post(
      "/v1/embeddings",
      json::serialize(json::object{{"model", kModel}, {"input", "Once upon a time"}}), auth());
  ASSERT_TRUE(emb);
  ASSERT_EQ(emb->status, 200) << emb->body;
  auto vec = parse_object(emb->body)["data"].as_array();
  ASSERT_EQ(vec.size(), 1u);
  EXPECT_FALSE(vec[0].as_object().at("embedding").as_array().empty());

  // A third worker: in the pool within a heartbeat, and it takes traffic.
  ServerProcess *w3 = start("worker");
  ASSERT_TRUE(w3);
  ASSERT_TRUE(wait_workers(3));
  // A share, not an exact split: power-of-two choices is random, and a sanitized worker that is
  // still warming up holds more requests outstanding, so it is picked less at first.
  const auto before = per_worker({w1, w2, w3});
  int sent = 0;
  auto after = before;
  while (sent < 360 && after.at(w3->port()) - before.at(w3->port()) < 5) {
    st = traffic(90);
    EXPECT_EQ(st[200], 90);
    sent += 90;
    after = per_worker({w1, w2, w3});
  }
  EXPECT_GE(after.at(w3->port()) - before.at(w3->port()), 5)
      << "the new worker must take a share of the traffic (" << sent << " requests sent)";

  // kill -9 a worker mid-traffic: no client-visible error, and it leaves the pool within its TTL.
  std::atomic<bool> stop{false};
  std::map<int, int> during;
  std::thread load([&] {
    while (!stop.load()) {
      auto part = traffic(8, 4);
      for (auto &[k, v] : part)
        during[k] += v;
    }
  });
  std::this_thread::sleep_for(100ms); // let the traffic start: the kill lands mid-flight
  w1->signal(SIGKILL);
  ASSERT_TRUE(w1->wait_exit(10s).has_value());
  EXPECT_TRUE(wait_workers(2)) << "the dead worker is out of routing after its TTL";
  st = traffic(40);
  stop = true;
  load.join();
  EXPECT_EQ(st[200], 40);
  int around = 0;
  for (auto &[status, n] : during) {
    EXPECT_EQ(status, 200) << n << " requests answered " << status << " around the kill";
    around += n;
  }
  EXPECT_GT(around, 0) << "traffic was running when the worker died";
  std::fprintf(stderr,
               "share of 100: %.0f / %.0f; third worker: %.0f of %d; %d requests around "
               "the kill\n",
               share.begin()->second, share.rbegin()->second,
               after.at(w3->port()) - before.at(w3->port()), sent, around);

  // Jobs accepted by the gateway (which runs none: it has no model of its own) are run by the
  // workers, each exactly once.
  constexpr int kJobs = 30;
  std::set<std::string> ids;
  for (int i = 0; i < kJobs; ++i) {
    json::object body{{"endpoint", "/v1/completions"},
                      {"body", json::object{{"model", kModel},
                                            {"prompt", "Once upon a time " + std::to_string(i)},
                                            {"max_tokens", 8}}}};
    auto r = gw.post("/v1/jobs", json::serialize(body), auth());
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 202) << r->body;
    ids.insert(std::string(parse_object(r->body)["id"].as_string()));
  }
  std::map<std::string, json::object> jobs;
  const auto deadline = std::chrono::steady_clock::now() + 60s;
  while (std::chrono::steady_clock::now() < deadline) {
    auto r = gw.get("/v1/jobs?limit=100", auth());
    ASSERT_TRUE(r && r->status == 200);
    jobs.clear();
    size_t done = 0;
    json::object page = parse_object(r->body);
    for (auto &j : page["data"].as_array()) {
      const auto &o = j.as_object();
      jobs[std::string(o.at("id").as_string())] = o;
      done += o.at("status") == "succeeded" || o.at("status") == "failed";
    }
    if (jobs.size() == ids.size() && done == ids.size())
      break;
    std::this_thread::sleep_for(50ms);
  }
  ASSERT_EQ(jobs.size(), ids.size());
  for (auto &[id, j] : jobs) {
    EXPECT_EQ(j["status"], "succeeded") << json::serialize(j);
    EXPECT_EQ(j["attempts"].as_int64(), 1) << id;
  }
  // A batch through the gateway: its lines are jobs of the worker-hosted model, run by workers.
  constexpr int kLines = 3;
  std::string lines;
  for (int i = 0; i < kLines; ++i)
    lines += json::serialize(json::object{{"custom_id", "line-" + std::to_string(i)},
                                          {"method", "POST"},
                                          {"url", "/v1/completions"},
                                          {"body", json::object{{"model", kModel},
                                                                {"prompt", "Once upon a time"},
                                                                {"max_tokens", 4}}}}) +
             "\n";
  const std::string boundary = "----roles-batch";
  const std::string upload =
      "--" + boundary + "\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n--" +
      boundary +
      "\r\nContent-Disposition: form-data; name=\"file\"; filename=\"in.jsonl\"\r\n"
      "Content-Type: application/jsonl\r\n\r\n" +
      lines + "\r\n--" + boundary + "--\r\n";
  http::Headers fh = auth();
  fh.push_back({"Content-Type", "multipart/form-data; boundary=" + boundary});
  auto file = gw.post("/v1/files", upload, fh);
  ASSERT_TRUE(file && file->status == 200) << (file ? file->body : file.error().message);
  auto created =
      gw.post("/v1/batches",
              json::serialize(json::object{{"input_file_id", parse_object(file->body)["id"]},
                                           {"endpoint", "/v1/completions"},
                                           {"completion_window", "24h"}}),
              auth());
  ASSERT_TRUE(created && created->status == 200) << (created ? created->body : "");
  const std::string batch_id(parse_object(created->body)["id"].as_string());
  json::object batch;
  for (auto until = std::chrono::steady_clock::now() + 60s;
       std::chrono::steady_clock::now() < until; std::this_thread::sleep_for(50ms)) {
    auto r = gw.get("/v1/batches/" + batch_id, auth());
    ASSERT_TRUE(r && r->status == 200);
    batch = parse_object(r->body);
    if (batch["status"] == "completed" || batch["status"] == "failed")
      break;
  }
  ASSERT_EQ(batch["status"], "completed") << json::serialize(batch);
  auto out =
      gw.get("/v1/files/" + std::string(batch["output_file_id"].as_string()) + "/content", auth());
  ASSERT_TRUE(out && out->status == 200);
  EXPECT_EQ(std::count(out->body.begin(), out->body.end(), '\n'), kLines) << out->body;

  // One ledger row per job: written by the worker that ran it (the gateway's own calls to the
  // workers are billed once, by the gateway). Every node stops cleanly to flush its ledger.
  for (auto &n : nodes_)
    if (n.get() != w1)
      n->signal(SIGTERM);
  for (auto &n : nodes_) {
    if (n.get() != w1) {
      EXPECT_TRUE(n->wait_exit(30s).has_value());
    }
  }
  SystemClock clock;
  store::PgOptions po;
  po.url = db_;
  auto pool = store::PgPool::connect(po, clock);
  ASSERT_TRUE(pool) << pool.error().message;
  auto conn = (*pool)->acquire();
  ASSERT_TRUE(conn);
  auto rows = conn->exec("SELECT count(*), count(DISTINCT request_id) FROM usage_ledger "
                         "WHERE request_id LIKE 'job\\_%'");
  ASSERT_TRUE(rows) << rows.error().message;
  EXPECT_EQ(rows->i64(0, 0), kJobs + kLines) << "one row per job, none lost, none twice";
  EXPECT_EQ(rows->i64(0, 1), kJobs + kLines);
  auto all = conn->exec("SELECT count(*) FROM usage_ledger WHERE key_id = ''");
  ASSERT_TRUE(all);
  EXPECT_EQ(all->i64(0, 0), 0) << "no keyless rows: the workers did not bill the gateway's calls";
}

// The gateway bills calls to worker-hosted models it has no prices for (issue 13): it reserves by
// the prices the workers announce in the registry, and charges what the serving worker reports
// (its own prices and engine time). So a project's budget holds across the topology, and the
// gateway's ledger — the only one that bills API keys — carries the cost.
TEST_F(Roles, WorkerHostedModelsAreBilledAtTheGatewayByTheWorkersPrices) {
  // $1 per output token: max_tokens 10 with ignore_eos costs exactly $10.
  start("worker", std::string("[[models]]\nname = \"stories260K\"\npath = \"") + GANTRY_MODELS_DIR +
                      "/stories260K.gguf\"\nprice_output_per_mtok = 1000000.0\nmax_seqs = 16\n");
  gateway_ = start("gateway");
  ASSERT_TRUE(gateway_ && nodes_.size() == 2);
  ASSERT_TRUE(wait_workers(1));
  http::HttpClient c(gateway_->client_options());
  const http::Headers admin{{"Authorization", std::string("Bearer ") + kAdminToken}};
  auto b = c.post(
      "/admin/v1/budgets",
      R"({"owner_kind":"project","owner_id":"alpha","period":"month","spend_limit_usd":100})",
      admin);
  ASSERT_TRUE(b);
  ASSERT_EQ(b->status, 200) << b->body;
  const std::string body = completion_body("Once upon", {{"max_tokens", 10}, {"ignore_eos", true}});
  auto one = c.post("/v1/completions", body, auth());
  ASSERT_TRUE(one);
  ASSERT_EQ(one->status, 200) << one->body;
  EXPECT_EQ(one->header("x-gantry-cost-usd").value_or(""), "10.00000000");
  // A stream carries its cost in the usage chunk, as the worker reported it.
  auto streamed = stream_request(
      gateway_->client_options(), "/v1/completions",
      completion_body("Once upon", {{"max_tokens", 10},
                                    {"ignore_eos", true},
                                    {"stream", true},
                                    {"stream_options", json::object{{"include_usage", true}}}}),
      auth());
  ASSERT_EQ(streamed.status, 200);
  ASSERT_TRUE(streamed.usage) << streamed.transport_error;
  EXPECT_DOUBLE_EQ((*streamed.usage)["cost_usd"].to_number<double>(), 10.0);
  // $80 left: eight more fit; the reservation at the learned price lets at most one race past.
  std::atomic<int> ok{0}, quota{0}, other{0};
  std::vector<std::thread> ts;
  for (int i = 0; i < 40; ++i)
    ts.emplace_back([&] {
      http::HttpClient cc(gateway_->client_options(60s));
      auto r = cc.post("/v1/completions", body, auth());
      if (r && r->status == 200)
        ++ok;
      else if (r && r->status == 429 && r->body.find("insufficient_quota") != std::string::npos)
        ++quota;
      else
        ++other;
    });
  for (auto &t : ts)
    t.join();
  EXPECT_GE(ok.load(), 8);
  EXPECT_LE(ok.load(), 9);
  EXPECT_EQ(other.load(), 0);
  // The gateway's ledger has every paid call at the worker's price (a clean stop flushes it).
  gateway_->signal(SIGTERM);
  ASSERT_TRUE(gateway_->wait_exit(30s).has_value());
  SystemClock clock;
  store::PgOptions po;
  po.url = db_;
  auto pool = store::PgPool::connect(po, clock);
  ASSERT_TRUE(pool) << pool.error().message;
  auto conn = (*pool)->acquire();
  ASSERT_TRUE(conn);
  auto rows = conn->exec("SELECT count(*), coalesce(sum(cost_usd), 0) FROM usage_ledger "
                         "WHERE key_id <> '' AND status = 200");
  ASSERT_TRUE(rows) << rows.error().message;
  EXPECT_EQ(rows->i64(0, 0), 2 + ok.load());
  EXPECT_NEAR(rows->f64(0, 1), 10.0 * (2 + ok.load()), 1e-6);
}

// Job events cross nodes (Redis pub/sub): a `Prefer: wait` POST held on the gateway is answered
// when the worker finishes the job, not at its deadline; a cancel through the gateway stops the
// generation on the worker that runs it.
TEST_F(Roles, PreferWaitAndCancelThroughTheGatewayReachTheWorkerRunningTheJob) {
  // A context long enough that the job below cannot finish before its cancel arrives: 1,500
  // tokens took under a second, and on a loaded CI machine the job ended first once (its
  // complete() was refused, so it read "canceled", but no generation was ever cut).
  ServerProcess *w = start("worker", {}, {"--ctx", "16384"});
  gateway_ = start("gateway");
  ASSERT_TRUE(w && gateway_);
  ASSERT_TRUE(wait_workers(1));
  // Held for up to 120 s; the client gives up after 30 s, so only an early answer passes.
  http::HttpClient held(gateway_->client_options(30s));
  http::Headers prefer = auth();
  prefer.push_back({"Prefer", "wait=120"});
  auto waited =
      held.post("/v1/jobs",
                json::serialize(json::object{{"endpoint", "/v1/completions"},
                                             {"body", json::object{{"model", kModel},
                                                                   {"prompt", "Once upon a time"},
                                                                   {"max_tokens", 4}}}}),
                prefer);
  ASSERT_TRUE(waited) << waited.error().message;
  ASSERT_EQ(waited->status, 200) << waited->body;
  EXPECT_EQ(parse_object(waited->body)["status"], "succeeded") << waited->body;

  http::HttpClient gw(gateway_->client_options());
  auto long_job =
      gw.post("/v1/jobs",
              json::serialize(json::object{{"endpoint", "/v1/completions"},
                                           {"body", json::object{{"model", kModel},
                                                                 {"prompt", "A"},
                                                                 {"max_tokens", 16000},
                                                                 {"ignore_eos", true}}}}),
              auth());
  ASSERT_TRUE(long_job && long_job->status == 202);
  const std::string id(parse_object(long_job->body)["id"].as_string());
  auto status = [&] {
    auto r = gw.get("/v1/jobs/" + id, auth());
    return r && r->status == 200 ? std::string(parse_object(r->body)["status"].as_string())
                                 : std::string();
  };
  for (auto until = std::chrono::steady_clock::now() + 20s;
       status() != "running" && std::chrono::steady_clock::now() < until;)
    std::this_thread::sleep_for(5ms);
  ASSERT_EQ(status(), "running");
  auto canceled = gw.post("/v1/jobs/" + id + "/cancel", "", auth());
  ASSERT_TRUE(canceled && canceled->status == 200) << (canceled ? canceled->body : "");
  auto [stopped, text] = wait_for_metrics(
      w->client_options(),
      [](const std::string &t) {
        return metric_or_zero(t, model_series("gantry:request_cancelled_total")) >= 1;
      },
      20s);
  EXPECT_TRUE(stopped) << "the worker's engine cancelled the running generation";
  EXPECT_EQ(status(), "canceled");
}

TEST(RolesConfig, AGatewayWithoutRedisStopsWithAClearMessage) {
  char tmpl[] = "/tmp/gantry-roles-XXXXXX";
  ASSERT_TRUE(::mkdtemp(tmpl));
  int rc = 0;
  const std::string out = run(std::string("serve --role gateway --port 0 --data-dir ") + tmpl, &rc);
  EXPECT_NE(rc, 0) << out;
  EXPECT_NE(out.find("config 'role'"), std::string::npos) << out;
  EXPECT_NE(out.find("--redis-url"), std::string::npos) << out;
  const std::string bad = run(std::string("serve --role boss --port 0 --data-dir ") + tmpl, &rc);
  EXPECT_NE(rc, 0);
  EXPECT_NE(bad.find("config 'role'"), std::string::npos) << bad;
  std::error_code ec;
  std::filesystem::remove_all(tmpl, ec);
}

} // namespace
} // namespace gantry::testing
