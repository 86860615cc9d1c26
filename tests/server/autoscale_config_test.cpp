// `[autoscale.<model>]`: read through the key tables, refused at start-up with the key named.
#include <gtest/gtest.h>

#include <fstream>

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
  const std::string path = ::testing::TempDir() + "/autoscale.toml";
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

} // namespace
} // namespace gantry::server
