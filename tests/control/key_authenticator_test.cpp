#include "control/key_authenticator.h"

#include <gtest/gtest.h>

#include <limits>

#include "control/api_key.h"
#include "control/key_service.h"
#include "control/test_store.h"
#include "support/fake_clock.h"

namespace gantry::control {
namespace {

using namespace std::chrono_literals;
using testing::TempStore;

std::string bearer(const std::string &k) { return "Bearer " + k; }

TEST(KeyAuth, OpenUntilTheFirstKeyThenRequired) {
  TempStore store;
  FakeClock clock;
  KeyAuthenticator auth(*store, "pepper-0123456789", clock, AuthMode::kAuto);
  ASSERT_TRUE(auth.refresh());
  auto open = auth.authenticate(std::nullopt);
  ASSERT_TRUE(open);
  EXPECT_FALSE(open->has_value());
  auto k = create_key(*store, "pepper-0123456789", {"p", "n", {}, {}, 0}, clock.unix_seconds());
  ASSERT_TRUE(k);
  ASSERT_TRUE(auth.refresh());
  auto none = auth.authenticate(std::nullopt);
  ASSERT_FALSE(none);
  EXPECT_EQ(none.error().code, ErrorCode::kUnauthorized);
  auto ok = auth.authenticate(bearer(k->key));
  ASSERT_TRUE(ok);
  ASSERT_TRUE(ok->has_value());
  EXPECT_EQ((*ok)->key_id, k->record.id);
  EXPECT_EQ((*ok)->project, "p");
}

// Audit H3: revoking (or expiring) the last key must not reopen the API in "auto" mode, neither
// in this process nor in one started later on the same database.
TEST(KeyAuth, AutoStaysClosedAfterEveryKeyIsRevokedOrExpired) {
  TempStore store;
  FakeClock clock;
  KeyAuthenticator auth(*store, "pepper-0123456789", clock, AuthMode::kAuto);
  auto a = create_key(*store, "pepper-0123456789", {"p", "a", {}, {}, 0}, clock.unix_seconds());
  auto b = create_key(*store, "pepper-0123456789", {"p", "b", {}, {}, 60}, clock.unix_seconds());
  ASSERT_TRUE(a && b);
  ASSERT_TRUE(revoke_key(*store, a->record.id, clock.unix_seconds()));
  clock.advance(std::chrono::seconds(120)); // b has expired
  ASSERT_EQ(*store->count_active_keys(clock.unix_seconds()), 0);
  ASSERT_TRUE(auth.refresh());
  auto none = auth.authenticate(std::nullopt);
  ASSERT_FALSE(none);
  EXPECT_EQ(none.error().code, ErrorCode::kUnauthorized);
  EXPECT_FALSE(auth.authenticate(bearer("not-a-key")));
  EXPECT_FALSE(auth.authenticate(bearer(a->key)));
  KeyAuthenticator restarted(*store, "pepper-0123456789", clock, AuthMode::kAuto);
  ASSERT_TRUE(restarted.refresh());
  EXPECT_FALSE(restarted.authenticate(std::nullopt));
}

// Audit H3: local development gets an explicit mode without keys instead of relying on "auto"
// with an empty key table; it never looks at a key, even when keys exist.
TEST(KeyAuth, OffModeAcceptsEveryCallAnonymously) {
  TempStore store;
  FakeClock clock;
  auto k = create_key(*store, "pepper-0123456789", {"p", "n", {}, {}, 0}, clock.unix_seconds());
  ASSERT_TRUE(k);
  KeyAuthenticator auth(*store, "pepper-0123456789", clock, AuthMode::kOff);
  ASSERT_TRUE(auth.refresh());
  EXPECT_FALSE(auth.required());
  for (const std::optional<std::string> &header :
       std::vector<std::optional<std::string>>{std::nullopt, bearer("x"), bearer(k->key)}) {
    auto r = auth.authenticate(header);
    ASSERT_TRUE(r);
    EXPECT_FALSE(r->has_value()) << "off mode attributes no call to a key";
  }
  EXPECT_EQ(auth_mode_from_name("off"), AuthMode::kOff);
  EXPECT_EQ(auth_mode_from_name("auto"), AuthMode::kAuto);
  EXPECT_EQ(auth_mode_from_name("required"), AuthMode::kRequired);
  EXPECT_FALSE(auth_mode_from_name("none"));
}

// Audit H3: a server whose API answers without a key says so loudly at start-up, and a closed
// one says nothing.
TEST(KeyAuth, StartUpWarningWheneverTheApiIsOpen) {
  auto off = open_api_warning(AuthMode::kOff, false, "127.0.0.1");
  ASSERT_TRUE(off);
  EXPECT_NE(off->find("WARNING"), std::string::npos);
  EXPECT_NE(off->find("off"), std::string::npos);
  EXPECT_EQ(off->find("network"), std::string::npos) << "loopback only";
  auto fresh = open_api_warning(AuthMode::kAuto, false, "0.0.0.0");
  ASSERT_TRUE(fresh);
  EXPECT_NE(fresh->find("no API key exists"), std::string::npos);
  EXPECT_NE(fresh->find("network"), std::string::npos) << "0.0.0.0 is reachable from outside";
  EXPECT_FALSE(open_api_warning(AuthMode::kAuto, true, "0.0.0.0"));
  EXPECT_FALSE(open_api_warning(AuthMode::kRequired, true, "0.0.0.0"));
}

// Audit I: `now + expires_in` and `now + grace` overflowed int64 (undefined behaviour) for the
// huge numbers the admin API accepts; they are clamped to a century.
TEST(KeyAuth, HugeExpiryAndGraceAreClampedNotOverflowed) {
  TempStore store;
  FakeClock clock;
  const int64_t now = clock.unix_seconds();
  auto k = create_key(*store, "pepper-0123456789",
                      {"p", "n", {}, {}, std::numeric_limits<int64_t>::max()}, now);
  ASSERT_TRUE(k);
  EXPECT_EQ(k->record.expires_at, now + kMaxDurationS);
  auto rotated = rotate_key(*store, "pepper-0123456789", k->record.id,
                            std::numeric_limits<int64_t>::max(), now);
  ASSERT_TRUE(rotated);
  EXPECT_EQ(rotated->record.prev_expires_at, now + kMaxDurationS);
  KeyAuthenticator auth(*store, "pepper-0123456789", clock, AuthMode::kAuto);
  ASSERT_TRUE(auth.refresh());
  EXPECT_TRUE(auth.authenticate(bearer(k->key))) << "the old secret is in its grace period";
  EXPECT_TRUE(auth.authenticate(bearer(rotated->key)));
}

TEST(KeyAuth, WrongSecretUnknownIdAndMessagesNeverEchoTheKey) {
  TempStore store;
  FakeClock clock;
  KeyAuthenticator auth(*store, "pepper-0123456789", clock, AuthMode::kRequired);
  ASSERT_TRUE(auth.refresh());
  auto k = create_key(*store, "pepper-0123456789", {"p", "", {}, {}, 0}, 0);
  ASSERT_TRUE(k);
  std::string wrong = k->key;
  wrong.back() = wrong.back() == 'a' ? 'b' : 'a';
  for (const std::string &bad : {wrong, format_key(generate_key()), std::string("gsk_short")}) {
    auto r = auth.authenticate(bearer(bad));
    ASSERT_FALSE(r) << bad;
    EXPECT_EQ(r.error().code, ErrorCode::kUnauthorized);
    EXPECT_EQ(r.error().message.find(bad), std::string::npos);
    EXPECT_EQ(r.error().message.find(k->key.substr(4, 12)), std::string::npos);
  }
  // A key from another pepper (another installation) does not work here.
  KeyAuthenticator other(*store, "another-pepper-xyz", clock, AuthMode::kRequired);
  EXPECT_FALSE(other.authenticate(bearer(k->key)));
}

TEST(KeyAuth, RotationGraceAcceptsBothSecretsUntilItEnds) {
  TempStore store;
  FakeClock clock;
  const std::string pepper = "pepper-0123456789";
  KeyAuthenticator auth(*store, pepper, clock, AuthMode::kRequired);
  auto old_key = create_key(*store, pepper, {"p", "", {}, {}, 0}, clock.unix_seconds());
  ASSERT_TRUE(old_key);
  auto new_key = rotate_key(*store, pepper, old_key->record.id, 3600, clock.unix_seconds());
  ASSERT_TRUE(new_key);
  ASSERT_TRUE(auth.refresh());
  EXPECT_TRUE(auth.authenticate(bearer(old_key->key)));
  EXPECT_TRUE(auth.authenticate(bearer(new_key->key)));
  clock.advance(3599s);
  EXPECT_TRUE(auth.authenticate(bearer(old_key->key)));
  clock.advance(1s);
  EXPECT_FALSE(auth.authenticate(bearer(old_key->key)));
  EXPECT_TRUE(auth.authenticate(bearer(new_key->key)));
  // Rotating without grace cuts the previous secret off at once.
  auto third = rotate_key(*store, pepper, old_key->record.id, 0, clock.unix_seconds());
  ASSERT_TRUE(third);
  ASSERT_TRUE(auth.refresh());
  EXPECT_FALSE(auth.authenticate(bearer(new_key->key)));
  EXPECT_TRUE(auth.authenticate(bearer(third->key)));
}

TEST(KeyAuth, RevocationFromAnotherConnectionIsSeenAtTheNextRefresh) {
  TempStore store;
  FakeClock clock;
  const std::string pepper = "pepper-0123456789";
  KeyAuthenticator auth(*store, pepper, clock, AuthMode::kRequired);
  auto k = create_key(*store, pepper, {"p", "", {}, {}, 0}, 0);
  ASSERT_TRUE(k);
  ASSERT_TRUE(auth.refresh());
  ASSERT_TRUE(auth.authenticate(bearer(k->key))); // now cached
  {
    // `gantry keys revoke` in another process: a second connection to the same database.
    auto other = SqliteStore::open(store.dir());
    ASSERT_TRUE(other);
    ASSERT_TRUE(revoke_key(**other, k->record.id, 5));
  }
  ASSERT_TRUE(auth.refresh());
  auto r = auth.authenticate(bearer(k->key));
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("revoked"), std::string::npos);
}

TEST(KeyAuth, ExpiredKeysAreRefused) {
  TempStore store;
  FakeClock clock;
  const std::string pepper = "pepper-0123456789";
  KeyAuthenticator auth(*store, pepper, clock, AuthMode::kRequired);
  auto k = create_key(*store, pepper, {"p", "", {}, {}, 60}, clock.unix_seconds());
  ASSERT_TRUE(k);
  EXPECT_TRUE(auth.authenticate(bearer(k->key)));
  clock.advance(60s);
  auto r = auth.authenticate(bearer(k->key));
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("expired"), std::string::npos);
}

TEST(KeyService, DurationsParse) {
  EXPECT_EQ(*parse_duration_s("30d"), 30 * 86400);
  EXPECT_EQ(*parse_duration_s("24h"), 86400);
  EXPECT_EQ(*parse_duration_s("90m"), 5400);
  EXPECT_EQ(*parse_duration_s("45s"), 45);
  EXPECT_EQ(*parse_duration_s("120"), 120);
  EXPECT_FALSE(parse_duration_s("1w"));
  EXPECT_FALSE(parse_duration_s("-5s"));
  EXPECT_FALSE(parse_duration_s(""));
}

} // namespace
} // namespace gantry::control
