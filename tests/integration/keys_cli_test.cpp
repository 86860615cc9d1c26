// `gantry keys create|list|rotate|revoke` through the real binary, on the store of a running
// server (the data directory's SQLite file, or with GANTRY_TEST_STORE=postgresql the server's
// PostgreSQL database through --database-url): what the CLI writes, the server honours.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <functional>
#include <thread>

#include "integration/api_helpers.h"
#include "integration/server_process.h"
#include "support/store_under_test.h"

namespace gantry::testing {
namespace {

using namespace std::chrono_literals;
using SteadyClock = std::chrono::steady_clock;

struct CliRun {
  int rc = -1;
  std::string out; // stdout and stderr
};

CliRun gantry_cli(const std::string &args) {
  const std::string cmd = std::string(GANTRY_BINARY) + " " + args + " 2>&1";
  CliRun run;
  FILE *f = ::popen(cmd.c_str(), "r");
  if (f == nullptr)
    return run;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0)
    run.out.append(buf, n);
  const int status = ::pclose(f);
  run.rc = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return run;
}

http::Headers bearer(const std::string &key) { return {{"Authorization", "Bearer " + key}}; }

// The status GET /v1/models answers with `key`, asked until it is `want` or 3 s have passed (the
// server re-reads keys when their generation changes, polled every 250 ms).
int status_until(http::HttpClient &c, const std::string &key, int want) {
  const auto deadline = SteadyClock::now() + 3s;
  int status = 0;
  while (SteadyClock::now() < deadline) {
    auto r = c.get("/v1/models", bearer(key));
    status = r ? r->status : 0;
    if (status == want)
      break;
    std::this_thread::sleep_for(25ms);
  }
  return status;
}

json::array list_keys(const std::string &flags) {
  CliRun r = gantry_cli("keys list --json " + flags);
  EXPECT_EQ(r.rc, 0) << r.out;
  auto v = json::parse(r.out);
  EXPECT_TRUE(v.is_array()) << r.out;
  return v.is_array() ? v.as_array() : json::array{};
}

TEST(KeysCli, CreateListRotateRevokeOnTheServersStore) {
  auto started = ServerProcess::start(std::vector<std::string>{});
  ASSERT_TRUE(started) << started.error().message;
  auto &s = *started;
  http::HttpClient c(s->client_options());
  const std::string flags = store_flags(s->data_dir());

  CliRun r = gantry_cli("keys create --project alpha --name ci --models stories260K --rpm 100 "
                        "--expires 30d --json " +
                        flags);
  ASSERT_EQ(r.rc, 0) << r.out;
  auto alpha = parse_object(r.out);
  const std::string id(alpha["id"].as_string());
  const std::string secret1(alpha["key"].as_string());
  ASSERT_EQ(secret1.rfind("gsk_", 0), 0u) << r.out;
  r = gantry_cli("keys create --project beta --json " + flags);
  ASSERT_EQ(r.rc, 0) << r.out;
  const std::string beta_id(parse_object(r.out)["id"].as_string());

  auto only_alpha = list_keys("--project alpha " + flags);
  ASSERT_EQ(only_alpha.size(), 1u) << json::serialize(only_alpha);
  auto listed = only_alpha[0].as_object();
  EXPECT_EQ(listed["id"].as_string(), id);
  EXPECT_EQ(listed["name"], "ci");
  EXPECT_EQ(listed["status"], "active");
  EXPECT_EQ(listed["rpm"], 100);
  EXPECT_EQ(json::serialize(listed["models"]), R"(["stories260K"])");
  EXPECT_FALSE(listed["expires_at"].is_null());
  EXPECT_FALSE(listed.contains("key")) << "list never shows a secret";
  auto all = list_keys(flags);
  ASSERT_EQ(all.size(), 2u) << json::serialize(all);
  EXPECT_NE(json::serialize(all).find(beta_id), std::string::npos);
  EXPECT_EQ(json::serialize(all).find(secret1.substr(4)), std::string::npos) << "a secret leaked";

  // The server, which had no keys, now gates every call, and takes the CLI's key.
  EXPECT_EQ(status_until(c, "sk-none", 401), 401);
  EXPECT_EQ(status_until(c, secret1, 200), 200);

  // Rotation with a grace period: both secrets work until it ends.
  r = gantry_cli("keys rotate " + id + " --grace 1h --json " + flags);
  ASSERT_EQ(r.rc, 0) << r.out;
  const std::string secret2(parse_object(r.out)["key"].as_string());
  ASSERT_NE(secret2, secret1);
  EXPECT_EQ(status_until(c, secret2, 200), 200);
  EXPECT_EQ(status_until(c, secret1, 200), 200) << "the old secret is valid for the grace period";
  auto rotated = list_keys("--project alpha " + flags);
  ASSERT_EQ(rotated.size(), 1u);
  EXPECT_TRUE(rotated[0].as_object().contains("previous_secret_valid_until"))
      << json::serialize(rotated);

  // Without grace the previous secret stops at once.
  r = gantry_cli("keys rotate " + id + " --grace 0s --json " + flags);
  ASSERT_EQ(r.rc, 0) << r.out;
  const std::string secret3(parse_object(r.out)["key"].as_string());
  EXPECT_EQ(status_until(c, secret2, 401), 401) << "the rotated-out secret still works";
  EXPECT_EQ(status_until(c, secret1, 401), 401);
  EXPECT_EQ(status_until(c, secret3, 200), 200);

  r = gantry_cli("keys revoke " + id + " " + flags);
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find("Revoked key " + id), std::string::npos) << r.out;
  EXPECT_EQ(status_until(c, secret3, 401), 401) << "a revoked key is still admitted";
  auto revoked = list_keys("--project alpha " + flags);
  ASSERT_EQ(revoked.size(), 1u);
  EXPECT_EQ(revoked[0].as_object()["status"], "revoked");

  r = gantry_cli("keys revoke no-such-key " + flags);
  EXPECT_NE(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find("error:"), std::string::npos) << r.out;
  r = gantry_cli("keys rotate no-such-key " + flags);
  EXPECT_NE(r.rc, 0) << r.out;
}

} // namespace
} // namespace gantry::testing
