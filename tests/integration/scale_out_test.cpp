// Several `gantry serve` nodes sharing state (issue 13): one real redis-server (started here on a
// free loopback port) for limits, quotas, budgets and breakers, and one data directory for keys
// and the ledger. What one node admits, every node counts.
#include <gtest/gtest.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <set>
#include <thread>

#include "integration/api_helpers.h"
#include "integration/server_process.h"
#include "store/postgres/pg_store.h"
#include "support/postgres_process.h"
#include "support/redis_process.h"
#include "support/store_under_test.h"

namespace gantry::testing {
namespace {

using namespace std::chrono_literals;

constexpr const char *kAdminToken = "scale-out-admin-token-0123456789abcdef";

// The killed-node test's jobs: long enough that node a has some running when it is killed.
// ThreadSanitizer slows generation 5-10x: at 400 tokens node b alone needed more than 180 s
// for the 120 jobs beside other tests (the first whole-suite TSan run of 2026-12-05).
#if defined(__SANITIZE_THREAD__)
constexpr int kKilledNodeJobTokens = 120;
constexpr auto kKilledNodeFinishWithin = std::chrono::seconds(300);
#else
constexpr int kKilledNodeJobTokens = 400;
constexpr auto kKilledNodeFinishWithin = std::chrono::seconds(180);
#endif

std::string run_cli(const std::string &args) {
  std::string cmd = std::string(GANTRY_BINARY) + " " + args + " 2>&1";
  FILE *f = popen(cmd.c_str(), "r");
  std::string out;
  char buf[4096];
  while (f && fgets(buf, sizeof(buf), f))
    out += buf;
  if (f) {
    EXPECT_EQ(pclose(f), 0) << cmd << "\n" << out;
  }
  return out;
}

http::Headers bearer(const std::string &key) { return {{"Authorization", "Bearer " + key}}; }

// Revokes key `id` through one node; what another node then answers for the key, asked until it
// is 401 or a second has passed.
int revoke_and_ask(http::HttpClient &through, http::HttpClient &other, const std::string &id,
                   const std::string &key) {
  auto rev = through.post("/admin/v1/keys/" + id + "/revoke", "{}",
                          {{"Authorization", std::string("Bearer ") + kAdminToken}});
  EXPECT_TRUE(rev && rev->status == 200) << (rev ? rev->body : rev.error().message);
  const auto t0 = std::chrono::steady_clock::now();
  int status = 0;
  while (std::chrono::steady_clock::now() - t0 < 1s) {
    auto r = other.get("/v1/models", bearer(key));
    status = r ? r->status : 0;
    if (status == 401)
      break;
    std::this_thread::sleep_for(10ms);
  }
  return status;
}

class ScaleOut : public ::testing::Test {
protected:
  void SetUp() override {
    redis_ = RedisProcess::start_new();
    ASSERT_TRUE(redis_) << "redis-server did not start (scripts/bootstrap.sh installs it)";
    char tmpl[] = "/tmp/gantry-scale-XXXXXX";
    ASSERT_TRUE(::mkdtemp(tmpl));
    dir_ = tmpl;
  }
  void TearDown() override {
    nodes_.clear();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  std::string create_key(const std::string &flags) {
    auto created = parse_object(
        run_cli("keys create --project alpha --json " + flags + " " + store_flags(dir_)));
    return created.contains("key") ? std::string(created["key"].as_string()) : "";
  }

  ServerProcess *start_node(std::vector<std::string> extra = {}) {
    ServerProcessOptions o;
    o.data_dir = dir_;
    o.args = {"--redis-url", redis_->url()};
    o.args.insert(o.args.end(), extra.begin(), extra.end());
    o.env = {std::string("GANTRY_ADMIN_TOKEN=") + kAdminToken};
    auto s = ServerProcess::start(std::move(o));
    EXPECT_TRUE(s) << (s ? "" : s.error().message);
    if (!s)
      return nullptr;
    nodes_.push_back(std::move(s).value());
    return nodes_.back().get();
  }

  // A config file for start_node's --config.
  std::string write_toml(const std::string &text) {
    const std::string path = dir_ + "/node" + std::to_string(++tomls_) + ".toml";
    std::ofstream(path) << text;
    return path;
  }

  std::unique_ptr<RedisProcess> redis_;
  std::string dir_;
  int tomls_ = 0;
  std::vector<std::unique_ptr<ServerProcess>> nodes_;
};

TEST_F(ScaleOut, AKeysRpmHoldsExactlyAcrossTwoNodes) {
  const std::string key = create_key("--rpm 50");
  ASSERT_FALSE(key.empty());
  ServerProcess *a = start_node();
  ServerProcess *b = start_node();
  ASSERT_TRUE(a && b);
  std::atomic<int> ok{0}, limited{0}, other{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < 6; ++t) {
    ts.emplace_back([&, t] {
      http::HttpClient c(((t % 2) ? b : a)->client_options());
      for (int i = 0; i < 25; ++i) {
        auto r = c.post("/v1/completions", completion_body("Hi", {{"max_tokens", 1}}), bearer(key));
        if (r && r->status == 200)
          ++ok;
        else if (r && r->status == 429)
          ++limited;
        else
          ++other;
      }
    });
  }
  for (auto &t : ts)
    t.join();
  EXPECT_EQ(ok.load(), 50) << "150 requests through two nodes with RPM 50";
  EXPECT_EQ(limited.load(), 100);
  EXPECT_EQ(other.load(), 0);
}

TEST_F(ScaleOut, ConcurrencyAcrossNodesNeverExceedsTheCap) {
  const std::string key = create_key("--max-concurrent 2");
  ASSERT_FALSE(key.empty());
  ServerProcess *a = start_node({"--ctx", "16384"});
  ServerProcess *b = start_node({"--ctx", "16384"});
  ASSERT_TRUE(a && b);
  // Two long streams hold both slots (one on each node); a third request through either node is
  // refused while they run.
  std::atomic<bool> stop{false};
  std::vector<std::thread> holders;
  for (ServerProcess *n : {a, b}) {
    holders.emplace_back([&, n] {
      http::HttpClient c(n->client_options(60s));
      (void)c.post("/v1/completions",
                   completion_body("Once upon a time", {{"max_tokens", 16000}, {"stream", true}}),
                   bearer(key));
    });
  }
  // Wait until each node runs its stream (its engine reports one running sequence), then probe.
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  bool both = false;
  while (!both && std::chrono::steady_clock::now() < deadline) {
    both = true;
    for (ServerProcess *n : {a, b}) {
      http::HttpClient c(n->client_options(5s));
      auto r = c.get("/readyz");
      both = both && r && r->body.find(R"("running":1)") != std::string::npos;
    }
    if (!both)
      std::this_thread::sleep_for(20ms);
  }
  ASSERT_TRUE(both) << "the two streams did not start";
  http::HttpClient ca(a->client_options(5s));
  auto probe = ca.post("/v1/completions", completion_body("Hi", {{"max_tokens", 1}}), bearer(key));
  ASSERT_TRUE(probe);
  const int third = probe->status;
  EXPECT_EQ(third, 429) << "two streams in flight on two nodes, max_concurrent 2";
  http::HttpClient cb(b->client_options(5s));
  auto via_b = cb.post("/v1/completions", completion_body("Hi", {{"max_tokens", 1}}), bearer(key));
  ASSERT_TRUE(via_b);
  EXPECT_EQ(via_b->status, 429);
  EXPECT_NE(via_b->body.find("concurrent"), std::string::npos) << via_b->body;
  // Stopping the nodes ends the streams.
  nodes_.clear();
  for (auto &t : holders)
    t.join();
}

TEST_F(ScaleOut, AKeyChangeIsPushedToTheOtherNodesAtOnce) {
  // The generation poll is slowed to a minute: only the Redis push can make the revocation
  // effective on node b within a second.
  const std::string out = run_cli("keys create --project alpha --json " + store_flags(dir_));
  auto created = parse_object(out);
  const std::string key(created["key"].as_string()), id(created["id"].as_string());
  ServerProcess *a = start_node({"--config", write_toml("key_poll_ms = 60000\n")});
  ServerProcess *b = start_node({"--config", write_toml("key_poll_ms = 60000\n")});
  ASSERT_TRUE(a && b);
  http::HttpClient ca(a->client_options()), cb(b->client_options());
  ASSERT_EQ(cb.get("/v1/models", bearer(key))->status, 200) << "node b caches the key";
  std::this_thread::sleep_for(300ms); // both subscriptions are up
  EXPECT_EQ(revoke_and_ask(ca, cb, id, key), 401) << "the revocation was not pushed to node b";
}

TEST_F(ScaleOut, ARevokedKeyIsRefusedByEveryNodeWithinOneSecond) {
  const std::string out = run_cli("keys create --project alpha --json " + store_flags(dir_));
  auto created = parse_object(out);
  const std::string key(created["key"].as_string()), id(created["id"].as_string());
  ServerProcess *a = start_node();
  ServerProcess *b = start_node();
  ASSERT_TRUE(a && b);
  http::HttpClient ca(a->client_options()), cb(b->client_options());
  ASSERT_EQ(cb.get("/v1/models", bearer(key))->status, 200);
  EXPECT_EQ(revoke_and_ask(ca, cb, id, key), 401)
      << "node b still admitted the key 1 s after node a revoked it";
}

TEST_F(ScaleOut, ACachedResponseAndAnIdempotentReplayCrossNodes) {
  const std::string key = create_key("");
  ServerProcess *a = start_node();
  ServerProcess *b = start_node();
  ASSERT_TRUE(a && b);
  http::HttpClient ca(a->client_options()), cb(b->client_options());
  const std::string body =
      completion_body("The cache is shared", {{"max_tokens", 12}, {"temperature", 0}});
  auto first = ca.post("/v1/completions", body, bearer(key));
  ASSERT_TRUE(first);
  ASSERT_EQ(first->status, 200) << first->body;
  EXPECT_EQ(first->header("x-gantry-cache").value_or(""), "miss");
  // Node a stores the entry as the response completes, which may trail the client's last byte:
  // ask node b until it hits (a miss would only store the same answer again).
  auto second = cb.post("/v1/completions", body, bearer(key));
  const auto until = std::chrono::steady_clock::now() + 3s;
  while (second && second->header("x-gantry-cache").value_or("") != "hit" &&
         std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(20ms);
    second = cb.post("/v1/completions", body, bearer(key));
  }
  ASSERT_TRUE(second);
  ASSERT_EQ(second->status, 200);
  EXPECT_EQ(second->header("x-gantry-cache").value_or(""), "hit")
      << "stored through node a, looked up through node b";
  EXPECT_EQ(choice_text(parse_object(second->body)), choice_text(parse_object(first->body)));

  // An Idempotency-Key used through node a replays through node b: one run, one bill.
  http::Headers h = bearer(key);
  h.push_back({"Idempotency-Key", "order-42"});
  const std::string sampled =
      completion_body("Once", {{"max_tokens", 12}, {"temperature", 1}, {"seed", 7}});
  auto run = ca.post("/v1/completions", sampled, h);
  ASSERT_TRUE(run);
  ASSERT_EQ(run->status, 200) << run->body;
  // Likewise the stored response may trail the last byte: 409 (still in flight) until it lands.
  auto replay = cb.post("/v1/completions", sampled, h);
  const auto replay_until = std::chrono::steady_clock::now() + 3s;
  while (replay && replay->status == 409 && std::chrono::steady_clock::now() < replay_until) {
    std::this_thread::sleep_for(20ms);
    replay = cb.post("/v1/completions", sampled, h);
  }
  ASSERT_TRUE(replay);
  ASSERT_EQ(replay->status, 200) << replay->body;
  EXPECT_EQ(parse_object(replay->body)["id"], parse_object(run->body)["id"])
      << "the stored response, not a second run";
  auto other = cb.post("/v1/completions", completion_body("Different", {{"max_tokens", 2}}), h);
  ASSERT_TRUE(other);
  EXPECT_EQ(other->status, 422) << "the same key with another body, on another node";
}

TEST_F(ScaleOut, WhileRedisIsDownRatesFailOpenAndReadinessSaysDegraded) {
  const std::string key = create_key("--rpm 1000");
  ServerProcess *a = start_node();
  ASSERT_TRUE(a);
  http::HttpClient c(a->client_options());
  ASSERT_EQ(
      c.post("/v1/completions", completion_body("Hi", {{"max_tokens", 1}}), bearer(key))->status,
      200);
  auto ready = c.get("/readyz");
  ASSERT_TRUE(ready);
  EXPECT_EQ(ready->status, 200);
  EXPECT_NE(ready->body.find(R"("name":"redis","status":"ok")"), std::string::npos) << ready->body;
  redis_->kill();
  // Rate limits fail open (the default): served on this node's own limits.
  auto served = c.post("/v1/completions", completion_body("Hi", {{"max_tokens", 1}}), bearer(key));
  ASSERT_TRUE(served);
  EXPECT_EQ(served->status, 200) << served->body;
  auto degraded = c.get("/readyz");
  ASSERT_TRUE(degraded);
  EXPECT_EQ(degraded->status, 200) << "a Redis outage must not drain every node";
  EXPECT_NE(degraded->body.find(R"("name":"redis","status":"degraded")"), std::string::npos)
      << degraded->body;
  EXPECT_NE(degraded->body.find(R"("fallback_admissions":1)"), std::string::npos) << degraded->body;
  // Redis back: shared limits again (after the client's reconnect back-off, at most 2 s).
  ASSERT_TRUE(redis_->start());
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  std::string body;
  while (std::chrono::steady_clock::now() < deadline) {
    auto r = c.get("/readyz");
    body = r ? r->body : "";
    if (body.find(R"("name":"redis","status":"ok")") != std::string::npos)
      break;
    std::this_thread::sleep_for(100ms);
  }
  EXPECT_NE(body.find(R"("name":"redis","status":"ok")"), std::string::npos) << body;
}

TEST_F(ScaleOut, AnUnreachableRedisIsAStartUpErrorNamingIt) {
  const std::string url = redis_->url();
  redis_->kill();
  const std::string cmd = std::string(GANTRY_BINARY) + " serve --port 0 " + store_flags(dir_) +
                          " --redis-url " + url + " 2>&1";
  FILE *f = popen(cmd.c_str(), "r");
  ASSERT_TRUE(f);
  std::string out;
  char buf[4096];
  while (fgets(buf, sizeof(buf), f))
    out += buf;
  const int status = pclose(f);
  EXPECT_NE(status, 0) << "started without its Redis: " << out;
  EXPECT_NE(out.find("Redis at 127.0.0.1"), std::string::npos) << out;
  EXPECT_NE(out.find("redis.url"), std::string::npos) << out;
}

// Nodes with nothing on disk in common: keys, the ledger and budgets in one PostgreSQL, limits in
// one Redis, the key pepper shared through the environment.
TEST(ScaleOutPostgres, NodesWithTheirOwnDiskShareKeysLimitsAndTheLedger) {
  if (postgres_selected())
    GTEST_SKIP() << "starts its own PostgreSQL: already run by the SQLite variant";
  std::string why;
  auto pg = PostgresProcess::start_new(&why);
  ASSERT_TRUE(pg) << why;
  const std::string db = pg->create_database("gantry");
  auto redis = RedisProcess::start_new();
  ASSERT_TRUE(redis);
  const std::string pepper_value = "scale-out-pepper-0123456789abcdef";
  const std::string pepper = "GANTRY_KEY_PEPPER=" + pepper_value;
  // The CLI inherits this process's environment; the servers get theirs explicitly.
  ::setenv("GANTRY_KEY_PEPPER", pepper_value.c_str(), 1);
  auto created =
      parse_object(run_cli("keys create --project alpha --rpm 20 --json --database-url " + db));
  ::unsetenv("GANTRY_KEY_PEPPER");
  ASSERT_TRUE(created.contains("key"));
  const std::string key(created["key"].as_string()), id(created["id"].as_string());
  std::vector<std::unique_ptr<ServerProcess>> nodes;
  for (int i = 0; i < 2; ++i) {
    ServerProcessOptions o;
    o.args = {"--database-url", db, "--redis-url", redis->url()};
    o.env = {pepper, std::string("GANTRY_ADMIN_TOKEN=") + kAdminToken};
    auto s = ServerProcess::start(std::move(o));
    ASSERT_TRUE(s) << s.error().message;
    nodes.push_back(std::move(s).value());
  }
  http::HttpClient a(nodes[0]->client_options()), b(nodes[1]->client_options());
  int ok = 0, limited = 0;
  for (int i = 0; i < 30; ++i) {
    auto r = (i % 2 ? b : a)
                 .post("/v1/completions", completion_body("Hi", {{"max_tokens", 1}}), bearer(key));
    ASSERT_TRUE(r);
    ok += r->status == 200;
    limited += r->status == 429;
  }
  EXPECT_EQ(ok, 20) << "RPM 20 across two nodes with separate data directories";
  EXPECT_EQ(limited, 10);
  // Both nodes' ledger rows land in the one table (each node flushes within its flush window).
  SystemClock clock;
  store::PgOptions po;
  po.url = db;
  auto store = store::PgStore::open(po, clock);
  ASSERT_TRUE(store) << store.error().message;
  int64_t rows = 0;
  for (int i = 0; i < 50 && rows < 30; ++i) {
    auto n = (*store)->count_usage();
    rows = n ? *n : -1;
    std::this_thread::sleep_for(100ms);
  }
  EXPECT_EQ(rows, 30) << "one ledger row per request, admitted or not, from both nodes";
  // Revoked through node a: node b refuses it within a second.
  EXPECT_EQ(revoke_and_ask(a, b, id, key), 401);
}

// The queue is PostgreSQL's: a job accepted through one node is committed before the 202, any
// node runs it, and when the node running jobs is killed the other takes them over once their
// leases lapse. Every job ends succeeded exactly once, billed once.
TEST(ScaleOutPostgres, AKilledNodesJobsAreFinishedByTheOtherExactlyOnce) {
  if (postgres_selected())
    GTEST_SKIP() << "starts its own PostgreSQL: already run by the SQLite variant";
  std::string why;
  auto pg = PostgresProcess::start_new(&why);
  ASSERT_TRUE(pg) << why;
  const std::string db = pg->create_database("jobs");
  const std::string toml = "request_log = \"off\"\n[jobs]\nvisibility_s = 2\nretry_base_ms = 20\n"
                           "max_attempts = 5\n[[models]]\npath = \"" +
                           std::string(GANTRY_MODELS_DIR) + "/stories260K.gguf\"\nmax_seqs = 8\n";
  std::vector<std::unique_ptr<ServerProcess>> nodes;
  for (int i = 0; i < 2; ++i) {
    ServerProcessOptions o;
    o.config_toml = toml;
    o.args = {"--database-url", db, "--no-cache"};
    auto s = ServerProcess::start(std::move(o));
    ASSERT_TRUE(s) << s.error().message;
    nodes.push_back(std::move(s).value());
  }
  constexpr int kJobs = 120;
  std::set<std::string> ids;
  {
    http::HttpClient a(nodes[0]->client_options());
    for (int i = 0; i < kJobs; ++i) {
      json::object body{{"endpoint", "/v1/completions"},
                        {"body", json::object{{"model", kModel},
                                              {"prompt", "Once upon a time " + std::to_string(i)},
                                              {"max_tokens", kKilledNodeJobTokens},
                                              {"ignore_eos", true},
                                              {"temperature", 0}}}};
      auto r = a.post("/v1/jobs", json::serialize(body));
      ASSERT_TRUE(r);
      ASSERT_EQ(r->status, 202) << r->body;
      ids.insert(std::string(parse_object(r->body)["id"].as_string()));
    }
  }
  // Both nodes run jobs from the one queue; kill node a once it has jobs running.
  {
    http::HttpClient a(nodes[0]->client_options());
    const auto deadline = std::chrono::steady_clock::now() + 30s;
    while (std::chrono::steady_clock::now() < deadline) {
      auto r = a.get("/v1/jobs?limit=1000&status=succeeded");
      if (r && r->status == 200 && parse_object(r->body)["data"].as_array().size() >= 10)
        break;
      std::this_thread::sleep_for(20ms);
    }
  }
  nodes[0]->signal(SIGKILL);
  ASSERT_TRUE(nodes[0]->wait_exit(10s).has_value());
  http::HttpClient b(nodes[1]->client_options());
  std::map<std::string, json::object> all;
  const auto finish_by = std::chrono::steady_clock::now() + kKilledNodeFinishWithin;
  while (std::chrono::steady_clock::now() < finish_by) {
    all.clear();
    std::string after;
    for (;;) {
      auto r = b.get("/v1/jobs?limit=1000" + (after.empty() ? "" : "&after=" + after));
      ASSERT_TRUE(r && r->status == 200);
      auto page = parse_object(r->body);
      for (auto &j : page["data"].as_array())
        all[std::string(j.as_object().at("id").as_string())] = j.as_object();
      if (!page["has_more"].as_bool() || page["data"].as_array().empty())
        break;
      after = std::string(page["data"].as_array().back().as_object().at("id").as_string());
    }
    size_t open = 0;
    for (auto &[id, j] : all)
      open += j["status"] == "queued" || j["status"] == "running";
    if (all.size() == ids.size() && open == 0)
      break;
    std::this_thread::sleep_for(100ms);
  }
  ASSERT_EQ(all.size(), ids.size()) << "no accepted job may be lost";
  int retried = 0;
  for (auto &[id, j] : all) {
    EXPECT_TRUE(ids.count(id)) << id;
    ASSERT_EQ(j["status"], "succeeded") << json::serialize(j);
    retried += j["attempts"].as_int64() > 1;
  }
  // The ledger is keyed by the job id: a job that ran twice is billed once.
  nodes[1]->signal(SIGTERM);
  ASSERT_TRUE(nodes[1]->wait_exit(30s).has_value());
  SystemClock clock;
  store::PgOptions po;
  po.url = db;
  auto store = store::PgStore::open(po, clock);
  ASSERT_TRUE(store);
  auto rows = (*store)->count_usage();
  ASSERT_TRUE(rows);
  EXPECT_LE(*rows, kJobs) << "never two rows for one job";
  EXPECT_GE(*rows, kJobs - 8) << "rows of node a's last unflushed batch may be lost with it";
  EXPECT_GT(retried, 0) << "jobs running on node a at the kill ran again on node b";
  std::fprintf(stderr, "jobs retried after the kill: %d; ledger rows: %lld\n", retried,
               static_cast<long long>(*rows));
}

} // namespace
} // namespace gantry::testing
