// Issue 14 items 2 and 3 in real processes: a gateway (`--role gateway`) whose stories260K has
// `[autoscale.stories260K]` with `executor = "local"` and min_replicas 0 starts and stops
// `gantry serve --role worker` processes itself, on a real redis-server (the worker registry)
// and a real PostgreSQL. Idle, no worker process runs and gantry:replicas is 0; a request is
// held, then served with x-gantry-cold-start-ms; a stream during the cold start sees
// `: loading model N%` comments before its first token; a burst scales to max_replicas (2); idle
// again, back to no process. Also: bad executor config stops start-up naming the key, and a
// failing scale_command is counted and retried with back-off while held requests meet their
// bounds (503 with Retry-After).
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <dirent.h>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "integration/api_helpers.h"
#include "integration/server_process.h"
#include "support/postgres_process.h"
#include "support/redis_process.h"

namespace gantry::testing {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr const char *kToken = "scale-zero-test-internal-token-0123456789";
constexpr const char *kPepper = "scale-zero-test-pepper-0123456789abcdef";

std::string run(const std::string &args, int *rc) {
  // Keys are HMAC(pepper, secret): the CLI and the gateway share one pepper.
  std::string cmd =
      std::string("GANTRY_KEY_PEPPER=") + kPepper + " " + GANTRY_BINARY + " " + args + " 2>&1";
  FILE *f = popen(cmd.c_str(), "r");
  std::string out;
  char buf[4096];
  while (f && fgets(buf, sizeof(buf), f))
    out += buf;
  const int status = f ? pclose(f) : -1;
  *rc = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return out;
}

// The live child processes of `parent` (the workers a gateway started).
std::vector<pid_t> child_pids(pid_t parent) {
  std::vector<pid_t> out;
  DIR *d = ::opendir("/proc");
  if (!d)
    return out;
  while (dirent *e = ::readdir(d)) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9')
      continue;
    std::ifstream f(std::string("/proc/") + e->d_name + "/stat");
    std::string stat;
    std::getline(f, stat);
    const auto close = stat.rfind(')');
    if (close == std::string::npos)
      continue;
    char state = 0;
    int ppid = 0;
    if (std::sscanf(stat.c_str() + close + 1, " %c %d", &state, &ppid) == 2 && ppid == parent &&
        state != 'Z')
      out.push_back(static_cast<pid_t>(std::atoi(e->d_name)));
  }
  ::closedir(d);
  return out;
}

int children(pid_t parent) { return static_cast<int>(child_pids(parent).size()); }

// A streamed completion over a raw HTTP/1.0 connection: the bytes exactly as sent, SSE comments
// included (the client library skips them). HTTP/1.0 has no chunked framing: the close ends it.
std::string raw_stream(uint16_t port, const std::string &body, const std::string &key,
                       const std::string &path = "/v1/completions") {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  timeval tv{60, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr *>(&a), sizeof(a)) != 0) {
    ::close(fd);
    return "<connect failed>";
  }
  const std::string req = "POST " + path +
                          " HTTP/1.0\r\nHost: 127.0.0.1\r\n"
                          "Content-Type: application/json\r\nAuthorization: Bearer " +
                          key + "\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" +
                          body;
  (void)!::write(fd, req.data(), req.size());
  std::string out;
  char buf[4096];
  for (ssize_t n; (n = ::read(fd, buf, sizeof(buf))) > 0;)
    out.append(buf, static_cast<size_t>(n));
  ::close(fd);
  return out;
}

class ScaleToZero : public ::testing::Test {
protected:
  void SetUp() override {
    std::string why;
    pg_ = PostgresProcess::start_new(&why);
    ASSERT_TRUE(pg_) << why;
    db_ = pg_->create_database("scale_zero");
    redis_ = RedisProcess::start_new();
    ASSERT_TRUE(redis_) << "redis-server did not start (scripts/bootstrap.sh installs it)";
    int rc = 0;
    const std::string out = run("keys create --project alpha --json --database-url " + db_, &rc);
    ASSERT_EQ(rc, 0) << out;
    key_ = std::string(parse_object(out.substr(out.find('{')))["key"].as_string());
  }

  std::unique_ptr<ServerProcess> gateway(const std::string &autoscale_table) {
    ServerProcessOptions o;
    o.config_toml = std::string("request_log = \"off\"\nworker_heartbeat_ms = 200\n"
                                "worker_ttl_ms = 1000\ndrain_s = 5\n"
                                "[[models]]\nname = \"stories260K\"\npath = \"") +
                    GANTRY_MODELS_DIR + "/stories260K.gguf\"\nkv_mb = 32\nthreads = 1\n" +
                    "[autoscale.stories260K]\n" + autoscale_table;
    o.args = {"--role",         "gateway", "--redis-url", redis_->url(),
              "--database-url", db_,       "--no-cache"};
    o.env = {std::string("GANTRY_WORKER_TOKEN=") + kToken,
             std::string("GANTRY_KEY_PEPPER=") + kPepper};
    auto s = ServerProcess::start(std::move(o));
    EXPECT_TRUE(s) << (s ? "" : s.error().message);
    return s ? std::move(s).value() : nullptr;
  }

  http::Headers auth() const { return {{"Authorization", "Bearer " + key_}}; }

  static double replicas(const std::string &metrics, const std::string &state) {
    return metric_or_zero(metrics,
                          "gantry:replicas{model_name=\"stories260K\",state=\"" + state + "\"}");
  }

  // Waits until the gateway has no worker: no replica in any state and no child process.
  bool wait_for_zero(ServerProcess &gw, std::chrono::seconds limit) {
    const auto deadline = Clock::now() + limit;
    while (Clock::now() < deadline) {
      http::HttpClient c(gw.client_options());
      auto m = c.get("/metrics");
      if (m)
        last_metrics_ = m->body;
      last_children_ = children(gw.pid());
      if (m && m->status == 200 &&
          m->body.find("gantry:desired_replicas{model_name=\"stories260K\"} 0\n") !=
              std::string::npos &&
          replicas(m->body, "ready") + replicas(m->body, "starting") +
                  replicas(m->body, "draining") ==
              0 &&
          children(gw.pid()) == 0)
        return true;
      std::this_thread::sleep_for(100ms);
    }
    return false;
  }

  // What wait_for_zero() saw last, for the failure message.
  std::string why_not_zero() const {
    std::string out = "children " + std::to_string(last_children_) + "\n";
    std::istringstream in(last_metrics_);
    for (std::string line; std::getline(in, line);)
      if (line.find("stories260K") != std::string::npos && line[0] != '#')
        out += line + "\n";
    return out;
  }

  std::unique_ptr<PostgresProcess> pg_;
  std::unique_ptr<RedisProcess> redis_;
  std::string db_, key_;
  std::string last_metrics_;
  int last_children_ = -1;
};

TEST_F(ScaleToZero, WorkersFollowDemandFromZeroToMaxAndBackWithHeldColdStarts) {
  auto gw = gateway("min_replicas = 0\nmax_replicas = 2\ntarget_ongoing_requests = 2\n"
                    "upscale_delay_s = 0\ndownscale_delay_s = 2\ndownscale_to_zero_delay_s = 3\n"
                    "executor = \"local\"\ncold_start_timeout_s = 60\n");
  ASSERT_TRUE(gw);

  // At zero from the start: no worker process, replicas 0, yet the model is known.
  ASSERT_TRUE(wait_for_zero(*gw, 20s)) << "no worker while idle\n" << why_not_zero();
  http::HttpClient c(gw->client_options(60s));
  auto models = c.get("/v1/models", auth());
  ASSERT_TRUE(models && models->status == 200);
  EXPECT_NE(models->body.find("\"stories260K\""), std::string::npos) << models->body;
  auto ready = c.get("/readyz");
  ASSERT_TRUE(ready);
  EXPECT_EQ(ready->status, 200) << "a model at zero does not make the gateway unready: "
                                << ready->body;

  // A request at zero is held while a worker starts, then served.
  auto r =
      c.post("/v1/completions", completion_body("Once upon a time", {{"max_tokens", 8}}), auth());
  ASSERT_TRUE(r) << r.error().message;
  ASSERT_EQ(r->status, 200) << r->body;
  ASSERT_TRUE(r->header("x-gantry-cold-start-ms")) << "a held request says how long it waited";
  EXPECT_GT(std::stoll(std::string(*r->header("x-gantry-cold-start-ms"))), 0);
  EXPECT_EQ(children(gw->pid()), 1) << "one worker process";
  auto warm = c.post("/v1/completions", completion_body("Once", {{"max_tokens", 4}}), auth());
  ASSERT_TRUE(warm && warm->status == 200);
  EXPECT_FALSE(warm->header("x-gantry-cold-start-ms")) << "a warm request was not held";

  // Idle: the worker drains and exits; the model's memory is gone with it.
  ASSERT_TRUE(wait_for_zero(*gw, 30s)) << "back to zero after downscale_to_zero_delay_s\n"
                                       << why_not_zero();

  // A stream during the cold start: headers at once, `: loading model N%` comments, the
  // cold start's length as a comment, then the normal stream.
  const std::string raw = raw_stream(
      gw->port(), completion_body("Once upon a time", {{"max_tokens", 8}, {"stream", true}}), key_);
  ASSERT_NE(raw.find("HTTP/1.1 200"), std::string::npos) << raw;
  const auto loading = raw.find("\n: loading model ");
  const auto took = raw.find("\n: x-gantry-cold-start-ms ");
  const auto first_data = raw.find("\ndata: {");
  ASSERT_NE(loading, std::string::npos) << raw;
  ASSERT_NE(took, std::string::npos) << raw;
  ASSERT_NE(first_data, std::string::npos) << raw;
  EXPECT_LT(loading, first_data) << raw;
  EXPECT_LT(took, first_data) << raw;
  EXPECT_NE(raw.find("data: [DONE]"), std::string::npos) << raw;

  // A burst of concurrent streams: the policy asks for more than two replicas' worth, and the
  // gateway runs exactly max_replicas (2) workers.
  std::atomic<bool> stop{false};
  std::atomic<int> ok{0}, bad{0};
  std::vector<std::thread> clients;
  for (int t = 0; t < 8; ++t)
    clients.emplace_back([&] {
      while (!stop.load()) {
        auto s = stream_request(
            gw->client_options(60s), "/v1/completions",
            completion_body("Once upon a time", {{"max_tokens", 64}, {"stream", true}}), auth());
        (s.status == 200 && s.done ? ok : bad)++;
      }
    });
  double most_ready = 0, most_desired = 0;
  int most_children = 0;
  for (const auto deadline = Clock::now() + 45s; Clock::now() < deadline && most_ready < 2;) {
    http::HttpClient m(gw->client_options());
    auto text = m.get("/metrics");
    if (text && text->status == 200) {
      most_ready = std::max(most_ready, replicas(text->body, "ready"));
      most_desired = std::max(most_desired,
                              metric_or_zero(text->body, model_series("gantry:desired_replicas")));
    }
    most_children = std::max(most_children, children(gw->pid()));
    std::this_thread::sleep_for(100ms);
  }
  // Streams go on finishing while both workers serve: under ThreadSanitizer the second worker
  // was ready before any client's first stream ended (8 done, one a client).
  for (const auto more = Clock::now() + 30s; ok.load() <= 8 && Clock::now() < more;)
    std::this_thread::sleep_for(100ms);
  stop = true;
  for (auto &t : clients)
    t.join();
  EXPECT_EQ(most_desired, 2) << "desired capped at max_replicas";
  EXPECT_EQ(most_ready, 2) << "two workers ready during the burst";
  EXPECT_EQ(most_children, 2) << "never more processes than max_replicas";
  EXPECT_GT(ok.load(), 8);
  EXPECT_EQ(bad.load(), 0) << "every stream of the burst finished";

  // Idle again: back to no process.
  ASSERT_TRUE(wait_for_zero(*gw, 40s)) << "back to zero after the burst\n" << why_not_zero();
  http::HttpClient m(gw->client_options());
  auto text = m.get("/metrics");
  ASSERT_TRUE(text);
  EXPECT_EQ(metric_or_zero(text->body,
                           "gantry:autoscale_executor_failures_total{model_name=\"stories260K\"}"),
            0)
      << text->body;
  EXPECT_GE(metric_or_zero(text->body, "gantry:cold_start_requests_total{model_name="
                                       "\"stories260K\",outcome=\"released\"}"),
            2);

  // A gateway that stops takes its workers with it (they drain and exit).
  auto last = c.post("/v1/completions", completion_body("Once", {{"max_tokens", 4}}), auth());
  ASSERT_TRUE(last && last->status == 200);
  const auto workers = child_pids(gw->pid());
  ASSERT_EQ(workers.size(), 1u);
  gw->signal(SIGTERM);
  EXPECT_EQ(gw->wait_exit(30s), 0);
  EXPECT_NE(::kill(workers[0], 0), 0) << "the worker exited before the gateway did";
}

TEST_F(ScaleToZero,
       AFailingScaleCommandIsCountedAndRetriedWithBackOffWhileHeldRequestsMeetTheirBounds) {
  auto gw = gateway("min_replicas = 0\nmax_replicas = 2\nupscale_delay_s = 0\n"
                    "executor = \"command\"\nscale_command = [\"/bin/sh\", \"-c\", \"exit 3\", "
                    "\"hook\"]\nmax_held_requests = 1\ncold_start_timeout_s = 4\n");
  ASSERT_TRUE(gw);
  std::atomic<int> held_status{0};
  std::string held_retry;
  std::thread held([&] {
    http::HttpClient c(gw->client_options(60s));
    auto r = c.post("/v1/completions", completion_body("Once", {{"max_tokens", 4}}), auth());
    held_status = r ? r->status : -1;
    if (r && r->header("Retry-After"))
      held_retry = std::string(*r->header("Retry-After"));
  });
  // While that one is held, the one slot is taken: 503 with Retry-After at once.
  http::HttpClient c(gw->client_options(60s));
  int second = 0;
  for (const auto deadline = Clock::now() + 10s; Clock::now() < deadline;) {
    auto m = c.get("/metrics");
    if (m && metric_or_zero(m->body, "gantry:cold_start_held_requests{model_name="
                                     "\"stories260K\"}") == 1) {
      auto r = c.post("/v1/completions", completion_body("Once", {{"max_tokens", 4}}), auth());
      ASSERT_TRUE(r);
      second = r->status;
      EXPECT_TRUE(r->header("Retry-After"));
      auto err = parse_object(r->body);
      EXPECT_NE(json::serialize(err).find("max_held_requests"), std::string::npos) << r->body;
      break;
    }
    std::this_thread::sleep_for(50ms);
  }
  EXPECT_EQ(second, 503);
  held.join();
  EXPECT_EQ(held_status.load(), 503) << "the held request ends at cold_start_timeout_s";
  EXPECT_FALSE(held_retry.empty());
  // The hook failed, was counted, and was retried with back-off: 1 s, 2 s, 4 s ... after the
  // first run, so a handful of runs in these seconds, never one per evaluation.
  auto m = c.get("/metrics");
  ASSERT_TRUE(m);
  const double failures = metric_or_zero(
      m->body, "gantry:autoscale_executor_failures_total{model_name=\"stories260K\"}");
  EXPECT_GE(failures, 1) << m->body;
  EXPECT_LE(failures, 4) << "back-off, not a loop";
  EXPECT_EQ(metric_or_zero(m->body, "gantry:cold_start_requests_total{model_name=\"stories260K\","
                                    "outcome=\"timed_out\"}"),
            1);
  gw->signal(SIGTERM);
  EXPECT_EQ(gw->wait_exit(30s), 0);
}

// executor = "external" (KEDA): the gateway starts nothing, but knows the model at zero, holds its
// requests and asks for replicas through gantry:desired_replicas; a worker started from outside
// (here by the test, as KEDA would) takes the held request.
TEST_F(ScaleToZero, AnExternalScalerSeesTheDecisionAndItsWorkerServesTheHeldRequest) {
  auto gw = gateway("min_replicas = 0\nmax_replicas = 2\nupscale_delay_s = 0\n"
                    "executor = \"external\"\ncold_start_timeout_s = 60\n");
  ASSERT_TRUE(gw);
  std::atomic<int> status{0};
  std::string cold_ms;
  std::thread held([&] {
    http::HttpClient c(gw->client_options(90s));
    auto r = c.post("/v1/completions", completion_body("Once", {{"max_tokens", 4}}), auth());
    status = r ? r->status : -1;
    if (r && r->header("x-gantry-cold-start-ms"))
      cold_ms = std::string(*r->header("x-gantry-cold-start-ms"));
  });
  std::atomic<int> embed_status{0};
  std::thread held_embedding([&] {
    http::HttpClient c(gw->client_options(90s));
    auto r =
        c.post("/v1/embeddings", R"({"model":"stories260K","input":"Once upon a time"})", auth());
    embed_status = r ? r->status : -1;
  });
  // A typed stream (the Responses API) held meanwhile gets the progress comments too.
  std::string responses_raw;
  std::thread held_responses([&] {
    responses_raw = raw_stream(
        gw->port(), R"({"model":"stories260K","input":"Once","max_output_tokens":4,"stream":true})",
        key_, "/v1/responses");
  });
  // The decision goes out as the metric KEDA's trigger reads; nothing is started here.
  http::HttpClient c(gw->client_options(60s));
  bool asked = false;
  std::string last;
  for (const auto deadline = Clock::now() + 30s; Clock::now() < deadline && !asked;) {
    auto m = c.get("/metrics");
    if (m) {
      last = m->body;
      asked = metric_or_zero(m->body, "gantry:desired_replicas{model_name=\"stories260K\"}") >= 1 &&
              replicas(m->body, "starting") >= 1;
    }
    if (!asked)
      std::this_thread::sleep_for(100ms);
  }
  ASSERT_TRUE(asked) << why_not_zero() << last;
  EXPECT_EQ(children(gw->pid()), 0) << "an external executor starts no process";
  ServerProcessOptions o;
  o.config_toml = "request_log = \"off\"\nworker_heartbeat_ms = 200\nworker_ttl_ms = 1000\n";
  o.args = {"--role",      "worker",         "--redis-url",
            redis_->url(), "--database-url", db_,
            "--no-cache",  "--model",        std::string(GANTRY_MODELS_DIR) + "/stories260K.gguf"};
  o.env = {std::string("GANTRY_WORKER_TOKEN=") + kToken,
           std::string("GANTRY_KEY_PEPPER=") + kPepper};
  auto worker = ServerProcess::start(std::move(o));
  ASSERT_TRUE(worker) << worker.error().message;
  held.join();
  held_embedding.join();
  held_responses.join();
  const size_t progress = responses_raw.find(": loading model");
  const size_t first_delta = responses_raw.find("response.output_text.delta");
  EXPECT_NE(progress, std::string::npos) << responses_raw;
  EXPECT_NE(first_delta, std::string::npos) << responses_raw;
  EXPECT_LT(progress, first_delta) << responses_raw;
  EXPECT_TRUE(responses_raw.find("response.completed") != std::string::npos ||
              responses_raw.find("response.incomplete") != std::string::npos) // max_output_tokens
      << responses_raw;
  EXPECT_EQ(status.load(), 200);
  EXPECT_EQ(embed_status.load(), 200) << "embeddings are held too";
  EXPECT_FALSE(cold_ms.empty()) << "a held request says how long its cold start took";
  (*worker)->signal(SIGTERM);
  EXPECT_EQ((*worker)->wait_exit(30s), 0);
  gw->signal(SIGTERM);
  EXPECT_EQ(gw->wait_exit(30s), 0);
}

TEST(ScaleToZeroConfig, BadExecutorConfigStopsStartUpNamingTheKey) {
  char tmpl[] = "/tmp/gantry-scale-zero-XXXXXX";
  ASSERT_TRUE(::mkdtemp(tmpl));
  const std::string dir = tmpl;
  const std::string model = std::string("[[models]]\nname = \"m\"\npath = \"") + GANTRY_MODELS_DIR +
                            "/stories260K.gguf\"\n[autoscale.m]\n";
  struct Case {
    std::string role, table, key;
  };
  const Case cases[] = {
      {"gateway", "executor = \"kubernetes\"\n", "autoscale.m.executor"},
      {"gateway", "executor = \"command\"\n", "autoscale.m.scale_command"},
      {"gateway", "executor = \"command\"\nscale_command = [\"/nonexistent/scale\"]\n",
       "autoscale.m.scale_command"},
      {"gateway", "executor = \"local\"\nscale_command = [\"/bin/true\"]\n",
       "autoscale.m.scale_command"},
      {"all", "executor = \"local\"\n", "autoscale.m.executor"},
      {"gateway", "executor = \"local\"\ncold_start_timeout_s = -1\n",
       "autoscale.m.cold_start_timeout_s"},
      {"gateway", "executor = \"none\"\n", "'models'"},
  };
  for (const auto &c : cases) {
    {
      std::ofstream f(dir + "/gantry.toml");
      f << "role = \"" << c.role << "\"\n" << model << c.table;
    }
    int rc = 0;
    const std::string out =
        run("serve --config " + dir + "/gantry.toml --port 0 --data-dir " + dir +
                "/data --redis-url redis://127.0.0.1:1 --database-url postgresql://x@127.0.0.1:1/x",
            &rc);
    EXPECT_NE(rc, 0) << c.table << out;
    EXPECT_NE(out.find(c.key), std::string::npos) << c.table << " → " << out;
  }
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
}

} // namespace
} // namespace gantry::testing
