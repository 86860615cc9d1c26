// Async jobs against the real server: the job API, kill -9 in the middle of 500 jobs, fairness
// between projects, signed webhooks with retries, and the Batch API's files and batches.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <set>
#include <thread>

#include "control/webhook_signature.h"
#include "http/server.h"
#include "integration/api_helpers.h"
#include "integration/server_process.h"
#include "store/sqlite/sqlite_store.h"
#include "support/store_under_test.h"

namespace gantry::testing {
namespace {

using namespace std::chrono_literals;
using SteadyClock = std::chrono::steady_clock;

constexpr const char *kAdminToken = "jobs-admin-token-0123456789abcdef5678";

std::string jobs_toml(const std::string &jobs_table, const std::string &model_extra = {}) {
  return "request_log = \"off\"\n[jobs]\n" + jobs_table + "\n[[models]]\npath = \"" +
         std::string(GANTRY_MODELS_DIR) + "/stories260K.gguf\"\n" + model_extra + "\n";
}

std::unique_ptr<ServerProcess> start(const std::string &toml, const std::string &data_dir = {}) {
  ServerProcessOptions o;
  o.config_toml = toml;
  o.args = {"--no-cache"};
  o.env.push_back(std::string("GANTRY_ADMIN_TOKEN=") + kAdminToken);
  o.data_dir = data_dir;
  auto s = ServerProcess::start(std::move(o));
  EXPECT_TRUE(s) << (s ? "" : s.error().message);
  return s ? std::move(s).value() : nullptr;
}

std::string str(const json::value &v) {
  return v.is_string() ? std::string(v.as_string()) : json::serialize(v);
}

http::Headers admin() { return {{"Authorization", std::string("Bearer ") + kAdminToken}}; }
http::Headers bearer(const std::string &key) { return {{"Authorization", "Bearer " + key}}; }

std::string create_key(http::HttpClient &c, const std::string &project) {
  auto r = c.post("/admin/v1/keys", json::serialize(json::object{{"project", project}}), admin());
  EXPECT_TRUE(r && r->status == 201) << (r ? r->body : r.error().message);
  if (!r || r->status != 201)
    return {};
  return std::string(parse_object(r->body)["key"].as_string());
}

std::string job_request(const std::string &prompt, int max_tokens, json::object extra = {}) {
  json::object o{{"endpoint", "/v1/completions"},
                 {"body", json::object{{"model", kModel},
                                       {"prompt", prompt},
                                       {"max_tokens", max_tokens},
                                       {"temperature", 0}}}};
  for (auto &[k, v] : extra)
    o[k] = v;
  return json::serialize(o);
}

// Every job of the caller, all pages.
std::vector<json::object> list_all(http::HttpClient &c, const http::Headers &h,
                                   const std::string &status = {}) {
  std::vector<json::object> out;
  std::string after;
  for (;;) {
    std::string target = "/v1/jobs?limit=1000";
    if (!status.empty())
      target += "&status=" + status;
    if (!after.empty())
      target += "&after=" + after;
    auto r = c.get(target, h);
    if (!r || r->status != 200) {
      ADD_FAILURE() << "GET " << target << ": " << (r ? r->body : r.error().message);
      return out;
    }
    auto o = parse_object(r->body);
    for (auto &j : o["data"].as_array())
      out.push_back(j.as_object());
    if (!o["has_more"].as_bool())
      return out;
    after = std::string(out.back()["id"].as_string());
  }
}

json::object get_job(http::HttpClient &c, const std::string &id, const http::Headers &h = {}) {
  auto r = c.get("/v1/jobs/" + id, h);
  EXPECT_TRUE(r && r->status == 200) << (r ? r->body : r.error().message);
  return r && r->status == 200 ? parse_object(r->body) : json::object{};
}

// Submits `n` jobs from `threads` clients; returns their ids.
std::vector<std::string> submit_many(const ServerProcess &s, int n, int threads,
                                     const std::function<std::string(int)> &body,
                                     const http::Headers &h = {}) {
  std::vector<std::string> ids(static_cast<size_t>(n));
  std::atomic<int> next{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; ++t) {
    ts.emplace_back([&] {
      http::HttpClient c(s.client_options());
      for (int i = next++; i < n; i = next++) {
        auto r = c.post("/v1/jobs", body(i), h);
        if (!r || r->status != 202) {
          ADD_FAILURE() << "job " << i << ": " << (r ? r->body : r.error().message);
          continue;
        }
        ids[static_cast<size_t>(i)] = std::string(parse_object(r->body)["id"].as_string());
      }
    });
  }
  for (auto &t : ts)
    t.join();
  return ids;
}

TEST(Jobs, SubmitGetListCancelPreferWaitAndValidation) {
  // A context long enough for a job that is still running when its cancel arrives: 1,500 tokens
  // of the story model took about 1 s, and on a loaded CI machine the job could finish between
  // "running" and the cancel (then the cancel only refuses its result; no generation is cut).
  auto s = start(jobs_toml("workers = 2", "ctx = 16384"));
  ASSERT_TRUE(s);
  http::HttpClient c(s->client_options());

  auto r = c.post("/v1/jobs", job_request("Once upon a time", 8, {{"metadata", {{"k", "v"}}}}));
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 202) << r->body;
  auto queued = parse_object(r->body);
  const std::string id(queued["id"].as_string());
  EXPECT_EQ(queued["status"], "queued");
  EXPECT_EQ(str(queued["urls"].as_object()["get"]), "/v1/jobs/" + id);
  EXPECT_EQ(str(queued["urls"].as_object()["cancel"]), "/v1/jobs/" + id + "/cancel");

  // Prefer: wait answers 200 with the result when the job finishes in time.
  auto waited = c.post("/v1/jobs", job_request("The cat", 8), {{"Prefer", "wait=20"}});
  ASSERT_TRUE(waited);
  ASSERT_EQ(waited->status, 200) << waited->body;
  auto done = parse_object(waited->body);
  EXPECT_EQ(done["status"], "succeeded");
  EXPECT_EQ(done["result"].as_object()["object"], "text_completion");
  EXPECT_EQ(done["usage"].as_object()["completion_tokens"].as_int64(), 8);

  const auto deadline = SteadyClock::now() + 20s;
  json::object first;
  do {
    first = get_job(c, id);
  } while (first["status"] != "succeeded" && SteadyClock::now() < deadline);
  EXPECT_EQ(first["status"], "succeeded") << json::serialize(first);
  EXPECT_EQ(first["metadata"].as_object()["k"], "v");
  EXPECT_EQ(first["attempts"].as_int64(), 1);

  auto listed = list_all(c, {}, "succeeded");
  EXPECT_EQ(listed.size(), 2u);

  // A long job is canceled while it runs: the generation stops at the engine's next step and
  // the result is never recorded afterwards.
  auto long_job = c.post(
      "/v1/jobs", json::serialize(json::object{{"endpoint", "/v1/completions"},
                                               {"body", json::object{{"model", kModel},
                                                                     {"prompt", "A"},
                                                                     {"max_tokens", 16000},
                                                                     {"ignore_eos", true}}}}));
  ASSERT_TRUE(long_job && long_job->status == 202);
  const std::string long_id(parse_object(long_job->body)["id"].as_string());
  const auto running_by = SteadyClock::now() + 10s;
  while (get_job(c, long_id)["status"] != "running" && SteadyClock::now() < running_by) {
  }
  ASSERT_EQ(get_job(c, long_id)["status"], "running");
  auto canceled = c.post("/v1/jobs/" + long_id + "/cancel", "");
  ASSERT_TRUE(canceled);
  EXPECT_EQ(canceled->status, 200) << canceled->body;
  EXPECT_EQ(parse_object(canceled->body)["status"], "canceled");
  const auto stopped_by = SteadyClock::now() + 10s;
  double cancelled = 0;
  while (cancelled < 1 && SteadyClock::now() < stopped_by) {
    auto m = c.get("/metrics");
    ASSERT_TRUE(m);
    cancelled = metric_or_zero(m->body, model_series("gantry:request_cancelled_total"));
  }
  EXPECT_EQ(cancelled, 1) << "the running generation was cancelled in the engine";
  auto after = get_job(c, long_id);
  EXPECT_EQ(after["status"], "canceled");
  EXPECT_TRUE(after["result"].is_null());

  // Bad submissions are 400s at the door, never queued.
  EXPECT_EQ(c.post("/v1/jobs", R"({"endpoint":"/v1/embeddings","body":{}})")->status, 400);
  EXPECT_EQ(c.post("/v1/jobs", R"({"endpoint":"/v1/completions","body":{"prompt":"x"}})")->status,
            400);
  EXPECT_EQ(c.post("/v1/jobs", job_request("x", 4), {{"Cancel-After", "soon"}})->status, 400);
  EXPECT_EQ(c.post("/v1/jobs", job_request("x", 4, {{"webhook", "http://127.0.0.1:9/h"}}))->status,
            403)
      << "loopback webhooks are refused unless jobs.webhook_allow_loopback";
  EXPECT_EQ(c.get("/v1/jobs/job_0000000000000000")->status, 404);
}

TEST(Jobs, KillNineWhileRunningEveryJobSucceedsExactlyOnce) {
  // A configured node id: the restart is the same node, which reclaims its own leases at once
  // instead of waiting for them to lapse.
  const std::string toml =
      jobs_toml("retry_base_ms = 20\nmax_attempts = 5\nnode_id = \"node-1\"", "max_seqs = 16");
  auto s1 = start(toml);
  ASSERT_TRUE(s1);
  constexpr int kJobs = 500;
  auto ids = submit_many(*s1, kJobs, 4, [](int i) {
    return job_request("Once upon a time " + std::to_string(i), 48, {{"metadata", {{"n", i}}}});
  });
  // Kill once some have finished and the rest are queued or running.
  http::HttpClient c1(s1->client_options());
  const auto deadline = SteadyClock::now() + 30s;
  size_t done_at_kill = 0;
  while (SteadyClock::now() < deadline) {
    done_at_kill = list_all(c1, {}, "succeeded").size();
    if (done_at_kill >= 20)
      break;
  }
  s1->signal(SIGKILL);
  ASSERT_TRUE(s1->wait_exit(10s).has_value());
  ASSERT_LT(done_at_kill, static_cast<size_t>(kJobs)) << "the kill came after every job was done";

  auto s2 = start(toml, s1->data_dir());
  ASSERT_TRUE(s2);
  http::HttpClient c2(s2->client_options());
  std::vector<json::object> all;
  const auto finish_by = SteadyClock::now() + 180s; // generous for sanitizer builds
  while (SteadyClock::now() < finish_by) {
    all = list_all(c2, {});
    size_t open = 0;
    for (auto &j : all)
      open += j["status"] == "queued" || j["status"] == "running";
    if (open == 0)
      break;
    std::this_thread::sleep_for(100ms); // polling interval, not an assertion
  }
  ASSERT_EQ(all.size(), static_cast<size_t>(kJobs)) << "no job may be lost";
  std::set<std::string> submitted(ids.begin(), ids.end());
  int retried = 0;
  for (auto &j : all) {
    const std::string id(j["id"].as_string());
    EXPECT_TRUE(submitted.count(id)) << id;
    ASSERT_EQ(j["status"], "succeeded") << json::serialize(j);
    EXPECT_EQ(j["usage"].as_object()["completion_tokens"].as_int64(), 48) << id;
    EXPECT_EQ(str(j["result"].as_object()["id"]), "cmpl-" + id) << "one result, from this job";
    retried += j["attempts"].as_int64() > 1;
  }
  EXPECT_GT(retried, 0) << "some jobs were running at the kill and ran again";
  // Usage is keyed by the job id in the ledger: a job that ran twice is counted once.
  s2->signal(SIGTERM);
  ASSERT_TRUE(s2->wait_exit(30s).has_value());
  int64_t rows = -1;
  if (postgres_selected()) {
    auto n = TestDatabases::psql(s1->database_url(), "SELECT count(*) FROM usage_ledger");
    ASSERT_TRUE(n) << "psql on " << s1->database_url();
    rows = std::stoll(*n);
  } else {
    auto store = control::SqliteStore::open(s1->data_dir());
    ASSERT_TRUE(store);
    auto count = (*store)->count_usage();
    ASSERT_TRUE(count);
    rows = *count;
  }
  EXPECT_EQ(rows, kJobs) << "one usage row per job, however often it ran";
}

TEST(Jobs, OneProjectsThousandJobsDoNotStarveAnothersFive) {
  auto s = start(jobs_toml("workers = 4"));
  ASSERT_TRUE(s);
  http::HttpClient c(s->client_options());
  const std::string key_a = create_key(c, "tenant-a");
  const std::string key_b = create_key(c, "tenant-b");
  ASSERT_FALSE(key_a.empty());
  ASSERT_FALSE(key_b.empty());
  auto body = [](int i) { return job_request("Story " + std::to_string(i), 32); };
  auto a_ids = submit_many(*s, 1000, 8, body, bearer(key_a));
  auto b_ids = submit_many(*s, 5, 1, body, bearer(key_b));

  int64_t b_last_finish = 0;
  int64_t b_first_created = INT64_MAX;
  const auto deadline = SteadyClock::now() + 60s;
  for (const auto &id : b_ids) {
    json::object j;
    do {
      j = get_job(c, id, bearer(key_b));
    } while (j["status"] != "succeeded" && SteadyClock::now() < deadline);
    ASSERT_EQ(j["status"], "succeeded") << json::serialize(j);
    b_last_finish = std::max(b_last_finish, j["finished_at_ms"].as_int64());
    b_first_created = std::min(b_first_created, j["created_at_ms"].as_int64());
  }
  auto a_jobs = list_all(c, bearer(key_a));
  ASSERT_EQ(a_jobs.size(), 1000u) << "a project sees only its own jobs";
  // Counted from B's arrival: what A's jobs finished while A was still submitting depends on
  // the machine's speed, not on the schedule.
  int a_before = 0;
  for (auto &j : a_jobs) {
    const int64_t f = j["finished_at_ms"].as_int64();
    a_before += f >= b_first_created && f <= b_last_finish;
  }
  EXPECT_LT(a_before, 100) << "after B's first job arrived, " << a_before
                           << " of project A's finished before B's 5 did";
  // B cannot see A's jobs.
  EXPECT_EQ(c.get("/v1/jobs/" + a_ids[0], bearer(key_b))->status, 404);
}

TEST(Jobs, AProjectBeyondMaxQueuedJobsGets429) {
  auto s = start(jobs_toml("workers = 1\nmax_queued_jobs = 2"));
  ASSERT_TRUE(s);
  http::HttpClient c(s->client_options());
  const std::string slow = json::serialize(json::object{
      {"endpoint", "/v1/completions"},
      {"body",
       json::object{
           {"model", kModel}, {"prompt", "A"}, {"max_tokens", 400}, {"ignore_eos", true}}}});
  int accepted = 0, refused = 0;
  for (int i = 0; i < 10; ++i) {
    auto r = c.post("/v1/jobs", slow);
    ASSERT_TRUE(r);
    if (r->status == 202) {
      accepted++;
    } else {
      EXPECT_EQ(r->status, 429) << r->body;
      EXPECT_TRUE(r->header("Retry-After").has_value());
      refused++;
    }
  }
  // One running and two queued at most while the first 400-token job runs.
  EXPECT_LE(accepted, 4);
  EXPECT_GE(refused, 6);
}

TEST(Jobs, RateLimitedJobsAreDeferredAndPreferWaitTimesOutWith202) {
  auto s = start(jobs_toml("workers = 2"));
  ASSERT_TRUE(s);
  http::HttpClient c(s->client_options());
  // Three requests a minute: the first job's submission and execution, then the second
  // job's submission (submissions count against the key's RPM too).
  auto k = c.post("/admin/v1/keys", R"({"project":"slow","rpm":3})", admin());
  ASSERT_TRUE(k && k->status == 201);
  const std::string key(parse_object(k->body)["key"].as_string());

  auto first = c.post("/v1/jobs", job_request("One", 4),
                      {{"Authorization", "Bearer " + key}, {"Prefer", "wait=20"}});
  ASSERT_TRUE(first);
  ASSERT_EQ(first->status, 200) << first->body;

  // The key's requests for this minute are spent: the next job is refused by the rate limiter,
  // put back without spending an attempt, and the held POST answers 202 at its deadline.
  const auto t0 = SteadyClock::now();
  auto second = c.post("/v1/jobs", job_request("Two", 4),
                       {{"Authorization", "Bearer " + key}, {"Prefer", "wait=1"}});
  const auto held = SteadyClock::now() - t0;
  ASSERT_TRUE(second);
  EXPECT_EQ(second->status, 202) << second->body;
  EXPECT_GE(held, 900ms);
  EXPECT_LT(held, 5s);
  auto job = parse_object(second->body);
  EXPECT_EQ(job["status"], "queued");
  EXPECT_EQ(job["attempts"].as_int64(), 0) << "a deferral does not spend an attempt";
  auto m = c.get("/metrics");
  ASSERT_TRUE(m);
  EXPECT_GE(metric_or_zero(m->body, "gantry:jobs_total{outcome=\"deferred\"}"), 1);
}

// A loopback receiver that answers `fail_first` requests with 500, then 200 (or `final`).
struct Receiver {
  std::mutex mu;
  std::vector<http::Request> got;
  int fail_first = 0;
  int final_status = 200;
  std::unique_ptr<http::HttpServer> server;
  Receiver(int fail, int final_st) : fail_first(fail), final_status(final_st) {
    http::ServerOptions o;
    o.host = "127.0.0.1";
    o.port = 0;
    server = std::make_unique<http::HttpServer>(
        o, [this](http::Request &&req, std::shared_ptr<http::ResponseWriter> w) {
          int n;
          {
            std::lock_guard<std::mutex> lk(mu);
            got.push_back(req);
            n = static_cast<int>(got.size());
          }
          w->respond(http::Response::json(n <= fail_first ? 500 : final_status, "{}"));
        });
    EXPECT_TRUE(server->start());
  }
  ~Receiver() { server->shutdown(std::chrono::milliseconds(0)); }
  size_t count() {
    std::lock_guard<std::mutex> lk(mu);
    return got.size();
  }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(server->port()) + "/hook"; }
};

TEST(Jobs, WebhooksAreSignedRetriedWithAStableIdAndDisabledBy410) {
  Receiver rx(2, 200);
  auto s = start(jobs_toml("webhook_allow_loopback = true\nwebhook_retry_base_ms = 100"));
  ASSERT_TRUE(s);
  http::HttpClient c(s->client_options());
  const std::string key = create_key(c, "hooks");
  // Two rotations: the old secret stays valid during its grace, so both sign.
  auto r1 = c.post("/admin/v1/projects/hooks/webhook_secrets", "", admin());
  auto r2 = c.post("/admin/v1/projects/hooks/webhook_secrets", R"({"grace_s":3600})", admin());
  ASSERT_TRUE(r1 && r1->status == 201 && r2 && r2->status == 201);
  const std::string old_secret(parse_object(r1->body)["secret"].as_string());
  const std::string new_secret(parse_object(r2->body)["secret"].as_string());
  // Stored sealed under the pepper (audit M5): no file of the data directory (the database, its
  // WAL) holds either secret.
  for (const auto &f : std::filesystem::directory_iterator(s->data_dir())) {
    if (!f.is_regular_file())
      continue;
    std::ifstream in(f.path(), std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(in)), {});
    for (const auto &secret : {old_secret, new_secret})
      EXPECT_EQ(bytes.find(secret.substr(6)), std::string::npos) << f.path();
  }

  auto r = c.post("/v1/jobs", job_request("Hello", 4, {{"webhook", rx.url()}}), bearer(key));
  ASSERT_TRUE(r && r->status == 202) << (r ? r->body : "");
  const std::string id(parse_object(r->body)["id"].as_string());
  const auto deadline = SteadyClock::now() + 30s;
  while (rx.count() < 3 && SteadyClock::now() < deadline)
    std::this_thread::sleep_for(20ms);
  ASSERT_EQ(rx.count(), 3u) << "two failures, then delivered on the third attempt";
  std::lock_guard<std::mutex> lk(rx.mu);
  const auto msg_id = rx.got[0].header("webhook-id");
  ASSERT_TRUE(msg_id);
  for (const auto &req : rx.got) {
    ASSERT_TRUE(req.header("webhook-id") && req.header("webhook-timestamp") &&
                req.header("webhook-signature"));
    EXPECT_EQ(std::string(*req.header("webhook-id")), std::string(*msg_id))
        << "webhook-id is stable across retries";
    for (const auto &secret : {old_secret, new_secret}) {
      EXPECT_TRUE(control::verify_webhook(secret, *req.header("webhook-id"),
                                          *req.header("webhook-timestamp"), req.body,
                                          *req.header("webhook-signature")));
    }
    EXPECT_FALSE(control::verify_webhook(
        control::generate_webhook_secret(), *req.header("webhook-id"),
        *req.header("webhook-timestamp"), req.body, *req.header("webhook-signature")));
  }
  auto payload = parse_object(rx.got[2].body);
  EXPECT_EQ(payload["type"], "job.completed");
  EXPECT_EQ(str(payload["data"].as_object()["id"]), id);
  EXPECT_EQ(payload["data"].as_object()["status"], "succeeded");

  // The delivery record: delivered after 3 attempts.
  json::object d;
  const auto rec_deadline = SteadyClock::now() + 10s;
  do {
    auto dr = c.get("/v1/jobs/" + id + "/deliveries", bearer(key));
    ASSERT_TRUE(dr && dr->status == 200);
    auto data = parse_object(dr->body)["data"].as_array();
    ASSERT_EQ(data.size(), 1u);
    d = data[0].as_object();
  } while (d["status"] != "delivered" && SteadyClock::now() < rec_deadline);
  EXPECT_EQ(d["status"], "delivered");
  EXPECT_EQ(d["attempts"].as_int64(), 3);
  EXPECT_EQ(str(d["id"]), std::string(*msg_id));
  auto m = c.get("/metrics");
  ASSERT_TRUE(m);
  EXPECT_EQ(metric_value(m->body, "gantry:webhook_attempts_total{outcome=\"failed\"}"), 2.0);
  EXPECT_EQ(metric_value(m->body, "gantry:webhook_attempts_total{outcome=\"delivered\"}"), 1.0);

  // 410 Gone disables the endpoint: no retries.
  Receiver gone(0, 410);
  auto g = c.post("/v1/jobs",
                  job_request("Bye", 4,
                              {{"webhook", gone.url()},
                               {"webhook_events", json::array{"started", "completed"}}}),
                  bearer(key));
  ASSERT_TRUE(g && g->status == 202);
  const std::string gid(parse_object(g->body)["id"].as_string());
  json::array ds;
  const auto gone_deadline = SteadyClock::now() + 20s;
  for (;;) {
    auto dr = c.get("/v1/jobs/" + gid + "/deliveries", bearer(key));
    ASSERT_TRUE(dr && dr->status == 200);
    ds = parse_object(dr->body)["data"].as_array();
    bool settled = ds.size() == 2;
    for (auto &x : ds)
      settled = settled && x.as_object()["status"] != "pending";
    if (settled || SteadyClock::now() > gone_deadline)
      break;
    std::this_thread::sleep_for(20ms);
  }
  ASSERT_EQ(ds.size(), 2u);
  for (auto &x : ds)
    EXPECT_EQ(x.as_object()["status"], "disabled") << json::serialize(x);
  EXPECT_EQ(gone.count(), 1u) << "one 410, then the endpoint is never called again";
}

// A multipart/form-data upload as the openai SDK sends it.
std::pair<std::string, http::Headers> upload(const std::string &content,
                                             const http::Headers &auth = {},
                                             const std::string &purpose = "batch") {
  const std::string boundary = "----gantry-test-boundary";
  std::string body = "--" + boundary +
                     "\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\n" + purpose +
                     "\r\n--" + boundary +
                     "\r\nContent-Disposition: form-data; name=\"file\"; filename=\"in.jsonl\"\r\n"
                     "Content-Type: application/jsonl\r\n\r\n" +
                     content + "\r\n--" + boundary + "--\r\n";
  http::Headers h = auth;
  h.push_back({"Content-Type", "multipart/form-data; boundary=" + boundary});
  return {std::move(body), std::move(h)};
}

Result<http::ClientResponse> post_file(http::HttpClient &c, const std::string &content,
                                       const http::Headers &auth = {}) {
  auto [body, h] = upload(content, auth);
  return c.post("/v1/files", std::move(body), std::move(h));
}

std::string error_type(const std::string &body) {
  auto o = parse_object(body);
  if (!o.contains("error") || !o["error"].is_object())
    return "";
  return str(o["error"].as_object()["type"]);
}

TEST(Jobs, FilesAreBoundedPerProjectDeletedWithOpenAIsShapeAndOwnedByTheirProject) {
  auto s = start(jobs_toml("max_files = 2\nmax_file_bytes = 1000"));
  ASSERT_TRUE(s);
  http::HttpClient c(s->client_options());
  const std::string key_a = create_key(c, "files-a");
  const std::string key_b = create_key(c, "files-b");
  ASSERT_FALSE(key_a.empty());
  ASSERT_FALSE(key_b.empty());
  std::vector<std::string> ids;
  for (int i = 0; i < 2; ++i) {
    auto r = post_file(c, std::string(300, 'a'), bearer(key_a));
    ASSERT_TRUE(r && r->status == 200) << (r ? r->body : r.error().message);
    ids.push_back(str(parse_object(r->body)["id"]));
    EXPECT_EQ(ids.back().rfind("file-", 0), 0u) << ids.back();
    EXPECT_EQ(ids.back().size(), 5u + 22u) << "file- and 128 random bits";
  }
  // The project's third file is over its count quota; another project has its own.
  auto third = post_file(c, "x", bearer(key_a));
  ASSERT_TRUE(third);
  EXPECT_EQ(third->status, 429) << third->body;
  EXPECT_EQ(error_type(third->body), "insufficient_quota") << third->body;
  auto other = post_file(c, "x", bearer(key_b));
  ASSERT_TRUE(other);
  EXPECT_EQ(other->status, 200) << other->body;
  // One file larger than the project may store at all: a 400.
  auto huge = post_file(c, std::string(1001, 'h'), bearer(key_b));
  ASSERT_TRUE(huge);
  EXPECT_EQ(huge->status, 400) << huge->body;
  EXPECT_EQ(error_type(huge->body), "invalid_request_error");
  // Bytes: 300 + 800 > 1000 for project B.
  auto too_many_bytes = post_file(c, std::string(1000, 'b'), bearer(key_b));
  ASSERT_TRUE(too_many_bytes);
  EXPECT_EQ(too_many_bytes->status, 429) << too_many_bytes->body;

  // Metadata without content; another project cannot see or delete the file.
  auto meta = c.get("/v1/files/" + ids[0], bearer(key_a));
  ASSERT_TRUE(meta && meta->status == 200);
  EXPECT_EQ(parse_object(meta->body)["bytes"].as_int64(), 300);
  auto not_yours = c.request(http::Method::kDelete, "/v1/files/" + ids[0], {}, bearer(key_b));
  ASSERT_TRUE(not_yours);
  EXPECT_EQ(not_yours->status, 404);
  auto del = c.request(http::Method::kDelete, "/v1/files/" + ids[0], {}, bearer(key_a));
  ASSERT_TRUE(del);
  ASSERT_EQ(del->status, 200) << del->body;
  auto d = parse_object(del->body);
  EXPECT_EQ(str(d["id"]), ids[0]);
  EXPECT_EQ(str(d["object"]), "file");
  EXPECT_EQ(d["deleted"], true);
  EXPECT_EQ(c.get("/v1/files/" + ids[0], bearer(key_a))->status, 404);
  EXPECT_EQ(c.get("/v1/files/" + ids[0] + "/content", bearer(key_a))->status, 404);
  auto again = c.request(http::Method::kDelete, "/v1/files/" + ids[0], {}, bearer(key_a));
  EXPECT_EQ(again->status, 404);
  // Deleting freed the room.
  auto after = post_file(c, "x", bearer(key_a));
  ASSERT_TRUE(after);
  EXPECT_EQ(after->status, 200) << after->body;
}

TEST(Jobs, StoredJobsAreBoundedPerProjectEvenOnceFinished) {
  auto s = start(jobs_toml("max_stored_jobs = 2"));
  ASSERT_TRUE(s);
  http::HttpClient c(s->client_options());
  for (int i = 0; i < 2; ++i) {
    auto r = c.post("/v1/jobs", job_request("Once", 2), {{"Prefer", "wait=30"}});
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 200) << r->body; // finished: no longer queued, still stored
  }
  auto r = c.post("/v1/jobs", job_request("Once", 2));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 429) << r->body;
  EXPECT_EQ(error_type(r->body), "insufficient_quota") << r->body;
}

TEST(Jobs, SubmissionsCountAgainstTheKeysRequestsPerMinute) {
  auto s = start(jobs_toml("workers = 1"));
  ASSERT_TRUE(s);
  http::HttpClient c(s->client_options());
  auto k = c.post("/admin/v1/keys", R"({"project":"rpm","rpm":2})", admin());
  ASSERT_TRUE(k && k->status == 201);
  const http::Headers h = bearer(std::string(parse_object(k->body)["key"].as_string()));
  auto file = post_file(c, "{}", h);
  ASSERT_TRUE(file);
  EXPECT_EQ(file->status, 200) << file->body;
  // The file upload was one request of two; the job's submission is the second, and its
  // execution is then deferred (not this test's concern).
  auto job = c.post("/v1/jobs", job_request("One", 2), h);
  ASSERT_TRUE(job);
  EXPECT_EQ(job->status, 202) << job->body;
  for (auto target : {"/v1/jobs", "/v1/files", "/v1/batches"}) {
    Result<http::ClientResponse> r =
        std::string(target) == "/v1/files"
            ? post_file(c, "{}", h)
            : c.post(target,
                     std::string(target) == "/v1/jobs"
                         ? job_request("Two", 2)
                         : R"({"input_file_id":"file-x","endpoint":"/v1/completions"})",
                     h);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 429) << target << ": " << r->body;
    EXPECT_EQ(error_type(r->body), "rate_limit_error") << target;
    EXPECT_TRUE(r->header("Retry-After").has_value()) << target;
  }
}

TEST(Jobs, ListingPagesInSubmissionOrderWithRandomIds) {
  auto s = start(jobs_toml("workers = 1"));
  ASSERT_TRUE(s);
  http::HttpClient c(s->client_options());
  std::vector<std::string> ids;
  for (int i = 0; i < 7; ++i) {
    auto r = c.post("/v1/jobs", job_request("List " + std::to_string(i), 1));
    ASSERT_TRUE(r && r->status == 202);
    ids.push_back(str(parse_object(r->body)["id"]));
    EXPECT_EQ(ids.back().size(), 4u + 22u) << ids.back();
  }
  std::vector<std::string> listed;
  std::string after;
  for (int pages = 0; pages < 10; ++pages) {
    auto r = c.get("/v1/jobs?limit=3" + (after.empty() ? "" : "&after=" + after));
    ASSERT_TRUE(r && r->status == 200) << (r ? r->body : r.error().message);
    auto o = parse_object(r->body);
    for (auto &j : o["data"].as_array()) {
      listed.push_back(str(j.as_object()["id"]));
      EXPECT_FALSE(j.as_object().contains("body")) << "listings carry no request bodies";
    }
    if (!o["has_more"].as_bool())
      break;
    after = listed.back();
  }
  EXPECT_EQ(listed, ids) << "pages follow submission order, though ids are random";
}

TEST(Jobs, ABatchRunsToCompletionWithItsOutputFile) {
  auto s = start(jobs_toml("workers = 2"));
  ASSERT_TRUE(s);
  http::HttpClient c(s->client_options());
  std::string lines;
  for (int i = 0; i < 3; ++i)
    lines += json::serialize(json::object{
                 {"custom_id", "line-" + std::to_string(i)},
                 {"method", "POST"},
                 {"url", "/v1/completions"},
                 {"body", json::object{{"model", kModel}, {"prompt", "Hi"}, {"max_tokens", 2}}}}) +
             "\n";
  auto f = post_file(c, lines);
  ASSERT_TRUE(f && f->status == 200) << (f ? f->body : f.error().message);
  const std::string file_id = str(parse_object(f->body)["id"]);
  auto b = c.post("/v1/batches", json::serialize(json::object{{"input_file_id", file_id},
                                                              {"endpoint", "/v1/completions"},
                                                              {"completion_window", "24h"}}));
  ASSERT_TRUE(b && b->status == 200) << (b ? b->body : b.error().message);
  const std::string batch_id = str(parse_object(b->body)["id"]);
  EXPECT_EQ(batch_id.rfind("batch_", 0), 0u);
  json::object batch;
  const auto deadline = SteadyClock::now() + 60s;
  while (SteadyClock::now() < deadline) {
    auto g = c.get("/v1/batches/" + batch_id);
    ASSERT_TRUE(g && g->status == 200);
    batch = parse_object(g->body);
    if (batch["status"] == "completed" || batch["status"] == "failed")
      break;
    std::this_thread::sleep_for(50ms); // polling interval, not an assertion
  }
  ASSERT_EQ(batch["status"], "completed") << json::serialize(batch);
  auto out = c.get("/v1/files/" + str(batch["output_file_id"]) + "/content");
  ASSERT_TRUE(out && out->status == 200);
  EXPECT_EQ(std::count(out->body.begin(), out->body.end(), '\n'), 3) << out->body;
}

TEST(Jobs, ABatchWhoseOutputExceedsTheCapFailsInsteadOfRetrying) {
  auto s = start(jobs_toml("workers = 2\nmax_batch_output_bytes = 100"));
  ASSERT_TRUE(s);
  http::HttpClient c(s->client_options());
  std::string lines;
  for (int i = 0; i < 2; ++i)
    lines += json::serialize(json::object{
                 {"custom_id", "line-" + std::to_string(i)},
                 {"url", "/v1/completions"},
                 {"body", json::object{{"model", kModel}, {"prompt", "Hi"}, {"max_tokens", 4}}}}) +
             "\n";
  auto f = post_file(c, lines);
  ASSERT_TRUE(f && f->status == 200);
  auto b = c.post("/v1/batches",
                  json::serialize(json::object{{"input_file_id", str(parse_object(f->body)["id"])},
                                               {"endpoint", "/v1/completions"}}));
  ASSERT_TRUE(b && b->status == 200) << (b ? b->body : b.error().message);
  const std::string batch_id = str(parse_object(b->body)["id"]);
  json::object batch;
  const auto deadline = SteadyClock::now() + 60s;
  while (SteadyClock::now() < deadline) {
    batch = parse_object(c.get("/v1/batches/" + batch_id)->body);
    if (batch["status"] != "in_progress" && batch["status"] != "finalizing")
      break;
    std::this_thread::sleep_for(50ms); // polling interval, not an assertion
  }
  ASSERT_EQ(batch["status"], "failed") << json::serialize(batch);
  EXPECT_NE(json::serialize(batch["errors"]).find("output_too_large"), std::string::npos)
      << json::serialize(batch);
}

} // namespace
} // namespace gantry::testing
