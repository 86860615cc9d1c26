#include "cache/cache_key.h"

#include <gtest/gtest.h>

#include <set>

namespace gantry::cache {
namespace {

TEST(Sha256Test, KnownVectors) {
  Sha256 empty;
  EXPECT_EQ(empty.hex_digest(), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  Sha256 abc;
  abc.update(std::string_view("ab"));
  abc.update(std::string_view("c"));
  EXPECT_EQ(abc.hex_digest(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(KeyBuilderTest, SameFieldsSameKeyAndNamespacePrefix) {
  const std::vector<int32_t> ids{1, 2, 3};
  auto a = KeyBuilder("ns.v1").add("m", "x").add("ids", std::span<const int32_t>(ids)).finish();
  auto b = KeyBuilder("ns.v1").add("m", "x").add("ids", std::span<const int32_t>(ids)).finish();
  EXPECT_EQ(a, b);
  EXPECT_TRUE(a.starts_with("ns.v1:"));
  EXPECT_EQ(a.size(), 6u + 64u);
  EXPECT_NE(a,
            KeyBuilder("ns.v2").add("m", "x").add("ids", std::span<const int32_t>(ids)).finish());
}

// Encodings that a naive concatenation would confuse all give distinct keys.
TEST(KeyBuilderTest, FieldBoundariesTypesAndAbsenceAreDistinct) {
  std::set<std::string> keys;
  auto add = [&](const std::string &k) { EXPECT_TRUE(keys.insert(k).second) << k; };
  add(KeyBuilder("t").add("a", "bc").finish());
  add(KeyBuilder("t").add("ab", "c").finish());
  add(KeyBuilder("t").add("a", "b").add("a", "c").finish());
  add(KeyBuilder("t").add("a", int64_t{1}).finish());
  add(KeyBuilder("t").add("a", uint64_t{1}).finish());
  add(KeyBuilder("t").add("a", true).finish());
  add(KeyBuilder("t").add("a", false).finish());
  add(KeyBuilder("t").add("a", 1.0f).finish());
  add(KeyBuilder("t").add("a", std::optional<uint64_t>()).finish());
  add(KeyBuilder("t").add("a", std::optional<uint64_t>(0)).finish());
  const std::vector<int32_t> one{1}, two{1, 0};
  add(KeyBuilder("t").add("a", std::span<const int32_t>(one)).finish());
  add(KeyBuilder("t").add("a", std::span<const int32_t>(two)).finish());
  add(KeyBuilder("t").add("a", 0.1f).finish());
  add(KeyBuilder("t").add("a", 0.10000001f).finish());
}

} // namespace
} // namespace gantry::cache
