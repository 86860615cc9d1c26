// SecretBox (audit M5): webhook secrets round-trip sealed, every seal is fresh, an altered value
// or another pepper's never opens, and a value from before sealing reads as it is.
#include "control/secret_box.h"

#include <gtest/gtest.h>

namespace gantry::control {
namespace {

TEST(SecretBox, SealsSoTheStoredValueHoldsNoPlaintextAndOpensBack) {
  const SecretBox box("pepper-for-tests-0123456789abcdef");
  const std::string secret = "whsec_c2VjcmV0LXNpZ25pbmcta2V5LTAxMjM0NTY3ODk=";
  const std::string a = box.seal(secret), b = box.seal(secret);
  EXPECT_TRUE(SecretBox::is_sealed(a));
  EXPECT_EQ(a.find("whsec_"), std::string::npos);
  EXPECT_EQ(a.find("c2VjcmV0"), std::string::npos);
  EXPECT_NE(a, b) << "a fresh nonce per seal";
  EXPECT_EQ(*box.open(a), secret);
  EXPECT_EQ(*box.open(b), secret);
  EXPECT_EQ(*box.open(box.seal("")), "");
}

TEST(SecretBox, AlteredValuesAndOtherPeppersNeverOpen) {
  const SecretBox box("pepper-for-tests-0123456789abcdef");
  const std::string sealed = box.seal("whsec_abc");
  const SecretBox other("another-pepper-0123456789abcdef");
  EXPECT_EQ(other.open(sealed).error().code, ErrorCode::kCorruptData);
  for (size_t i = 4; i < sealed.size(); i += 7) {
    std::string bad = sealed;
    bad[i] = bad[i] == '0' ? '1' : '0';
    EXPECT_FALSE(box.open(bad)) << "flipped at " << i;
  }
  for (const char *junk : {"gs1:", "gs1:zz", "gs1:0", "gs1:00112233"})
    EXPECT_FALSE(box.open(junk)) << junk;
  // Written before sealing existed: read as it is (the next rotation seals).
  EXPECT_EQ(*box.open("whsec_legacy"), "whsec_legacy");
}

} // namespace
} // namespace gantry::control
