#include "engine/gguf/gguf.h"

#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include "engine/gguf/gguf_writer.h"

namespace gantry::gguf {
namespace {

std::vector<uint8_t> small_file() {
  GgufWriter w;
  w.set_string("general.architecture", "llama");
  w.set_u32("llama.block_count", 2);
  w.set_f32("llama.rope.freq_base", 10000.0f);
  w.set_bool("flag", true);
  w.set_i32("neg", -5);
  w.set_u64("big", 1ull << 40);
  w.set_string_array("tokenizer.ggml.tokens", {"a", "bb", "ccc"});
  w.set_f32_array("tokenizer.ggml.scores", {0.5f, -1.0f, 2.0f});
  w.set_i32_array("tokenizer.ggml.token_type", {1, 3, 6});
  w.add_tensor("t0", TensorType::kF32, {4, 2}, [](uint8_t *d, uint64_t n) {
    for (uint64_t i = 0; i < n / 4; ++i) {
      float f = static_cast<float>(i);
      std::memcpy(d + 4 * i, &f, 4);
    }
  });
  w.add_tensor("t1", TensorType::kQ8_0, {64, 3},
               [](uint8_t *d, uint64_t n) { std::memset(d, 7, n); });
  return w.to_bytes();
}

TEST(GgufTest, ParsesEveryValueKindAndTensorViews) {
  auto bytes = small_file();
  auto f = GgufFile::parse(bytes);
  ASSERT_TRUE(f.ok()) << f.error().message;
  const GgufFile &g = **f;
  EXPECT_EQ(g.version(), 3u);
  EXPECT_EQ(g.get_string("general.architecture"), "llama");
  EXPECT_EQ(g.get_uint("llama.block_count"), 2u);
  EXPECT_FLOAT_EQ(*g.get_float("llama.rope.freq_base"), 10000.0f);
  EXPECT_EQ(g.get_bool("flag"), true);
  EXPECT_EQ(g.get_int("neg"), -5);
  EXPECT_FALSE(g.get_uint("neg").has_value()) << "negative values are not unsigned";
  EXPECT_EQ(g.get_uint("big"), 1ull << 40);
  ASSERT_NE(g.get_string_array("tokenizer.ggml.tokens"), nullptr);
  EXPECT_EQ((*g.get_string_array("tokenizer.ggml.tokens"))[2], "ccc");
  auto scores = g.get_f32_array("tokenizer.ggml.scores");
  ASSERT_TRUE(scores.ok());
  ASSERT_TRUE(scores->has_value());
  EXPECT_EQ((**scores)[1], -1.0f);
  auto types = g.get_int_array("tokenizer.ggml.token_type");
  ASSERT_TRUE(types.ok());
  EXPECT_EQ((**types)[2], 6);
  EXPECT_FALSE(g.get_f32_array("tokenizer.ggml.token_type").ok()) << "wrong element type";

  ASSERT_EQ(g.tensors().size(), 2u);
  const TensorInfo *t0 = g.tensor("t0");
  ASSERT_NE(t0, nullptr);
  EXPECT_EQ(t0->n_elements, 8u);
  EXPECT_EQ(t0->rows(), 2u);
  float f5;
  std::memcpy(&f5, t0->data + 20, 4);
  EXPECT_EQ(f5, 5.0f);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t0->data) - reinterpret_cast<uintptr_t>(bytes.data()),
            g.data_offset() + t0->offset)
      << "tensor data must be a view into the buffer, not a copy";
  const TensorInfo *t1 = g.tensor("t1");
  ASSERT_NE(t1, nullptr);
  EXPECT_EQ(t1->n_bytes, 3u * 2u * 34u); // 3 rows of two 32-element blocks
  EXPECT_EQ(t1->offset % g.alignment(), 0u);
}

TEST(GgufTest, OpensTheBundledModel) {
  auto f = GgufFile::open(std::string(GANTRY_MODELS_DIR) + "/stories260K.gguf");
  ASSERT_TRUE(f.ok()) << f.error().message;
  EXPECT_EQ((*f)->get_string("general.architecture"), "llama");
  EXPECT_EQ((*f)->tensors().size(), 48u);
  EXPECT_EQ((*f)->get_uint("llama.block_count"), 5u);
}

TEST(GgufTest, RejectsEveryTruncation) {
  auto bytes = small_file();
  auto whole = GgufFile::parse(bytes);
  ASSERT_TRUE(whole.ok());
  size_t end = 0; // end of the last tensor's data; only alignment padding follows it
  for (const auto &t : (*whole)->tensors()) {
    end = std::max<size_t>(end, (*whole)->data_offset() + t.offset + t.n_bytes);
  }
  // Every prefix that cuts into the header or a tensor must be refused, never crash or read
  // past the end (ASan checks the latter).
  for (size_t len = 0; len < end; ++len) {
    std::vector<uint8_t> cut(bytes.begin(), bytes.begin() + len);
    auto f = GgufFile::parse(cut);
    EXPECT_FALSE(f.ok()) << "truncated at " << len << " of " << bytes.size() << " was accepted";
    if (!f.ok()) {
      EXPECT_FALSE(f.error().message.empty());
    }
  }
}

TEST(GgufTest, TruncatedRealModelNamesTheProblem) {
  auto f = GgufFile::open(std::string(GANTRY_MODELS_DIR) + "/stories260K.gguf");
  ASSERT_TRUE(f.ok());
  std::vector<uint8_t> all(f.value()->file_size());
  FILE *fp = std::fopen((std::string(GANTRY_MODELS_DIR) + "/stories260K.gguf").c_str(), "rb");
  ASSERT_NE(fp, nullptr);
  ASSERT_EQ(std::fread(all.data(), 1, all.size(), fp), all.size());
  std::fclose(fp);
  for (size_t len :
       {size_t{3}, size_t{10}, size_t{100}, size_t{5000}, all.size() / 2, all.size() - 1}) {
    std::vector<uint8_t> cut(all.begin(), all.begin() + len);
    auto g = GgufFile::parse(cut);
    ASSERT_FALSE(g.ok()) << len;
    const std::string &m = g.error().message;
    EXPECT_TRUE(m.find("offset") != std::string::npos || m.find("tensor") != std::string::npos ||
                m.find("key") != std::string::npos)
        << "error should say where: " << m;
  }
}

void patch_u64(std::vector<uint8_t> &b, size_t off, uint64_t v) { std::memcpy(&b[off], &v, 8); }
void patch_u32(std::vector<uint8_t> &b, size_t off, uint32_t v) { std::memcpy(&b[off], &v, 4); }

TEST(GgufTest, RejectsHostileHeaders) {
  auto good = small_file();
  {
    auto b = good;
    b[0] = 'X';
    auto f = GgufFile::parse(b);
    ASSERT_FALSE(f.ok());
    EXPECT_NE(f.error().message.find("magic"), std::string::npos);
  }
  {
    auto b = good;
    patch_u32(b, 4, 1);
    EXPECT_FALSE(GgufFile::parse(b).ok()) << "version 1";
    patch_u32(b, 4, 99);
    EXPECT_FALSE(GgufFile::parse(b).ok()) << "version 99";
  }
  {
    auto b = good;
    patch_u64(b, 8, ~0ull); // tensor count
    auto f = GgufFile::parse(b);
    ASSERT_FALSE(f.ok());
    EXPECT_NE(f.error().message.find("tensor count"), std::string::npos);
  }
  {
    auto b = good;
    patch_u64(b, 16, 1ull << 60); // kv count
    EXPECT_FALSE(GgufFile::parse(b).ok());
  }
  {
    auto b = good;
    patch_u64(b, 24, 1ull << 62); // first key's length
    auto f = GgufFile::parse(b);
    ASSERT_FALSE(f.ok());
    EXPECT_NE(f.error().message.find("exceeds the file"), std::string::npos) << f.error().message;
  }
}

// Builds a file with one tensor whose header fields we control.
std::vector<uint8_t> tensor_file(uint32_t n_dims, std::vector<uint64_t> dims, uint32_t type,
                                 uint64_t offset) {
  std::vector<uint8_t> b;
  auto put32 = [&](uint32_t v) {
    uint8_t x[4];
    std::memcpy(x, &v, 4);
    b.insert(b.end(), x, x + 4);
  };
  auto put64 = [&](uint64_t v) {
    uint8_t x[8];
    std::memcpy(x, &v, 8);
    b.insert(b.end(), x, x + 8);
  };
  put32(0x46554747);
  put32(3);
  put64(1);
  put64(0);
  put64(1);
  b.push_back('w');
  put32(n_dims);
  for (auto d : dims)
    put64(d);
  put32(type);
  put64(offset);
  b.resize((b.size() + 31) / 32 * 32, 0);
  b.resize(b.size() + 256, 0);
  return b;
}

TEST(GgufTest, RejectsBadTensorInfos) {
  EXPECT_TRUE(GgufFile::parse(tensor_file(2, {8, 8}, 0, 0)).ok());
  struct Case {
    const char *what;
    std::vector<uint8_t> bytes;
  } cases[] = {
      {"zero dims", tensor_file(0, {}, 0, 0)},
      {"five dims", tensor_file(5, {1, 1, 1, 1, 1}, 0, 0)},
      {"huge dim", tensor_file(2, {1ull << 62, 4}, 0, 0)},
      {"overflowing product", tensor_file(4, {1ull << 32, 1ull << 32, 1ull << 32, 2}, 0, 0)},
      {"zero dim", tensor_file(2, {0, 4}, 0, 0)},
      {"unknown type", tensor_file(2, {8, 8}, 77, 0)},
      {"row not a block multiple", tensor_file(2, {33, 2}, 8, 0)},
      {"misaligned offset", tensor_file(2, {8, 8}, 0, 3)},
      {"data past the end", tensor_file(2, {1024, 1024}, 0, 0)},
      {"offset past the end", tensor_file(1, {8}, 0, 1ull << 40)},
  };
  for (auto &c : cases) {
    auto f = GgufFile::parse(c.bytes);
    EXPECT_FALSE(f.ok()) << c.what << " was accepted";
    if (!f.ok()) {
      EXPECT_NE(f.error().message.find("'w'"), std::string::npos)
          << c.what << ": the error should name the tensor: " << f.error().message;
    }
  }
}

TEST(GgufTest, SurvivesRandomCorruption) {
  auto good = small_file();
  std::mt19937 rng(1234);
  int accepted = 0;
  for (int i = 0; i < 3000; ++i) {
    auto b = good;
    int flips = 1 + static_cast<int>(rng() % 4);
    for (int k = 0; k < flips; ++k)
      b[rng() % b.size()] = static_cast<uint8_t>(rng());
    auto f = GgufFile::parse(b);
    if (f.ok()) {
      ++accepted; // a flip inside tensor data or a string is still a valid file
      for (const auto &t : (*f)->tensors()) {
        ASSERT_LE(t.data + t.n_bytes, b.data() + b.size());
      }
    }
  }
  EXPECT_GT(accepted, 0);
}

TEST(GgufTest, WriterRoundTripsThroughAFile) {
  GgufWriter w;
  w.set_string("general.architecture", "llama");
  w.add_tensor("x", TensorType::kF16, {32, 4},
               [](uint8_t *d, uint64_t n) { std::memset(d, 1, n); });
  std::string path = ::testing::TempDir() + "/roundtrip.gguf";
  ASSERT_TRUE(w.write(path).ok());
  auto f = GgufFile::open(path);
  ASSERT_TRUE(f.ok()) << f.error().message;
  EXPECT_EQ((*f)->tensor("x")->n_bytes, 32u * 4u * 2u);
  EXPECT_EQ((*f)->tensor("x")->data[17], 1);
  auto missing = GgufFile::open(path + ".nope");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code, ErrorCode::kIo);
}

} // namespace
} // namespace gantry::gguf
