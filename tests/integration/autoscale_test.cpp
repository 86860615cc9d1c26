// Issue 14 in the real binary (`--role all`): a model with an [autoscale.<model>] table has its
// policy evaluated from the server's own signals and exported on /metrics. The process is the
// model's one replica; nothing starts or stops replicas yet, so only the decision is observed.
#include <gtest/gtest.h>

#include "integration/api_helpers.h"
#include "integration/server_process.h"

namespace gantry::testing {
namespace {

using namespace std::chrono_literals;

TEST(Autoscale, DesiredReplicasFollowThePolicyOnMetrics) {
  const std::string config = std::string(R"(
[[models]]
name = "stories260K"
path = ")") + GANTRY_MODELS_DIR +
                             R"(/stories260K.gguf"

[autoscale.stories260K]
min_replicas = 0
max_replicas = 3
downscale_delay_s = 1
downscale_to_zero_delay_s = 1
)";
  auto started = ServerProcess::start(std::vector<std::string>{}, config);
  ASSERT_TRUE(started) << started.error().message;
  auto &s = *started;
  // Idle from the start: the policy starts at the one ready replica and, a second later, asks
  // for zero; the replica is still there (no executor yet) and says so.
  auto [idle, text] = wait_for_metrics(
      s->client_options(),
      [](const std::string &t) {
        return t.find("gantry:desired_replicas{model_name=\"stories260K\"} 0\n") !=
               std::string::npos;
      },
      20s);
  ASSERT_TRUE(idle) << text;
  EXPECT_NE(text.find("# TYPE gantry:replicas gauge\n"), std::string::npos);
  EXPECT_EQ(metric_or_zero(text, "gantry:replicas{model_name=\"stories260K\",state=\"ready\"}"), 1)
      << text;
  EXPECT_EQ(metric_or_zero(text,
                           "gantry:autoscale_changes_total{model_name=\"stories260K\",direction="
                           "\"down\"}"),
            1)
      << text;
  // Traffic is still served at desired 0 in `--role all` (the process is the replica).
  http::HttpClient c(s->client_options());
  EXPECT_EQ(c.post("/v1/completions", completion_body("Once", {{"max_tokens", 4}}))->status, 200);
}

TEST(Autoscale, AServerWithoutAutoscaleTablesExportsNoDecisions) {
  auto started = ServerProcess::start(ServerProcessOptions{}); // the bundled model only
  ASSERT_TRUE(started) << started.error().message;
  http::HttpClient c((*started)->client_options());
  auto r = c.get("/metrics");
  ASSERT_EQ(r->status, 200);
  EXPECT_EQ(r->body.find("gantry:desired_replicas"), std::string::npos);
}

} // namespace
} // namespace gantry::testing
