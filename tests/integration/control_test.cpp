// The control plane against the real server: keys, rate limits, budgets, cost, breakers,
// idempotency, budget alert webhooks, and the ledger surviving kill -9.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <csignal>
#include <cstdio>
#include <regex>
#include <sstream>
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

constexpr const char *kAdminToken = "test-admin-token-0123456789abcdef01234";

std::unique_ptr<ServerProcess> start_server(std::string toml = {},
                                            std::vector<std::string> env = {}) {
  ServerProcessOptions o;
  o.config_toml = std::move(toml);
  o.env = std::move(env);
  o.env.push_back(std::string("GANTRY_ADMIN_TOKEN=") + kAdminToken);
  auto s = ServerProcess::start(std::move(o));
  EXPECT_TRUE(s) << (s ? "" : s.error().message);
  return s ? std::move(s).value() : nullptr;
}

// Runs the gantry CLI and returns its stdout.
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

http::Headers admin() { return {{"Authorization", std::string("Bearer ") + kAdminToken}}; }
http::Headers bearer(const std::string &key) { return {{"Authorization", "Bearer " + key}}; }

// Creates a key through the admin API; returns {id, key}.
std::pair<std::string, std::string> admin_create_key(http::HttpClient &c, json::object body) {
  auto r = c.post("/admin/v1/keys", json::serialize(body), admin());
  EXPECT_TRUE(r);
  if (!r)
    return {};
  EXPECT_EQ(r->status, 201) << r->body;
  auto o = parse_object(r->body);
  return {std::string(o["id"].as_string()), std::string(o["key"].as_string())};
}

std::string toml_for_model(const std::string &model_extra, const std::string &top = {}) {
  return top + "\n[[models]]\npath = \"" + std::string(GANTRY_MODELS_DIR) +
         "/stories260K.gguf\"\n" + model_extra + "\n";
}

TEST(Control, KeysGateEveryV1CallOnceOneExists) {
  auto s = start_server();
  ASSERT_TRUE(s);
  http::HttpClient c(s->client_options());
  // No keys yet: open (a laptop's first run), whatever token a client sends.
  auto open = c.get("/v1/models", bearer("sk-anything"));
  ASSERT_TRUE(open);
  EXPECT_EQ(open->status, 200);

  const std::string out =
      run_cli("keys create --project alpha --json " + store_flags(s->data_dir()));
  auto created = parse_object(out);
  const std::string key(created["key"].as_string());
  ASSERT_EQ(key.substr(0, 4), "gsk_");
  // The server polls the key generation every 250 ms.
  const auto deadline = SteadyClock::now() + 2s;
  int status = 0;
  while (SteadyClock::now() < deadline) {
    auto r = c.get("/v1/models");
    ASSERT_TRUE(r);
    status = r->status;
    if (status == 401)
      break;
    std::this_thread::sleep_for(50ms);
  }
  ASSERT_EQ(status, 401);
  auto none = c.post("/v1/completions", completion_body("Hi", {{"max_tokens", 2}}));
  ASSERT_TRUE(none);
  auto err = expect_error(*none, 401, "authentication_error", "");
  EXPECT_EQ(err["code"], "invalid_api_key");
  auto wrong = c.post("/v1/completions", completion_body("Hi", {{"max_tokens", 2}}),
                      bearer(key.substr(0, key.size() - 1) + (key.back() == 'a' ? "b" : "a")));
  ASSERT_TRUE(wrong);
  EXPECT_EQ(wrong->status, 401);
  EXPECT_EQ(wrong->body.find(key.substr(4)), std::string::npos) << "the key leaked";
  auto ok = c.post("/v1/completions", completion_body("Hi", {{"max_tokens", 2}}), bearer(key));
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->status, 200) << ok->body;
  ASSERT_TRUE(ok->header("x-gantry-cost-usd"));
  // The key never shows up in what the server exposes.
  auto metrics = c.get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_EQ(metrics->body.find(key.substr(4)), std::string::npos);
  auto list = c.get("/admin/v1/keys", admin());
  ASSERT_TRUE(list);
  EXPECT_EQ(list->body.find(key.substr(17)), std::string::npos) << "a secret leaked";
  EXPECT_NE(list->body.find(std::string(created["id"].as_string())), std::string::npos);
}

TEST(Control, RevokedKeyIsRefusedWithinASecond) {
  auto s = start_server();
  ASSERT_TRUE(s);
  http::HttpClient c(s->client_options());
  auto [id, key] = admin_create_key(c, {{"project", "p"}});
  auto ok = c.get("/v1/models", bearer(key));
  ASSERT_TRUE(ok);
  ASSERT_EQ(ok->status, 200);
  // Revoked from another process, as an operator would.
  run_cli("keys revoke " + id + " " + store_flags(s->data_dir()));
  const auto t0 = SteadyClock::now();
  int status = 200;
  while (SteadyClock::now() - t0 < 3s) {
    auto r = c.get("/v1/models", bearer(key));
    ASSERT_TRUE(r);
    status = r->status;
    if (status == 401)
      break;
    std::this_thread::sleep_for(20ms);
  }
  const auto took = SteadyClock::now() - t0;
  EXPECT_EQ(status, 401);
  EXPECT_LT(took, 1s);
}

// Audit H3, reproduced: two keys, revoke both, and the anonymous API must stay closed.
TEST(Control, RevokingEveryKeyNeverReopensTheApi) {
  auto s = start_server();
  ASSERT_TRUE(s);
  http::HttpClient c(s->client_options());
  auto [id1, key1] = admin_create_key(c, {{"project", "p"}});
  auto [id2, key2] = admin_create_key(c, {{"project", "p"}});
  auto anon = c.post("/v1/completions", completion_body("Hi", {{"max_tokens", 2}}));
  ASSERT_TRUE(anon);
  ASSERT_EQ(anon->status, 401);
  for (const std::string &id : {id1, id2}) {
    auto r = c.post("/admin/v1/keys/" + id + "/revoke", "{}", admin());
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 200) << r->body;
  }
  // Once the revoked key is refused, the server has re-read the keys (it polls every 250 ms).
  const auto deadline = SteadyClock::now() + 3s;
  int status = 0;
  while (SteadyClock::now() < deadline) {
    auto r = c.get("/v1/models", bearer(key2));
    ASSERT_TRUE(r);
    status = r->status;
    if (status == 401)
      break;
    std::this_thread::sleep_for(20ms);
  }
  ASSERT_EQ(status, 401);
  auto after = c.post("/v1/completions", completion_body("Hi", {{"max_tokens", 2}}));
  ASSERT_TRUE(after);
  EXPECT_EQ(after->status, 401) << after->body;
  auto jobs = c.get("/v1/jobs");
  ASSERT_TRUE(jobs);
  EXPECT_EQ(jobs->status, 401) << jobs->body;
}

TEST(Control, RotationKeepsTheOldSecretDuringGrace) {
  auto s = start_server();
  ASSERT_TRUE(s);
  http::HttpClient c(s->client_options());
  auto [id, old_key] = admin_create_key(c, {{"project", "p"}});
  auto r = c.post("/admin/v1/keys/" + id + "/rotate", R"({"grace":"1h"})", admin());
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  const std::string new_key(parse_object(r->body)["key"].as_string());
  EXPECT_NE(new_key, old_key);
  EXPECT_EQ(c.get("/v1/models", bearer(old_key))->status, 200);
  EXPECT_EQ(c.get("/v1/models", bearer(new_key))->status, 200);
  auto r0 = c.post("/admin/v1/keys/" + id + "/rotate", R"({"grace":0})", admin());
  ASSERT_TRUE(r0);
  const std::string third(parse_object(r0->body)["key"].as_string());
  EXPECT_EQ(c.get("/v1/models", bearer(new_key))->status, 401);
  EXPECT_EQ(c.get("/v1/models", bearer(third))->status, 200);
}

TEST(Control, OverRpmIs429WithOpenAIHeaders) {
  auto s = start_server();
  ASSERT_TRUE(s);
  http::HttpClient c(s->client_options());
  auto [id, key] = admin_create_key(c, {{"project", "p"}, {"rpm", 2}, {"tpm", 1000}});
  const std::string body = completion_body("Once", {{"max_tokens", 4}});
  auto a = c.post("/v1/completions", body, bearer(key));
  ASSERT_TRUE(a);
  ASSERT_EQ(a->status, 200) << a->body;
  EXPECT_EQ(a->header("x-ratelimit-limit-requests").value_or(""), "2");
  EXPECT_EQ(a->header("x-ratelimit-remaining-requests").value_or(""), "1");
  EXPECT_EQ(a->header("x-ratelimit-limit-tokens").value_or(""), "1000");
  ASSERT_TRUE(a->header("x-ratelimit-reset-requests"));
  EXPECT_TRUE(a->header("x-ratelimit-reset-requests")->ends_with("s"));
  ASSERT_TRUE(a->header("x-ratelimit-remaining-tokens"));
  ASSERT_EQ(c.post("/v1/completions", body, bearer(key))->status, 200);
  auto over = c.post("/v1/completions", body, bearer(key));
  ASSERT_TRUE(over);
  auto err = expect_error(*over, 429, "rate_limit_error", "");
  EXPECT_EQ(err["code"], "rate_limit_exceeded");
  ASSERT_TRUE(over->header("Retry-After"));
  ASSERT_TRUE(over->header("retry-after-ms"));
  EXPECT_GT(std::stoi(std::string(*over->header("retry-after-ms"))), 0);
  EXPECT_EQ(over->header("x-ratelimit-remaining-requests").value_or(""), "0");
  auto metrics = c.get("/metrics");
  EXPECT_EQ(metric_or_zero(metrics->body, "gantry:requests_rejected_total{reason=\"rate_limit\"}"),
            1.0);
}

TEST(Control, BudgetOf10RequestsAdmitsAtMost11Of100Concurrent) {
  // $1 per output token: max_tokens 10 reserves $10; a $100 budget fits 10 such requests.
  auto s = start_server(toml_for_model("price_output_per_mtok = 1000000.0\nmax_seqs = 16"));
  ASSERT_TRUE(s);
  http::HttpClient c(s->client_options());
  auto [id, key] = admin_create_key(c, {{"project", "spend"}});
  auto b = c.post(
      "/admin/v1/budgets",
      R"({"owner_kind":"project","owner_id":"spend","period":"month","spend_limit_usd":100})",
      admin());
  ASSERT_TRUE(b);
  ASSERT_EQ(b->status, 200) << b->body;
  std::atomic<int> ok{0}, quota{0}, other{0};
  std::vector<std::thread> ts;
  const std::string body = completion_body("Once upon", {{"max_tokens", 10}, {"ignore_eos", true}});
  for (int i = 0; i < 100; ++i) {
    ts.emplace_back([&] {
      http::HttpClient cc(s->client_options(60s));
      auto r = cc.post("/v1/completions", body, bearer(key));
      if (!r) {
        ++other;
      } else if (r->status == 200) {
        ++ok;
      } else if (r->status == 429 && r->body.find("insufficient_quota") != std::string::npos) {
        ++quota;
      } else {
        ++other;
      }
    });
  }
  for (auto &t : ts)
    t.join();
  EXPECT_GE(ok.load(), 10);
  EXPECT_LE(ok.load(), 11);
  EXPECT_EQ(ok + quota, 100);
  EXPECT_EQ(other.load(), 0);
  // Once spent, a single request gets the non-retryable error.
  auto r = c.post("/v1/completions", body, bearer(key));
  ASSERT_TRUE(r);
  auto err = expect_error(*r, 429, "insufficient_quota", "");
  EXPECT_EQ(err["code"], "insufficient_quota");
  EXPECT_FALSE(r->header("Retry-After")) << "a client must not retry";
  // Usage by model and by key adds up to what the responses cost.
  auto u = c.get("/admin/v1/usage?group_by=key", admin());
  ASSERT_TRUE(u);
  auto uo = parse_object(u->body);
  double total = 0;
  int64_t requests = 0;
  for (const auto &row : uo["data"].as_array()) {
    if (row.as_object().at("key").as_string() != id)
      continue;
    total += row.as_object().at("cost_usd").to_number<double>();
    requests += row.as_object().at("requests").as_int64();
  }
  EXPECT_NEAR(total, 10.0 * ok.load(), 1e-6);
}

TEST(Control, SpendBreakerOpensAndAdminResetCloses) {
  auto s = start_server(toml_for_model(
      "price_output_per_mtok = 1000000.0\nbreaker_usd_per_minute = 5.0\nbreaker_cooldown_s = 600"));
  ASSERT_TRUE(s);
  http::HttpClient c(s->client_options());
  const std::string body = completion_body("Once", {{"max_tokens", 8}, {"ignore_eos", true}});
  auto first = c.post("/v1/completions", body);
  ASSERT_TRUE(first);
  ASSERT_EQ(first->status, 200);
  EXPECT_EQ(first->header("x-gantry-cost-usd").value_or(""), "8.00000000");
  auto tripped = c.post("/v1/completions", body);
  ASSERT_TRUE(tripped);
  auto err = expect_error(*tripped, 503, "server_error", "model");
  EXPECT_EQ(err["code"], "circuit_open");
  // Every 5xx lands in the error tracker, grouped, with its tags.
  ASSERT_EQ(c.post("/v1/completions", body)->status, 503);
  auto groups = c.get("/admin/v1/errors", admin());
  ASSERT_TRUE(groups);
  ASSERT_EQ(groups->status, 200) << groups->body;
  auto g = parse_object(groups->body);
  ASSERT_EQ(g["data"].as_array().size(), 1u) << groups->body;
  auto g0 = g["data"].as_array()[0].as_object();
  EXPECT_EQ(g0["count"].as_int64(), 2);
  EXPECT_EQ(g0["sample"].as_object()["tags"].as_object()["model"], "stories260K");
  auto reset = c.post("/admin/v1/breakers/stories260K/reset", "", admin());
  ASSERT_TRUE(reset);
  EXPECT_EQ(reset->status, 200);
  EXPECT_EQ(c.post("/v1/completions", body)->status, 200);
}

TEST(Control, ResponseCacheHitsCostNoTokensAndNothing) {
  auto s = start_server(toml_for_model("price_output_per_mtok = 1000000.0"));
  ASSERT_TRUE(s);
  http::HttpClient c(s->client_options());
  // TPM 100: the first (greedy, cacheable) request reserves 2 + 64 tokens and uses them.
  auto [id, key] = admin_create_key(c, {{"project", "p"}, {"tpm", 100}});
  const std::string body =
      completion_body("Once", {{"max_tokens", 64}, {"ignore_eos", true}, {"temperature", 0}});
  auto miss = c.post("/v1/completions", body, bearer(key));
  ASSERT_TRUE(miss);
  ASSERT_EQ(miss->status, 200) << miss->body;
  EXPECT_EQ(miss->header("x-gantry-cache").value_or(""), "miss");
  const std::string left(miss->header("x-ratelimit-remaining-tokens").value_or(""));
  // A live repeat would need 66 tokens and be refused; hits reserve none and cost $0.
  for (int i = 0; i < 5; ++i) {
    auto hit = c.post("/v1/completions", body, bearer(key));
    ASSERT_TRUE(hit);
    ASSERT_EQ(hit->status, 200) << hit->body;
    EXPECT_EQ(hit->header("x-gantry-cache").value_or(""), "hit");
    EXPECT_EQ(hit->header("x-gantry-cost-usd").value_or(""), "0.00000000");
  }
  auto live = c.post("/v1/completions", body,
                     {{"Authorization", "Bearer " + key}, {"Cache-Control", "no-cache"}});
  ASSERT_TRUE(live);
  EXPECT_EQ(live->status, 429) << live->body;
  // The ledger has all 7 calls (one refused), the hits marked as cached at cost 0.
  auto u = c.get("/admin/v1/usage?group_by=key", admin());
  ASSERT_TRUE(u);
  auto usage = parse_object(u->body);
  bool found = false;
  for (const auto &row : usage["data"].as_array()) {
    if (row.as_object().at("key").as_string() != id)
      continue;
    found = true;
    EXPECT_EQ(row.as_object().at("requests").as_int64(), 7);
    EXPECT_NEAR(row.as_object().at("cost_usd").to_number<double>(), 64.0, 1e-6);
  }
  EXPECT_TRUE(found);
}

// Audit H5: embeddings were admitted with 0 tokens and settled with none, so a key with
// tpm=100 and a 100-token day quota pushed thousands of tokens through them at no cost.
TEST(Control, EmbeddingsAreMeteredAgainstTpmQuotaAndCost) {
  // $1 per input token, so the ledger's cost is the charged input tokens.
  auto s = start_server(toml_for_model("price_input_per_mtok = 1000000.0"));
  ASSERT_TRUE(s);
  http::HttpClient c(s->client_options());
  auto [id, key] = admin_create_key(c, {{"project", "emb"}, {"tpm", 100}});
  auto b = c.post("/admin/v1/budgets",
                  json::serialize(json::object{{"owner_kind", "key"},
                                               {"owner_id", id},
                                               {"period", "day"},
                                               {"token_quota", 100},
                                               {"spend_limit_usd", 0}}),
                  admin());
  ASSERT_TRUE(b);
  ASSERT_EQ(b->status, 200) << b->body;
  json::object body{{"model", kModel},
                    {"input", json::array{"Once upon a time there was a little girl",
                                          "She liked to play in the park", "The sun was warm"}}};
  const std::string text = json::serialize(body);
  const http::Headers h{{"Authorization", "Bearer " + key}, {"Cache-Control", "no-store"}};
  int64_t accepted_tokens = 0;
  int ok = 0;
  http::ClientResponse refused;
  for (int i = 0; i < 30; ++i) { // 30 × the prompt is far over 100 tokens
    auto r = c.post("/v1/embeddings", text, h);
    ASSERT_TRUE(r);
    if (r->status != 200) {
      refused = *r;
      break;
    }
    ++ok;
    const int64_t pt =
        parse_object(r->body)["usage"].as_object()["prompt_tokens"].to_number<int64_t>();
    ASSERT_GT(pt, 0);
    accepted_tokens += pt;
  }
  EXPECT_GE(ok, 1);
  EXPECT_LE(accepted_tokens, 100);
  ASSERT_EQ(refused.status, 429) << "embeddings were never refused: " << accepted_tokens
                                 << " tokens through a 100-token key";
  // The ledger has the accepted calls' input tokens, priced at the model's input price.
  auto u = c.get("/admin/v1/usage?group_by=key", admin());
  ASSERT_TRUE(u);
  auto usage = parse_object(u->body);
  bool found = false;
  for (const auto &row : usage["data"].as_array()) {
    if (row.as_object().at("key").as_string() != id)
      continue;
    found = true;
    EXPECT_EQ(row.as_object().at("requests").as_int64(), ok + 1);
    EXPECT_EQ(row.as_object().at("input_tokens").as_int64(), accepted_tokens);
    EXPECT_NEAR(row.as_object().at("cost_usd").to_number<double>(),
                static_cast<double>(accepted_tokens), 1e-6);
  }
  EXPECT_TRUE(found) << u->body;
}

TEST(Control, HourlyPricedModelChargesEachRequestItsShareOfEngineTime) {
  // $3600/hour = $1 per engine-second: the cost header is the request's engine time.
  auto s = start_server(toml_for_model("price_per_hour = 3600.0"));
  ASSERT_TRUE(s);
  http::HttpClient c(s->client_options());
  const auto t0 = SteadyClock::now();
  auto r = c.post("/v1/completions",
                  completion_body("Once upon a time",
                                  {{"max_tokens", 64}, {"ignore_eos", true}, {"cache", false}}));
  const double wall = std::chrono::duration<double>(SteadyClock::now() - t0).count();
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  const double cost = std::stod(std::string(r->header("x-gantry-cost-usd").value_or("-1")));
  EXPECT_GT(cost, 0.0);
  EXPECT_LT(cost, wall); // a share of the engine's time, never more than the request took
  // The ledger has the same figure.
  auto u = c.get("/admin/v1/usage?group_by=model", admin());
  ASSERT_TRUE(u);
  auto rows = parse_object(u->body)["data"].as_array();
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_NEAR(rows[0].as_object()["cost_usd"].to_number<double>(), cost, 1e-6);
  // Embeddings pay for their engine time too (audit H5): their inputs run alone between steps.
  const auto t1 = SteadyClock::now();
  auto e = c.post(
      "/v1/embeddings",
      json::serialize(json::object{{"model", kModel},
                                   {"input", json::array{"Once upon a time there was a little girl",
                                                         "She liked to play in the park"}}}),
      {{"Cache-Control", "no-store"}});
  const double emb_wall = std::chrono::duration<double>(SteadyClock::now() - t1).count();
  ASSERT_TRUE(e);
  ASSERT_EQ(e->status, 200) << e->body;
  u = c.get("/admin/v1/usage?group_by=model", admin());
  ASSERT_TRUE(u);
  rows = parse_object(u->body)["data"].as_array();
  ASSERT_EQ(rows.size(), 1u);
  const double emb_cost = rows[0].as_object()["cost_usd"].to_number<double>() - cost;
  EXPECT_GT(emb_cost, 0.0) << "the embeddings' engine time was not charged";
  EXPECT_LT(emb_cost, emb_wall);
}

TEST(Control, IdempotencyKeyReplaysConflictsAndMismatches) {
  auto s = start_server();
  ASSERT_TRUE(s);
  http::HttpClient c(s->client_options());
  const std::string body = completion_body("Once", {{"max_tokens", 6}, {"temperature", 1.0}});
  http::Headers h{{"Idempotency-Key", "order-42"}};
  auto a = c.post("/v1/completions", body, h);
  ASSERT_TRUE(a);
  ASSERT_EQ(a->status, 200);
  auto b = c.post("/v1/completions", body, h);
  ASSERT_TRUE(b);
  EXPECT_EQ(b->status, 200);
  EXPECT_EQ(b->body, a->body) << "a sampled response replayed must be identical";
  EXPECT_EQ(b->header("idempotent-replayed").value_or(""), "true");
  auto mismatch = c.post("/v1/completions", completion_body("Other", {{"max_tokens", 6}}), h);
  ASSERT_TRUE(mismatch);
  EXPECT_EQ(mismatch->status, 422);
  // While the first is still generating, a retry is 409.
  const std::string slow =
      completion_body("Once", {{"max_tokens", 1500}, {"ignore_eos", true}, {"stream", true}});
  http::Headers h2{{"Idempotency-Key", "slow-1"}};
  http::HttpClient c2(s->client_options());
  auto stream = c2.open_sse(http::Method::kPost, "/v1/completions", slow, h2);
  ASSERT_TRUE(stream);
  auto conflict = c.post("/v1/completions", slow, h2);
  ASSERT_TRUE(conflict);
  EXPECT_EQ(conflict->status, 409);
  auto first = read_stream(*stream);
  EXPECT_TRUE(first.done);
  // Finished: a retry replays the same stream.
  auto replay = stream_request(s->client_options(), "/v1/completions", slow, h2);
  EXPECT_TRUE(replay.done);
  EXPECT_EQ(replay.text[0], first.text[0]);
  EXPECT_EQ(replay.id, first.id);
  // Two callers may use the same idempotency key without seeing each other's responses.
  auto [id, key] = admin_create_key(c, {{"project", "p"}});
  auto other = c.post("/v1/completions", body,
                      {{"Idempotency-Key", "order-42"}, {"Authorization", "Bearer " + key}});
  ASSERT_TRUE(other);
  EXPECT_EQ(other->status, 200);
  EXPECT_FALSE(other->header("idempotent-replayed"));
}

TEST(Control, AdminApiNeedsTheToken) {
  auto s = start_server();
  ASSERT_TRUE(s);
  http::HttpClient c(s->client_options());
  EXPECT_EQ(c.get("/admin/v1/keys")->status, 401);
  EXPECT_EQ(c.get("/admin/v1/keys", bearer("wrong"))->status, 401);
  EXPECT_EQ(c.get("/admin/v1/keys", admin())->status, 200);
  auto bad = c.post("/admin/v1/keys", R"({"name":"no project"})", admin());
  ASSERT_TRUE(bad);
  expect_error(*bad, 400, "invalid_request_error", "project");
  auto bad_budget = c.post("/admin/v1/budgets",
                           R"({"owner_id":"p","period":"year","spend_limit_usd":1})", admin());
  ASSERT_TRUE(bad_budget);
  EXPECT_EQ(bad_budget->status, 400);
}

// A loopback receiver for budget alert webhooks.
struct Receiver {
  std::mutex mu;
  std::vector<http::Request> got;
  std::unique_ptr<http::HttpServer> server;
  Receiver() {
    http::ServerOptions o;
    o.host = "127.0.0.1";
    o.port = 0;
    server = std::make_unique<http::HttpServer>(
        o, [this](http::Request &&req, std::shared_ptr<http::ResponseWriter> w) {
          {
            std::lock_guard<std::mutex> lk(mu);
            got.push_back(req);
          }
          w->respond(http::Response::json(200, "{}"));
        });
    EXPECT_TRUE(server->start());
  }
  ~Receiver() { server->shutdown(std::chrono::milliseconds(0)); }
  size_t count() {
    std::lock_guard<std::mutex> lk(mu);
    return got.size();
  }
};

TEST(Control, BudgetAlertsAreSignedWebhooksSentOncePerThreshold) {
  Receiver rx;
  const std::string secret = control::generate_webhook_secret();
  auto s = start_server(toml_for_model("price_output_per_mtok = 1000000.0",
                                       "[alerts]\nwebhook_url = \"http://127.0.0.1:" +
                                           std::to_string(rx.server->port()) + "/hooks/budget\"\n"),
                        {"GANTRY_ALERT_WEBHOOK_SECRET=" + secret});
  ASSERT_TRUE(s);
  http::HttpClient c(s->client_options());
  auto [id, key] = admin_create_key(c, {{"project", "team"}});
  ASSERT_EQ(c.post("/admin/v1/budgets",
                   R"({"owner_kind":"key","owner_id":")" + id +
                       R"(","period":"day","spend_limit_usd":20})",
                   admin())
                ->status,
            200);
  // $4 per request: 4, 8, 12 (50%), 16 (80%), 20 (100%), then refused.
  const std::string body = completion_body("Once", {{"max_tokens", 4}, {"ignore_eos", true}});
  int ok = 0;
  for (int i = 0; i < 7; ++i) {
    auto r = c.post("/v1/completions", body, bearer(key));
    ASSERT_TRUE(r);
    if (r->status == 200)
      ++ok;
  }
  EXPECT_EQ(ok, 5);
  const auto deadline = SteadyClock::now() + 5s;
  while (rx.count() < 3 && SteadyClock::now() < deadline)
    std::this_thread::sleep_for(20ms);
  std::this_thread::sleep_for(300ms); // a duplicate would arrive now
  std::lock_guard<std::mutex> lk(rx.mu);
  ASSERT_EQ(rx.got.size(), 3u);
  std::vector<int64_t> thresholds;
  for (const auto &req : rx.got) {
    EXPECT_EQ(req.path, "/hooks/budget");
    auto wid = req.header("webhook-id"), ts = req.header("webhook-timestamp"),
         sig = req.header("webhook-signature");
    ASSERT_TRUE(wid && ts && sig);
    EXPECT_TRUE(control::verify_webhook(secret, *wid, *ts, req.body, *sig));
    EXPECT_FALSE(
        control::verify_webhook(control::generate_webhook_secret(), *wid, *ts, req.body, *sig));
    auto o = parse_object(req.body);
    EXPECT_EQ(o["type"], "budget.threshold_reached");
    thresholds.push_back(o["data"].as_object()["threshold_percent"].as_int64());
  }
  std::sort(thresholds.begin(), thresholds.end());
  EXPECT_EQ(thresholds, (std::vector<int64_t>{50, 80, 100}));
}

TEST(Control, LedgerSurvivesKill9) {
  auto s = start_server("ledger_flush_ms = 100\n" + toml_for_model("price_input_per_mtok = 1.0"));
  ASSERT_TRUE(s);
  http::HttpClient c(s->client_options());
  auto [id, key] = admin_create_key(c, {{"project", "p"}});
  constexpr int kRequests = 40;
  for (int i = 0; i < kRequests; ++i) {
    auto r = c.post("/v1/completions", completion_body("Once", {{"max_tokens", 2}}), bearer(key));
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 200);
  }
  std::this_thread::sleep_for(600ms); // well past the 100 ms batch window
  // And a burst right before the kill that may or may not make it.
  for (int i = 0; i < 5; ++i) {
    (void)c.post("/v1/completions", completion_body("Once", {{"max_tokens", 1}}), bearer(key));
  }
  s->signal(SIGKILL);
  ASSERT_TRUE(s->wait_exit(5s));
  int64_t requests = -1;
  if (postgres_selected()) {
    auto n = TestDatabases::psql(s->database_url(),
                                 "SELECT count(*) FROM usage_ledger WHERE key_id = '" + id + "'");
    ASSERT_TRUE(n) << "psql on " << s->database_url();
    requests = std::stoll(*n);
  } else {
    auto store = control::SqliteStore::open(s->data_dir());
    ASSERT_TRUE(store) << store.error().message;
    auto ic = (*store)->integrity_check();
    ASSERT_TRUE(ic);
    EXPECT_EQ(*ic, "ok");
    auto usage = (*store)->usage_of(control::OwnerKind::kKey, id, 0);
    ASSERT_TRUE(usage);
    requests = usage->requests;
  }
  EXPECT_GE(requests, kRequests);
  EXPECT_LE(requests, kRequests + 5);
}

// Usage of `key_id` from /admin/v1/usage?group_by=key: {requests, input + output tokens}.
std::pair<int64_t, int64_t> key_usage(http::HttpClient &c, const std::string &key_id) {
  auto u = c.get("/admin/v1/usage?group_by=key", admin());
  EXPECT_TRUE(u);
  if (!u)
    return {};
  EXPECT_EQ(u->status, 200) << u->body;
  auto o = parse_object(u->body);
  for (const auto &row : o["data"].as_array()) {
    const auto &r = row.as_object();
    if (r.at("key").as_string() == key_id)
      return {r.at("requests").as_int64(),
              r.at("input_tokens").as_int64() + r.at("output_tokens").as_int64()};
  }
  return {0, 0};
}

// Audit H4: a client that repeats its X-Request-Id is still billed for every call.
TEST(Control, RepeatedClientRequestIdIsBilledEveryTime) {
  auto s = start_server(toml_for_model(""));
  ASSERT_TRUE(s);
  http::HttpClient c(s->client_options());
  auto [id, key] = admin_create_key(c, {{"project", "p"}});
  const std::string body = completion_body("Once upon", {{"max_tokens", 5}, {"ignore_eos", true}});
  int64_t tokens = 0;
  for (int i = 0; i < 3; ++i) {
    auto r = c.post("/v1/completions", body,
                    {{"Authorization", "Bearer " + key},
                     {"X-Request-Id", "same-id-1"},
                     {"Cache-Control", "no-cache"}});
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 200) << r->body;
    EXPECT_EQ(r->header("x-request-id").value_or(""), "same-id-1"); // still echoed
    auto usage = parse_object(r->body)["usage"].as_object();
    tokens += usage["prompt_tokens"].as_int64() + usage["completion_tokens"].as_int64();
  }
  auto [requests, used] = key_usage(c, id);
  EXPECT_EQ(requests, 3);
  EXPECT_EQ(used, tokens);
  EXPECT_GT(tokens, 15); // 3 × (prompt + 5)
}

// Audit H4: a day token quota holds across a restart even when every call repeats one
// X-Request-Id (quotas are rebuilt from the ledger when a process starts).
TEST(Control, RepeatedClientRequestIdCannotBypassATokenQuota) {
  const std::string toml = toml_for_model("");
  auto s = start_server(toml);
  ASSERT_TRUE(s);
  http::HttpClient c(s->client_options());
  auto [id, key] = admin_create_key(c, {{"project", "p"}});
  auto b =
      c.post("/admin/v1/budgets",
             R"({"owner_kind":"key","owner_id":")" + id + R"(","period":"day","token_quota":60})",
             admin());
  ASSERT_TRUE(b);
  ASSERT_EQ(b->status, 200) << b->body;
  const std::string body = completion_body("Once upon", {{"max_tokens", 10}, {"ignore_eos", true}});
  const http::Headers headers{
      {"Authorization", "Bearer " + key}, {"X-Request-Id", "dup"}, {"Cache-Control", "no-cache"}};
  int ok = 0;
  bool refused = false;
  for (int i = 0; i < 10 && !refused; ++i) {
    auto r = c.post("/v1/completions", body, headers);
    ASSERT_TRUE(r);
    if (r->status == 200) {
      ++ok;
    } else {
      expect_error(*r, 429, "insufficient_quota", "");
      refused = true;
    }
  }
  ASSERT_TRUE(refused);
  ASSERT_GE(ok, 2);
  const auto before = key_usage(c, id);
  EXPECT_GE(before.second, 60);
  s->signal(SIGTERM);
  ASSERT_TRUE(s->wait_exit(30s));

  ServerProcessOptions o;
  o.config_toml = toml;
  o.data_dir = s->data_dir();
  o.env.push_back(std::string("GANTRY_ADMIN_TOKEN=") + kAdminToken);
  auto again = ServerProcess::start(std::move(o));
  ASSERT_TRUE(again) << again.error().message;
  http::HttpClient c2((*again)->client_options());
  // The new process counts the day's tokens from the ledger: still over the quota.
  auto r = c2.post("/v1/completions", body, headers);
  ASSERT_TRUE(r);
  expect_error(*r, 429, "insufficient_quota", "");
  const auto after = key_usage(c2, id);
  EXPECT_EQ(after.second, before.second);
  EXPECT_GE(after.first, ok);
}

// Audit M2: the caches were shared by every tenant of a model, so `x-gantry-cache: hit` and
// `cached_tokens` told one project whether another had sent a prompt (and, 16 tokens at a time,
// what it was). They are now scoped per project: another project's identical request misses
// every cache, while the same project still hits. `[cache] share_across_projects` opts back in.
TEST(Control, CachesNeverAnswerOneProjectWithAnothersPrompt) {
  const std::string secret = "Acme will acquire Globex for 42 dollars a share on Friday, and the "
                             "board will announce it after the market closes that afternoon.";
  auto cached_tokens = [](const http::ClientResponse &r) {
    return parse_object(r.body).at("usage").at("prompt_tokens_details").at("cached_tokens");
  };
  for (const bool shared : {false, true}) {
    SCOPED_TRACE(shared ? "share_across_projects = true" : "default");
    auto s =
        start_server(toml_for_model("", shared ? "[cache]\nshare_across_projects = true" : ""));
    ASSERT_TRUE(s);
    http::HttpClient c(s->client_options());
    auto [ida, acme] = admin_create_key(c, {{"project", "acme"}});
    auto [idb, globex] = admin_create_key(c, {{"project", "globex"}});
    const std::string greedy = chat_body(secret, {{"max_tokens", 4}, {"temperature", 0}});
    auto a = c.post("/v1/chat/completions", greedy, bearer(acme));
    ASSERT_TRUE(a);
    ASSERT_EQ(a->status, 200) << a->body;
    ASSERT_EQ(a->header("x-gantry-cache").value_or(""), "miss");
    ASSERT_GT(parse_object(a->body).at("usage").at("prompt_tokens").as_int64(), 32);

    // The extraction oracle: sampled (no response cache), so only the prefix cache can answer.
    // (Sent first: globex's own requests below cache globex's blocks.)
    const std::string sampled = chat_body(secret, {{"max_tokens", 2}, {"temperature", 1}});
    auto bp = c.post("/v1/chat/completions", sampled, bearer(globex));
    ASSERT_TRUE(bp);
    ASSERT_EQ(bp->status, 200) << bp->body;
    EXPECT_EQ(bp->header("x-gantry-cache").value_or(""), "bypass");
    if (shared) {
      EXPECT_GT(cached_tokens(*bp).as_int64(), 0);
    } else {
      EXPECT_EQ(cached_tokens(*bp).as_int64(), 0) << "globex reused acme's prompt KV";
    }
    // The membership oracle: the other project's identical request.
    auto b = c.post("/v1/chat/completions", greedy, bearer(globex));
    ASSERT_TRUE(b);
    ASSERT_EQ(b->status, 200) << b->body;
    EXPECT_EQ(b->header("x-gantry-cache").value_or(""), shared ? "hit" : "miss");
    // The owner's own repeats still use both caches.
    auto ap = c.post("/v1/chat/completions", sampled, bearer(acme));
    ASSERT_TRUE(ap);
    EXPECT_GT(cached_tokens(*ap).as_int64(), 0);
    auto a2 = c.post("/v1/chat/completions", greedy, bearer(acme));
    ASSERT_TRUE(a2);
    EXPECT_EQ(a2->header("x-gantry-cache").value_or(""), "hit");

    // The embedding cache, likewise.
    const std::string emb =
        json::serialize(json::object{{"model", "stories260K"}, {"input", secret}});
    auto ea = c.post("/v1/embeddings", emb, bearer(acme));
    ASSERT_TRUE(ea);
    ASSERT_EQ(ea->status, 200) << ea->body;
    ASSERT_EQ(ea->header("x-gantry-cache").value_or(""), "miss");
    auto eb = c.post("/v1/embeddings", emb, bearer(globex));
    ASSERT_TRUE(eb);
    EXPECT_EQ(eb->header("x-gantry-cache").value_or(""), shared ? "hit" : "miss");
    auto ea2 = c.post("/v1/embeddings", emb, bearer(acme));
    ASSERT_TRUE(ea2);
    EXPECT_EQ(ea2->header("x-gantry-cache").value_or(""), "hit");
  }
}

// Audit I: GET /v1/models/{id} ignored the key's model allow-list (the list honoured it), so a
// restricted key could probe which models a server has. Now it is a 404 like an unknown model.
TEST(Control, ModelLookupHonoursTheKeysAllowList) {
  auto s = start_server();
  ASSERT_TRUE(s);
  http::HttpClient c(s->client_options());
  auto [id, limited] = admin_create_key(c, {{"project", "p"}, {"models", json::array{"other"}}});
  auto [id2, full] = admin_create_key(c, {{"project", "p"}});
  auto hidden = c.get("/v1/models/stories260K", bearer(limited));
  ASSERT_TRUE(hidden);
  expect_error(*hidden, 404, "invalid_request_error", "model");
  auto unknown = c.get("/v1/models/nope", bearer(limited));
  ASSERT_TRUE(unknown);
  EXPECT_EQ(unknown->status, 404);
  auto seen = c.get("/v1/models/stories260K", bearer(full));
  ASSERT_TRUE(seen);
  EXPECT_EQ(seen->status, 200) << seen->body;
}

// Audit H3: `auth = "off"` is the explicit mode for local development: every call is anonymous,
// even with keys in the database.
TEST(Control, AuthOffServesWithoutKeysEvenWhenKeysExist) {
  ServerProcessOptions o;
  o.args = {"--auth", "off"};
  o.env.push_back(std::string("GANTRY_ADMIN_TOKEN=") + kAdminToken);
  auto s = ServerProcess::start(std::move(o));
  ASSERT_TRUE(s) << s.error().message;
  http::HttpClient c((*s)->client_options());
  admin_create_key(c, {{"project", "p"}});
  auto r = c.post("/v1/completions", completion_body("Hi", {{"max_tokens", 2}}));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body;
}

// Audit M1: a short admin token (guessable online) stops the server at start-up, naming the
// variable; 32 characters or more are accepted.
TEST(Control, ShortAdminTokenIsAStartUpError) {
  ServerProcessOptions o;
  o.env = {"GANTRY_ADMIN_TOKEN=admin-token-1234"};
  o.start_timeout = std::chrono::seconds(20);
  auto s = ServerProcess::start(std::move(o));
  ASSERT_FALSE(s) << "started with a 16-character admin token";
  EXPECT_NE(s.error().message.find("exited before listening"), std::string::npos)
      << s.error().message;
}

// Audit M1: failed admin authentications are throttled per peer: after 10 failures even the
// right token gets 429 (with Retry-After) from that address for the rest of the minute.
TEST(Control, AdminTokenGuessingIsThrottled) {
  auto s = start_server();
  ASSERT_TRUE(s);
  http::HttpClient c(s->client_options());
  for (int i = 0; i < 10; ++i) {
    auto r = c.get("/admin/v1/keys", bearer("guess-" + std::to_string(i)));
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 401) << i;
  }
  auto locked = c.get("/admin/v1/keys", admin());
  ASSERT_TRUE(locked);
  EXPECT_EQ(locked->status, 429) << locked->body;
  EXPECT_TRUE(locked->header("retry-after"));
}

// Audit L1: model, project and budget-owner names were written into /metrics without escaping,
// so a tenant's project name with a quote and a newline could forge series (or break the scrape).
// Every sample line must stay valid Prometheus text and the names must round-trip escaped.
TEST(Control, MetricsEscapeModelProjectAndOwnerNames) {
  const std::string model = "we\"ird\\name";
  auto s = start_server(toml_for_model("name = \"we\\\"ird\\\\name\"\nprice_input_per_mtok = 1.0"));
  ASSERT_TRUE(s);
  http::HttpClient c(s->client_options());
  const std::string project = "evil\"} 1\ngantry:injected_total{x=\"1\"} 1\n# \\";
  auto [id, key] = admin_create_key(c, {{"project", project}});
  auto b = c.post("/admin/v1/budgets",
                  json::serialize(json::object{{"owner_kind", "project"},
                                               {"owner_id", project},
                                               {"period", "day"},
                                               {"token_quota", 100000}}),
                  admin());
  ASSERT_TRUE(b);
  ASSERT_EQ(b->status, 200) << b->body;
  auto r =
      c.post("/v1/completions",
             json::serialize(json::object{{"model", model}, {"prompt", "Once"}, {"max_tokens", 2}}),
             bearer(key));
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  auto m = c.get("/metrics", admin());
  ASSERT_TRUE(m);
  ASSERT_EQ(m->status, 200);
  const std::regex sample(
      R"re(^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[a-zA-Z_][a-zA-Z0-9_]*="(\\[\\"n]|[^"\\])*"(,[a-zA-Z_][a-zA-Z0-9_]*="(\\[\\"n]|[^"\\])*")*\})? [^ ]+$)re");
  std::istringstream lines(m->body);
  int checked = 0;
  for (std::string line; std::getline(lines, line);) {
    if (line.empty() || line.starts_with("# HELP ") || line.starts_with("# TYPE "))
      continue;
    EXPECT_TRUE(std::regex_match(line, sample)) << "not a valid sample line: " << line;
    EXPECT_FALSE(line.starts_with("gantry:injected")) << line;
    ++checked;
  }
  EXPECT_GT(checked, 50);
  const std::string escaped_project = R"(evil\"} 1\ngantry:injected_total{x=\"1\"} 1\n# \\)";
  EXPECT_NE(m->body.find("gantry:cost_usd_total{model_name=\"we\\\"ird\\\\name\",project=\"" +
                         escaped_project + "\"}"),
            std::string::npos);
  EXPECT_NE(m->body.find("owner=\"" + escaped_project + "\""), std::string::npos);
  EXPECT_NE(m->body.find("gantry:model_loaded{model_name=\"we\\\"ird\\\\name\"} 1"),
            std::string::npos);
}

// Audit M6: an unauthenticated upload is refused from its head alone, so nobody can make the
// server buffer 8 MiB per connection without a key.
TEST(Control, UnauthenticatedUploadIsRefusedBeforeTheBody) {
  ServerProcessOptions o;
  o.args = {"--auth", "required"};
  auto started = ServerProcess::start(std::move(o));
  ASSERT_TRUE(started) << started.error().message;
  auto &s = *started;
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(s->port());
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr *>(&addr), sizeof addr), 0);
  const std::string head = "POST /v1/completions HTTP/1.1\r\nHost: x\r\n"
                           "Content-Type: application/json\r\nContent-Length: 8388608\r\n\r\n";
  ASSERT_EQ(::send(fd, head.data(), head.size(), 0), static_cast<ssize_t>(head.size()));
  // Only the head was sent: an answer now means the body was never waited for.
  std::string got;
  for (int i = 0; i < 100 && got.find("\r\n\r\n") == std::string::npos; ++i) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0)
      continue;
    char buf[4096];
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0)
      break;
    got.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fd);
  EXPECT_EQ(got.rfind("HTTP/1.1 401", 0), 0u) << got;
  EXPECT_NE(got.find("WWW-Authenticate: Bearer"), std::string::npos) << got;
}

// Issue 12 item 8: a streamed response has no x-gantry-cost-usd header, so its cost rides in
// the final usage chunk (usage.cost_usd), which the official clients pass through.
TEST(Control, StreamedUsageChunkCarriesTheCost) {
  // $1 per input and per output token: the cost is the tokens counted.
  auto s = start_server(
      toml_for_model("price_input_per_mtok = 1000000.0\nprice_output_per_mtok = 1000000.0"));
  ASSERT_TRUE(s);
  json::object extra{{"max_tokens", 8},
                     {"temperature", 0},
                     {"ignore_eos", true},
                     {"stream", true},
                     {"stream_options", {{"include_usage", true}}}};
  const http::Headers no_cache{{"Cache-Control", "no-store"}};
  auto st = stream_request(s->client_options(), "/v1/chat/completions",
                           chat_body("Once upon a time", extra), no_cache);
  ASSERT_EQ(st.status, 200);
  ASSERT_TRUE(st.done);
  ASSERT_TRUE(st.usage) << "no usage chunk";
  ASSERT_TRUE(st.usage->contains("cost_usd")) << json::serialize(*st.usage);
  const double tokens = static_cast<double>(st.usage->at("prompt_tokens").as_int64() +
                                            st.usage->at("completion_tokens").as_int64());
  EXPECT_NEAR(st.usage->at("cost_usd").to_number<double>(), tokens, 1e-6);
  // Without include_usage there is no usage chunk (and so no cost) in the stream.
  extra.erase("stream_options");
  auto plain = stream_request(s->client_options(), "/v1/chat/completions",
                              chat_body("Once upon a time", extra), no_cache);
  ASSERT_EQ(plain.status, 200);
  EXPECT_FALSE(plain.usage);
  // Non-streamed calls keep the header.
  extra.erase("stream");
  http::HttpClient c(s->client_options());
  auto r = c.post("/v1/chat/completions", chat_body("Once upon a time", extra), no_cache);
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_TRUE(http::find_header(r->headers, "x-gantry-cost-usd"));
}

// Audit M4: a multi-megabyte prompt was tokenized on the I/O thread before anything looked at
// its size (1.2 s for 4 MB, /healthz stuck behind it). A prompt far over the context is now
// refused by its byte length before any tokenizing, with the usual context error.
TEST(Control, APromptFarOverTheContextIsRefusedBeforeTokenizing) {
  auto s = start_server();
  ASSERT_TRUE(s);
  http::HttpClient c(s->client_options());
  std::string big;
  big.reserve(4u << 20);
  while (big.size() < (4u << 20))
    big += "Once upon a time there was a little girl. ";
  for (const bool chat : {true, false}) {
    auto r = c.post(chat ? "/v1/chat/completions" : "/v1/completions",
                    chat ? chat_body(big, {{"max_tokens", 4}})
                         : completion_body(big, {{"max_tokens", 4}}));
    ASSERT_TRUE(r);
    auto e = expect_error(*r, 400, "invalid_request_error", chat ? "messages" : "prompt");
    EXPECT_EQ(e.at("code").as_string(), "context_length_exceeded");
    EXPECT_NE(std::string(e.at("message").as_string()).find("bytes"), std::string::npos)
        << "refused by the tokenizer, not by the byte bound: " << e.at("message");
  }
  auto h = c.get("/healthz");
  ASSERT_TRUE(h);
  EXPECT_EQ(h->status, 200);
}

// Audit M4, the rate-limit half: a key already over its RPM sent a 4 MB prompt and got its 400
// only after the I/O thread tokenized it. RPM and concurrency need no token count, so the
// request is now refused (429, Retry-After) before its prompt is templated or tokenized.
TEST(Control, AKeyOverItsRpmIsRefusedBeforeItsPromptIsTokenized) {
  auto s = start_server();
  ASSERT_TRUE(s);
  http::HttpClient c(s->client_options());
  auto [id, key] = admin_create_key(c, {{"project", "m4"}, {"rpm", 1}});
  auto first = c.post("/v1/completions", completion_body("Once upon a time", {{"max_tokens", 2}}),
                      bearer(key));
  ASSERT_TRUE(first);
  ASSERT_EQ(first->status, 200) << first->body;
  std::string big;
  big.reserve(4u << 20);
  while (big.size() < (4u << 20))
    big += "Once upon a time there was a little girl. ";
  auto r = c.post("/v1/completions", completion_body(big, {{"max_tokens", 4}}), bearer(key));
  ASSERT_TRUE(r);
  // Before the fix: 400 context_length_exceeded (the prompt was tokenized first).
  expect_error(*r, 429, "rate_limit_error", "");
  EXPECT_TRUE(http::find_header(r->headers, "Retry-After"));
  auto h = c.get("/healthz");
  ASSERT_TRUE(h);
  EXPECT_EQ(h->status, 200);
}

} // namespace
} // namespace gantry::testing
