// Audit M1: the admin token has a minimum length, and failed attempts are throttled per peer
// address, logged, and tracked in a bounded table.
#include "server/admin_api.h"

#include <gtest/gtest.h>

#include "support/fake_clock.h"

namespace gantry::server {
namespace {

const std::string kToken = "0123456789abcdef0123456789abcdef"; // 32 characters

http::Request admin_request(const std::string &peer, const std::string &token) {
  http::Request r;
  r.method = http::Method::kGet;
  r.path = "/admin/v1/keys";
  r.remote_address = peer;
  r.headers.push_back({"Authorization", "Bearer " + token});
  return r;
}

TEST(AdminAuth, ATokenShorterThan32CharactersIsAStartUpError) {
  FakeClock clock;
  auto short_token = AdminAuth::create("test-admin-token-1234", clock, nullptr);
  ASSERT_FALSE(short_token);
  EXPECT_NE(short_token.error().message.find("GANTRY_ADMIN_TOKEN"), std::string::npos);
  EXPECT_NE(short_token.error().message.find("32"), std::string::npos);
  EXPECT_TRUE(AdminAuth::create(kToken, clock, nullptr));
  auto disabled = AdminAuth::create("", clock, nullptr);
  ASSERT_TRUE(disabled) << "no token: the admin API is off, not an error";
  auto refused = (*disabled)->check(admin_request("127.0.0.1:1", ""));
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->code, ErrorCode::kPermissionDenied);
}

TEST(AdminAuth, GuessingIsThrottledPerPeerAndLogged) {
  FakeClock clock;
  std::vector<std::string> log;
  auto auth = AdminAuth::create(kToken, clock, [&](const std::string &l) { log.push_back(l); });
  ASSERT_TRUE(auth);
  AdminAuth &a = **auth;
  EXPECT_FALSE(a.check(admin_request("10.0.0.1:5000", kToken))) << "the right token passes";
  for (int i = 0; i < AdminAuth::kMaxFailures; ++i) {
    auto r = a.check(admin_request("10.0.0.1:" + std::to_string(6000 + i), "guess" + kToken));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->code, ErrorCode::kUnauthorized) << i;
  }
  ASSERT_EQ(log.size(), static_cast<size_t>(AdminAuth::kMaxFailures));
  EXPECT_NE(log.front().find("10.0.0.1"), std::string::npos) << log.front();
  EXPECT_EQ(log.front().find("guess"), std::string::npos) << "the guess is never logged";
  EXPECT_NE(log.back().find("refused"), std::string::npos) << log.back();

  // Locked out: even the right token is refused (another source port changes nothing), and
  // further failures are not logged again.
  for (const auto &token : {std::string("guess"), kToken}) {
    auto r = a.check(admin_request("10.0.0.1:7000", token));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->code, ErrorCode::kRateLimited);
    EXPECT_GT(r->retry_after_ms, 0);
    EXPECT_LE(r->retry_after_ms, 60'000);
  }
  EXPECT_EQ(log.size(), static_cast<size_t>(AdminAuth::kMaxFailures));
  EXPECT_FALSE(a.check(admin_request("10.0.0.2:5000", kToken))) << "other peers are unaffected";
  EXPECT_FALSE(a.check(admin_request("::1:5000", kToken)));

  clock.advance(AdminAuth::kWindow);
  EXPECT_FALSE(a.check(admin_request("10.0.0.1:8000", kToken))) << "the window has passed";
}

TEST(AdminAuth, ThePeerTableIsBounded) {
  FakeClock clock;
  auto auth = AdminAuth::create(kToken, clock, nullptr);
  ASSERT_TRUE(auth);
  for (size_t i = 0; i < AdminAuth::kMaxPeers + 500; ++i) {
    const std::string peer = "10." + std::to_string(i / 65536) + "." +
                             std::to_string((i / 256) % 256) + "." + std::to_string(i % 256) + ":1";
    ASSERT_TRUE((*auth)->check(admin_request(peer, "wrong")));
  }
  EXPECT_LE((*auth)->tracked_peers(), AdminAuth::kMaxPeers);
}

} // namespace
} // namespace gantry::server
