#include "server/remote_models_config.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>

#include "backend/remote/remote_backend.h"
#include "server/config.h"
#include "server/remote_models.h"

namespace gantry::server {
namespace {

std::string write_toml(const std::string &text) {
  // One file per test: ctest runs these tests as parallel processes.
  const auto *info = ::testing::UnitTest::GetInstance()->current_test_info();
  const std::string path =
      ::testing::TempDir() + "remote-models-" + std::string(info ? info->name() : "x") + ".toml";
  std::ofstream(path) << text;
  return path;
}

TEST(RemoteModelsConfig, ModelArgsMakePools) {
  std::vector<RemoteModelSpec> m;
  EXPECT_TRUE(is_remote_model_arg("llama=http://127.0.0.1:8000/v1"));
  EXPECT_FALSE(is_remote_model_arg("llama=/models/x.gguf"));
  EXPECT_FALSE(is_remote_model_arg("/models/x.gguf"));
  ASSERT_TRUE(add_remote_model_arg("llama=http://127.0.0.1:8000/v1", m).ok());
  ASSERT_TRUE(add_remote_model_arg("llama=https://127.0.0.1:8001/v1/", m).ok());
  ASSERT_TRUE(add_remote_model_arg("other=http://127.0.0.1:9000/v1", m).ok());
  ASSERT_EQ(m.size(), 2u);
  EXPECT_EQ(m[0].backends.size(), 2u) << "the same NAME twice is a pool";
  auto bad = add_remote_model_arg("x=http://127.0.0.1:8000/", m);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message.find("/v1"), std::string::npos);
}

TEST(RemoteModelsConfig, TomlMixesLocalAndRemoteModels) {
  ServerConfig c;
  auto st = apply_toml_file(write_toml(R"(
[[models]]
name = "local"
path = "/nonexistent/stories.gguf"

[[models]]
name = "pool"
routing = "prefix"
fallbacks = ["local"]
price_input_per_mtok = 0.5
timeout_first_byte_s = 2.5
backends = [
  { url = "http://127.0.0.1:8000/v1", model = "llama", weight = 3, max_concurrent = 8 },
  { url = "https://127.0.0.1:8443/v1", kind = "openai", api_key_env = "GANTRY_TEST_KEY" },
]
)"),
                            c);
  ASSERT_TRUE(st.ok()) << st.error().message;
  ASSERT_EQ(c.models.size(), 1u);
  ASSERT_EQ(c.remote_models.size(), 1u);
  const auto &r = c.remote_models[0];
  EXPECT_EQ(r.routing, "prefix");
  EXPECT_EQ(r.fallbacks, std::vector<std::string>{"local"});
  ASSERT_EQ(r.backends.size(), 2u);
  EXPECT_EQ(r.backends[0].weight, 3);
  EXPECT_EQ(r.backends[0].max_concurrent, 8);
  EXPECT_EQ(r.backends[1].kind, "openai");
  EXPECT_TRUE(c.validate().ok());

  auto getenv = [](const char *n) -> const char * {
    return std::string(n) == "GANTRY_TEST_KEY" ? "sk-from-env" : nullptr;
  };
  auto resolved = resolve_remote_model(r, getenv, "");
  ASSERT_TRUE(resolved.ok()) << resolved.error().message;
  EXPECT_EQ(resolved->endpoints[1].api_key, "sk-from-env");
  EXPECT_TRUE(resolved->pool.prefix_affinity);
  EXPECT_EQ(resolved->first_byte_timeout.count(), 2500);
  auto missing = resolve_remote_model(
      r, [](const char *) -> const char * { return nullptr; }, "");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.error().message.find("GANTRY_TEST_KEY"), std::string::npos);
}

TEST(RemoteModelsConfig, KeysNeverInTheConfigAndTyposAreErrors) {
  ServerConfig c;
  auto inline_key = apply_toml_file(write_toml(R"(
[[models]]
name = "x"
backends = [{ url = "http://127.0.0.1:1/v1", api_key = "sk-secret" }]
)"),
                                    c);
  ASSERT_FALSE(inline_key.ok());
  EXPECT_NE(inline_key.error().message.find("api_key_env"), std::string::npos);
  EXPECT_FALSE(apply_toml_file(write_toml(R"(
[[models]]
name = "x"
backendz = 1
backends = [{ url = "http://127.0.0.1:1/v1" }]
)"),
                               c)
                   .ok());
  ServerConfig d;
  ASSERT_TRUE(apply_toml_file(write_toml(R"(
[[models]]
name = "x"
backends = [{ url = "http://127.0.0.1:1/v1", kind = "bogus" }]
)"),
                              d)
                  .ok());
  EXPECT_FALSE(d.validate().ok()) << "unknown kind";
}

// The prompt estimate's rate is stated and bounded; a tokenizer file that cannot be read stops
// start-up with the key named (create_remote_backends, the composition root's call).
TEST(RemoteModelsConfig, EstimateRateIsBoundedAndATokenizerMustLoad) {
  ServerConfig c;
  ASSERT_TRUE(apply_toml_file(write_toml(R"(
[[models]]
name = "x"
estimate_bytes_per_token = 0.5
backends = [{ url = "http://127.0.0.1:1/v1", model = "m" }]
)"),
                              c)
                  .ok());
  auto bad = c.validate();
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message.find("estimate_bytes_per_token"), std::string::npos)
      << bad.error().message;
  ServerConfig d;
  ASSERT_TRUE(apply_toml_file(write_toml(R"(
[[models]]
name = "x"
estimate_bytes_per_token = 3.5
tokenizer = "/nonexistent/vocab.gguf"
backends = [{ url = "http://127.0.0.1:1/v1", model = "m" }]
)"),
                              d)
                  .ok());
  ASSERT_TRUE(d.validate().ok());
  ASSERT_EQ(d.remote_models.size(), 1u);
  EXPECT_EQ(d.remote_models[0].estimate_bytes_per_token, 3.5);
  SystemClock clock;
  auto made = create_remote_backends(d, clock, [](std::string_view) { return nullptr; });
  ASSERT_FALSE(made.ok());
  EXPECT_NE(made.error().message.find("models.x.tokenizer"), std::string::npos)
      << made.error().message;
}

} // namespace
} // namespace gantry::server
