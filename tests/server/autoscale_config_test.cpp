// `[autoscale.<model>]`: read through the key tables, refused at start-up with the key named.
#include <gtest/gtest.h>

#include <fstream>
#include <string>
#include <unistd.h>

#include "server/config.h"

namespace gantry::server {
namespace {

using namespace std::chrono_literals;

constexpr const char *kModels = R"(
[[models]]
name = "llama"
path = "/models/llama.gguf"
)";

// The config read from `toml` (after the models) and validated; the error message, or "ok".
std::string load(const std::string &toml, ServerConfig *out = nullptr) {
  // One file per test process: ctest runs this binary's tests side by side, and a shared name let
  // one test read another's config (a flaky failure of the whole suite).
  const std::string path = ::testing::TempDir() + "/autoscale-" +
                           ::testing::UnitTest::GetInstance()->current_test_info()->name() + "-" +
                           std::to_string(::getpid()) + ".toml";
  std::ofstream(path) << toml << kModels; // toml first: its top-level keys stay top-level
  ServerConfig c;
  Status st = apply_toml_file(path, c);
  if (st.ok())
    st = c.validate();
  if (out)
    *out = c;
  return st.ok() ? "ok" : st.error().message;
}

TEST(AutoscaleConfigTest, ReadsEveryKnob) {
  ServerConfig c;
  ASSERT_EQ(load(R"(
[autoscale.llama]
min_replicas = 0
max_replicas = 6
target_ongoing_requests = 2.5
target_queue_wait_s = 3
upscale_delay_s = 0.5
downscale_delay_s = 120
downscale_to_zero_delay_s = 600
max_scale_step = 2
)",
                 &c),
            "ok");
  ASSERT_EQ(c.autoscale.count("llama"), 1u);
  const autoscale::PolicyConfig &p = c.autoscale.at("llama");
  EXPECT_EQ(p.min_replicas, 0);
  EXPECT_EQ(p.max_replicas, 6);
  EXPECT_DOUBLE_EQ(p.target_ongoing_requests, 2.5);
  EXPECT_EQ(p.target_queue_wait, 3s);
  EXPECT_EQ(p.upscale_delay, 500ms);
  EXPECT_EQ(p.downscale_delay, 120s);
  EXPECT_EQ(p.downscale_to_zero_delay, 600s);
  EXPECT_EQ(p.max_scale_step, 2);
}

TEST(AutoscaleConfigTest, NoTableNoPolicy) {
  ServerConfig c;
  ASSERT_EQ(load("", &c), "ok");
  EXPECT_TRUE(c.autoscale.empty());
}

TEST(AutoscaleConfigTest, BadValuesAreRefusedNamingTheKey) {
  const std::pair<const char *, const char *> cases[] = {
      {"min_replicas = 3\nmax_replicas = 2",
       "config 'autoscale.llama.min_replicas': is 3, above max_replicas (2)"},
      {"min_replicas = -1", "config 'autoscale.llama.min_replicas': must not be negative"},
      {"max_replicas = 0", "config 'autoscale.llama.max_replicas': must be at least 1"},
      {"upscale_delay_s = -1", "config 'autoscale.llama.upscale_delay_s': expected a "
                               "non-negative number"},
      {"downscale_delay_s = -5", "config 'autoscale.llama.downscale_delay_s': expected a "
                                 "non-negative number"},
      {"downscale_to_zero_delay_s = -0.5", "config 'autoscale.llama.downscale_to_zero_delay_s': "
                                           "expected a non-negative number"},
      {"max_scale_step = 0", "config 'autoscale.llama.max_scale_step': must be at least 1"},
      {"target_ongoing_requests = 0",
       "config 'autoscale.llama.target_ongoing_requests': must be positive"},
      {"target_ongoing_requests = inf",
       "config 'autoscale.llama.target_ongoing_requests': must be a positive number"},
      {"max_replica = 4", "config 'autoscale.llama.max_replica': unknown key"},
      {"max_replicas = \"four\"", "config 'autoscale.llama.max_replicas': expected an integer"},
  };
  for (const auto &[body, want] : cases)
    EXPECT_EQ(load(std::string("[autoscale.llama]\n") + body + "\n"), want) << body;
}

TEST(AutoscaleConfigTest, TheTableMustNameAConfiguredModel) {
  EXPECT_EQ(load("[autoscale.mistral]\nmax_replicas = 2\n"),
            "config 'autoscale.mistral': names no configured model (a [[models]] entry's name)");
  EXPECT_EQ(load("autoscale = 3\n"),
            "config 'autoscale': expected a table of [autoscale.<model>] tables");
  EXPECT_EQ(load("[autoscale]\nllama = 3\n"),
            "config 'autoscale.llama': expected a table ([autoscale.<model>] with the policy's "
            "knobs)");
}

// Issue 14 items 2 and 3: the executor and cold-start keys share the model's table.
constexpr const char *kGateway = "role = \"gateway\"\ndatabase_url = \"postgresql://u@h/db\"\n"
                                 "[redis]\nurl = \"redis://h\"\n";

TEST(AutoscaleConfigTest, ReadsTheExecutorKeys) {
  ServerConfig c;
  ASSERT_EQ(load(std::string(kGateway) + R"(
[autoscale.llama]
max_replicas = 2
executor = "command"
scale_command = ["/bin/sh", "-c", "exit 0"]
command_timeout_s = 20
start_timeout_s = 90
max_held_requests = 16
cold_start_timeout_s = 45.5
)",
                 &c),
            "ok");
  const AutoscaleExecutorSpec &e = c.autoscale_executors.at("llama");
  EXPECT_EQ(e.executor, "command");
  EXPECT_EQ(e.scale_command, (std::vector<std::string>{"/bin/sh", "-c", "exit 0"}));
  EXPECT_EQ(e.command_timeout, 20s);
  EXPECT_EQ(e.start_timeout, 90s);
  EXPECT_EQ(e.max_held_requests, 16);
  EXPECT_EQ(e.cold_start_timeout, 45500ms);
  EXPECT_EQ(c.autoscale.at("llama").max_replicas, 2) << "the policy's keys are read as before";
  // The defaults: advice only, and a gateway then refuses to load the model itself.
  ServerConfig d;
  ASSERT_EQ(load("[autoscale.llama]\n", &d), "ok");
  EXPECT_EQ(d.autoscale_executors.at("llama").executor, "none");
  EXPECT_EQ(d.autoscale_executors.at("llama").max_held_requests, 256);
  EXPECT_EQ(d.autoscale_executors.at("llama").cold_start_timeout, 300s);
}

TEST(AutoscaleConfigTest, BadExecutorKeysAreRefusedNamingTheKey) {
  const std::pair<std::string, std::string> cases[] = {
      {"executor = \"k8s\"", "config 'autoscale.llama.executor': must be \"none\", \"local\", "
                             "\"command\" or \"external\", got "
                             "'k8s'"},
      {"executor = \"command\"",
       "config 'autoscale.llama.scale_command': is required with executor = \"command\""},
      {"executor = \"command\"\nscale_command = []",
       "config 'autoscale.llama.scale_command': expected a non-empty array of strings: "
       "[\"program\", \"arg\", ...]"},
      {"executor = \"command\"\nscale_command = [\"/no/such/scaler\"]",
       "config 'autoscale.llama.scale_command': '/no/such/scaler' is not an executable file"},
      {"executor = \"local\"\nscale_command = [\"/bin/true\"]",
       "config 'autoscale.llama.scale_command': is only used with executor = \"command\""},
      {"executor = \"local\"\nmax_held_requests = -1",
       "config 'autoscale.llama.max_held_requests': must not be negative"},
      {"executor = \"local\"\ncold_start_timeout_s = 0",
       "config 'autoscale.llama.cold_start_timeout_s': must be positive"},
      {"executor = \"local\"\ncommand_timeout_s = -3",
       "config 'autoscale.llama.command_timeout_s': expected a non-negative number"},
  };
  for (const auto &[body, want] : cases)
    EXPECT_EQ(load(std::string(kGateway) + "[autoscale.llama]\n" + body + "\n"), want) << body;
  // An executor is a gateway's: `--role all` loads the model itself.
  EXPECT_EQ(load("[autoscale.llama]\nexecutor = \"local\"\n"),
            "config 'autoscale.llama.executor': executor = \"local\" needs role = \"gateway\" (the "
            "gateway starts and stops the model's workers; they register in Redis)");
  // A gateway loads no [[models]] entry without an executor.
  EXPECT_NE(load(std::string(kGateway) + "[autoscale.llama]\nexecutor = \"none\"\n")
                .find("config 'models': a gateway loads no engine"),
            std::string::npos);
}

} // namespace
} // namespace gantry::server
