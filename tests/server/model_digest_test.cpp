#include "server/model_digest.h"

#include <gtest/gtest.h>

#include <cstring>
#include <vector>

namespace gantry::server {
namespace {

std::vector<uint8_t> read_file(const std::string &path) {
  std::vector<uint8_t> out;
  FILE *f = std::fopen(path.c_str(), "rb");
  if (!f)
    return out;
  uint8_t buf[65536];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0)
    out.insert(out.end(), buf, buf + n);
  std::fclose(f);
  return out;
}

TEST(ModelDigestTest, StableForAFileAndDifferentForAnother) {
  const std::string stories = std::string(GANTRY_MODELS_DIR) + "/stories260K.gguf";
  auto a = gguf::GgufFile::open(stories);
  auto b = gguf::GgufFile::open(stories);
  auto other =
      gguf::GgufFile::open(std::string(GANTRY_TEST_DATA_DIR) + "/llama-2-tiny-random.gguf");
  ASSERT_TRUE(a.ok() && b.ok() && other.ok());
  const std::string d = model_digest(**a);
  EXPECT_EQ(d.size(), 64u);
  EXPECT_EQ(d, model_digest(**b));
  EXPECT_NE(d, model_digest(**other));
}

// Same header and metadata, different weights (as a fine-tune would have): the sampled weight
// bytes change the digest.
TEST(ModelDigestTest, ChangedWeightsChangeTheDigest) {
  auto bytes = read_file(std::string(GANTRY_MODELS_DIR) + "/stories260K.gguf");
  ASSERT_FALSE(bytes.empty());
  auto original = gguf::GgufFile::parse(bytes);
  ASSERT_TRUE(original.ok()) << original.error().message;
  const std::string d = model_digest(**original);
  const uint64_t data = (*original)->data_offset();
  std::vector<uint8_t> changed = bytes;
  changed[data + 10] ^= 0x5a; // inside the first 4 KiB sample of the tensor data
  auto f = gguf::GgufFile::parse(changed);
  ASSERT_TRUE(f.ok());
  EXPECT_NE(model_digest(**f), d);
}

} // namespace
} // namespace gantry::server
