// The [cache] section of the server configuration, its environment variables and validation.
#include "server/config.h"

#include <gtest/gtest.h>

#include <fstream>

namespace gantry::server {
namespace {

std::string write_file(const std::string &name, const std::string &text) {
  std::string path = ::testing::TempDir() + "/" + name;
  std::ofstream(path) << text;
  return path;
}

TEST(CacheConfigTest, DefaultsTomlAndEnv) {
  ServerConfig c;
  EXPECT_TRUE(c.cache.enabled);
  EXPECT_EQ(c.cache.max_bytes, uint64_t{64} << 20);
  EXPECT_EQ(c.cache.ttl.count(), 3600);
  ASSERT_TRUE(apply_toml_file(write_file("cache.toml", R"(
[cache]
enabled = false
max_bytes = 1000
embedding_max_bytes = 2000
ttl_s = 60
)"),
                              c)
                  .ok());
  EXPECT_FALSE(c.cache.enabled);
  EXPECT_EQ(c.cache.max_bytes, 1000u);
  EXPECT_EQ(c.cache.embedding_max_bytes, 2000u);
  EXPECT_EQ(c.cache.ttl.count(), 60);
  ASSERT_TRUE(
      apply_env(
          {{"GANTRY_CACHE", "1"}, {"GANTRY_CACHE_MAX_BYTES", "5000"}, {"GANTRY_CACHE_TTL_S", "7"}},
          c)
          .ok());
  EXPECT_TRUE(c.cache.enabled);
  EXPECT_EQ(c.cache.max_bytes, 5000u);
  EXPECT_EQ(c.cache.ttl.count(), 7);
}

TEST(CacheConfigTest, BadValuesNameTheKey) {
  struct Case {
    const char *toml;
    const char *key;
  } cases[] = {
      {"[cache]\nmax_byte = 1\n", "cache.max_byte"},
      {"[cache]\nmax_bytes = -1\n", "cache.max_bytes"},
      {"[cache]\nenabled = 1\n", "cache.enabled"},
      {"[cache]\nttl_s = \"1h\"\n", "cache.ttl_s"},
      {"cache = 3\n", "cache"},
  };
  for (const auto &c : cases) {
    ServerConfig cfg;
    auto st = apply_toml_file(write_file("bad-cache.toml", c.toml), cfg);
    ASSERT_FALSE(st.ok()) << c.toml;
    EXPECT_NE(st.error().message.find(c.key), std::string::npos) << st.error().message;
  }
  ServerConfig cfg;
  cfg.models = {*parse_model_arg("m=/a.gguf")};
  cfg.cache.ttl = std::chrono::seconds(0);
  auto st = cfg.validate();
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message.find("cache.ttl_s"), std::string::npos);
  EXPECT_FALSE(apply_env({{"GANTRY_CACHE", "yes"}}, cfg).ok());
}

} // namespace
} // namespace gantry::server
