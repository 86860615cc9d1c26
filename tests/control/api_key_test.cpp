#include "control/api_key.h"
#include "control/webhook_signature.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <set>
#include <thread>

namespace gantry::control {
namespace {

TEST(ApiKey, FormatParseRoundTripAndRejectsLookalikes) {
  KeyParts p = generate_key();
  std::string key = format_key(p);
  EXPECT_EQ(key.substr(0, 4), "gsk_");
  auto back = parse_key(key);
  ASSERT_TRUE(back);
  EXPECT_EQ(back->id, p.id);
  EXPECT_EQ(back->secret, p.secret);
  EXPECT_FALSE(parse_key(key.substr(0, key.size() - 1)));
  EXPECT_FALSE(parse_key(key + "x"));
  EXPECT_FALSE(parse_key("sk-" + key.substr(4)));
  std::string bad = key;
  bad[20] = '-';
  EXPECT_FALSE(parse_key(bad));
  EXPECT_FALSE(parse_key(""));
}

TEST(ApiKey, KeysAreUnique) {
  std::set<std::string> ids;
  for (int i = 0; i < 1000; ++i)
    ids.insert(format_key(generate_key()));
  EXPECT_EQ(ids.size(), 1000u);
}

// Audit I: the pepper from the environment skipped the 16-character minimum of the file.
TEST(ApiKey, PepperFromTheEnvironmentNeedsSixteenCharacters) {
  ::setenv("GANTRY_KEY_PEPPER", "short-pepper", 1);
  auto short_pepper = load_pepper("/nonexistent-gantry-data-dir");
  ::setenv("GANTRY_KEY_PEPPER", "a-pepper-of-20-chars", 1);
  auto ok = load_pepper("/nonexistent-gantry-data-dir");
  ::unsetenv("GANTRY_KEY_PEPPER");
  ASSERT_FALSE(short_pepper);
  EXPECT_NE(short_pepper.error().message.find("16"), std::string::npos);
  ASSERT_TRUE(ok) << ok.error().message;
  EXPECT_EQ(*ok, "a-pepper-of-20-chars");
}

TEST(ApiKey, HashDependsOnPepperAndSecret) {
  EXPECT_EQ(hash_secret("pepper", "s"), hash_secret("pepper", "s"));
  EXPECT_NE(hash_secret("pepper", "s"), hash_secret("pepper2", "s"));
  EXPECT_NE(hash_secret("pepper", "s"), hash_secret("pepper", "t"));
  EXPECT_EQ(hash_secret("pepper", "s").size(), 64u);
  EXPECT_TRUE(hashes_equal(hash_secret("p", "s"), hash_secret("p", "s")));
  EXPECT_FALSE(hashes_equal(hash_secret("p", "s"), hash_secret("p", "t")));
  EXPECT_FALSE(hashes_equal("", ""));
}

// hash_secret keeps a keyed HMAC context per thread: its answers must be HMAC-SHA256 exactly,
// whatever order peppers and secrets come in (every stored key hash depends on it).
TEST(ApiKey, HashIsHmacSha256AcrossPepperChanges) {
  // RFC 4231, test case 2 (key "Jefe") and test case 1 (key 0x0b x 20).
  const std::string tc2 = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";
  const std::string tc1 = "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7";
  const std::string key1(20, '\x0b');
  for (int round = 0; round < 3; ++round) {
    EXPECT_EQ(hash_secret("Jefe", "what do ya want for nothing?"), tc2);
    EXPECT_EQ(hash_secret(key1, "Hi There"), tc1);
    EXPECT_EQ(hash_secret(key1, "Hi There"), tc1); // the same key twice: the reused context
  }
  // An empty pepper is a valid (empty) HMAC key, not "keep the previous key".
  EXPECT_EQ(hash_secret("", ""),
            "b613679a0814d9ec772f95d778c35fc5ff1697c493715653c6c712144292c5ad");
  EXPECT_NE(hash_secret("", "Hi There"), hash_secret(key1, "Hi There"));
  // Another thread computes the same hashes with its own context.
  std::string other;
  std::thread t([&] { other = hash_secret("Jefe", "what do ya want for nothing?"); });
  t.join();
  EXPECT_EQ(other, tc2);
}

// The per-thread memory of the last secret hashed: a repeat gets the same (RFC) hash, and any
// other secret of the same or another length, or the same secret under another pepper, its own.
TEST(ApiKey, TheRememberedLastHashIsReturnedOnlyForTheSameSecretAndPepper) {
  const std::string tc2 = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";
  const std::string secret = "what do ya want for nothing?";
  EXPECT_EQ(hash_secret("Jefe", secret), tc2);
  EXPECT_EQ(hash_secret("Jefe", secret), tc2);
  std::string same_length = secret;
  same_length.back() = '!';
  const std::string h_same_length = hash_secret("Jefe", same_length);
  EXPECT_NE(h_same_length, tc2);
  EXPECT_EQ(hash_secret("Jefe", secret), tc2);
  EXPECT_EQ(hash_secret("Jefe", same_length), h_same_length);
  EXPECT_NE(hash_secret("Jefe", secret.substr(1)), tc2);
  EXPECT_NE(hash_secret("Jeff", secret), tc2);
  EXPECT_EQ(hash_secret("Jefe", secret), tc2);
  // An empty secret after a non-empty one is hashed, not taken for the remembered one.
  EXPECT_EQ(hash_secret("", ""),
            "b613679a0814d9ec772f95d778c35fc5ff1697c493715653c6c712144292c5ad");
}

TEST(WebhookSignature, MatchesTheStandardWebhooksReferenceVector) {
  // From the Standard Webhooks specification's test vectors.
  const std::string secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
  const std::string id = "msg_p5jXN8AQM9LWM0D4loKWxJek";
  const std::string body = R"({"test": 2432232314})";
  auto h = sign_webhook({secret}, id, 1614265330, body);
  ASSERT_TRUE(h);
  EXPECT_EQ((*h)[2].second, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
  EXPECT_TRUE(verify_webhook(secret, id, "1614265330", body, (*h)[2].second));
  EXPECT_FALSE(verify_webhook(secret, id, "1614265331", body, (*h)[2].second));
}

TEST(WebhookSignature, RotationSignsWithEverySecret) {
  const std::string a = generate_webhook_secret(), b = generate_webhook_secret();
  auto h = sign_webhook({a, b}, "msg_1", 100, "{}");
  ASSERT_TRUE(h);
  EXPECT_TRUE(verify_webhook(a, "msg_1", "100", "{}", (*h)[2].second));
  EXPECT_TRUE(verify_webhook(b, "msg_1", "100", "{}", (*h)[2].second));
  EXPECT_FALSE(verify_webhook(generate_webhook_secret(), "msg_1", "100", "{}", (*h)[2].second));
  EXPECT_FALSE(sign_webhook({"whsec_!!"}, "m", 1, "{}"));
}

} // namespace
} // namespace gantry::control
