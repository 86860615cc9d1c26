// The webhook client's SSRF defences (audit H6, H7): one resolution per attempt, every answer
// checked, the connection pinned to a checked address, and the deadline covering DNS. Names are
// answered by a scripted resolver; the only host name used is "localhost" and the only address
// ever connected to is 127.0.0.1, so nothing leaves the machine even if a check regressed.
#include "http/webhook_client.h"

#include <gtest/gtest.h>

#include <deque>
#include <mutex>
#include <thread>

#include "http/test_receivers.h"

namespace gantry::http {
namespace {

using namespace std::chrono_literals;
namespace ip = boost::asio::ip;
using testing::Receiver;
using testing::SilentReceiver;

// Answers each call with the next scripted list (the last one repeats): a rebinding DNS server.
class ScriptedResolver final : public Resolver {
public:
  ScriptedResolver(std::vector<std::vector<std::string>> answers,
                   std::chrono::milliseconds delay = 0ms)
      : delay_(delay) {
    for (auto &a : answers)
      answers_.push_back(std::move(a));
  }
  Result<std::vector<ip::address>> resolve(const std::string &host,
                                           std::chrono::milliseconds deadline) override {
    std::vector<std::string> now;
    {
      std::lock_guard<std::mutex> lk(mu_);
      ++calls_;
      hosts_.push_back(host);
      now = answers_.front();
      if (answers_.size() > 1)
        answers_.pop_front();
    }
    if (delay_ > deadline) { // a nameserver that never answers in time
      std::this_thread::sleep_for(deadline);
      Error e = Error::io("timed out");
      e.param = std::string(kTimeout);
      return e;
    }
    std::this_thread::sleep_for(delay_);
    std::vector<ip::address> out;
    for (const auto &a : now)
      out.push_back(ip::make_address(a));
    return out;
  }
  int calls() {
    std::lock_guard<std::mutex> lk(mu_);
    return calls_;
  }

private:
  std::mutex mu_;
  std::deque<std::vector<std::string>> answers_;
  std::vector<std::string> hosts_;
  int calls_ = 0;
  std::chrono::milliseconds delay_;
};

struct Stack {
  explicit Stack(std::vector<std::vector<std::string>> answers, DestinationPolicy policy,
                 std::chrono::milliseconds dns_delay = 0ms, std::chrono::milliseconds deadline = 5s)
      : resolver(std::move(answers), dns_delay), pool({}, clock) {
    WebhookClientOptions o;
    o.policy = policy;
    o.deadline = deadline;
    o.dns_deadline = std::min(deadline, std::chrono::milliseconds(300));
    client = std::make_unique<WebhookClient>(o, resolver, pool, clock);
  }
  SystemClock clock;
  ScriptedResolver resolver;
  OutboundClient pool;
  std::unique_ptr<WebhookClient> client;
};

std::string url(uint16_t port, const char *host = "localhost") {
  return "http://" + std::string(host) + ":" + std::to_string(port) + "/hook";
}

// H6: the name resolves once per attempt and the connection goes to that validated answer. A
// rebinding server that answers 127.0.0.1 first and 169.254.169.254 afterwards never gets its
// second answer used: no second lookup happens between check and connect.
TEST(WebhookClient, ConnectsToTheAddressItValidatedWithoutASecondLookup) {
  Receiver rx({.status = 204, .body = ""});
  Stack s({{"127.0.0.1"}, {"169.254.169.254"}}, {.allow_loopback = true});
  auto r = s.client->post(url(rx.port()), "{}", {});
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->status, 204);
  EXPECT_EQ(s.resolver.calls(), 1) << "one resolution per attempt, reused for the connection";
  ASSERT_EQ(rx.requests(), 1);
  EXPECT_EQ(rx.hosts()[0], "localhost:" + std::to_string(rx.port())) << "Host keeps the name";
  // The next attempt resolves again and gets the internal answer: refused before any connect.
  auto r2 = s.client->post(url(rx.port()), "{}", {});
  ASSERT_FALSE(r2);
  EXPECT_EQ(r2.error().param, kBlockedDestination);
  EXPECT_EQ(rx.requests(), 1);
}

// Every answer must pass: one internal address among public-looking ones blocks the attempt.
TEST(WebhookClient, RefusesWhenAnyAnswerIsInternal) {
  Receiver rx({.status = 200});
  for (const char *internal : {"10.0.0.5", "169.254.169.254", "::ffff:169.254.169.254",
                               "64:ff9b::a9fe:a9fe", "198.18.0.1", "fd00::1"}) {
    Stack s({{"127.0.0.1", internal}}, {.allow_loopback = true});
    auto r = s.client->post(url(rx.port()), "{}", {});
    ASSERT_FALSE(r) << internal;
    EXPECT_EQ(r.error().param, kBlockedDestination) << internal;
  }
  // Loopback itself is refused unless configured, for names and literals alike.
  Stack strict({{"127.0.0.1"}}, {});
  auto named = strict.client->post(url(rx.port()), "{}", {});
  ASSERT_FALSE(named);
  EXPECT_EQ(named.error().param, kBlockedDestination);
  auto literal = strict.client->post(url(rx.port(), "127.0.0.1"), "{}", {});
  ASSERT_FALSE(literal);
  EXPECT_EQ(literal.error().param, kBlockedDestination);
  EXPECT_EQ(strict.resolver.calls(), 1) << "literals are never resolved";
  EXPECT_EQ(rx.requests(), 0);
}

// L3: IPv6-literal webhooks connect (the brackets used to reach the resolver).
TEST(WebhookClient, Ipv6LiteralUrlsWorkWhenAllowed) {
  // A receiver on ::1 would need IPv6 loopback; use the v4-mapped form of 127.0.0.1 instead,
  // which exercises the same bracket handling and connects over IPv4.
  Receiver rx({.status = 200});
  Stack s({{"127.0.0.1"}}, {.allow_loopback = true});
  auto r =
      s.client->post("http://[::ffff:127.0.0.1]:" + std::to_string(rx.port()) + "/h", "{}", {});
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(s.resolver.calls(), 0);
}

// H7 / L4: a nameserver that never answers costs at most the DNS share of the deadline.
TEST(WebhookClient, SlowDnsEndsAtTheDeadline) {
  Stack s({{"127.0.0.1"}}, {.allow_loopback = true}, /*dns_delay=*/60s, /*deadline=*/2s);
  const auto t0 = std::chrono::steady_clock::now();
  auto r = s.client->post(url(9), "{}", {});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().param, kTimeout);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);
}

// L4: the deadline covers the whole attempt, so a blackhole receiver costs at most that.
TEST(WebhookClient, SilentReceiverTimesOutWithinTheAttemptDeadline) {
  SilentReceiver silent;
  Stack s({{"127.0.0.1"}}, {.allow_loopback = true}, 0ms, /*deadline=*/500ms);
  const auto t0 = std::chrono::steady_clock::now();
  auto r = s.client->post(url(silent.port()), "{}", {});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().param, kTimeout) << r.error().message;
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 3s);
}

// The real resolver answers "localhost" from the hosts file, off the caller's thread, within
// its deadline (no query leaves the machine).
TEST(AsioResolver, ResolvesLocalhost) {
  AsioResolver resolver;
  auto r = resolver.resolve("localhost", 2s);
  ASSERT_TRUE(r) << r.error().message;
  ASSERT_FALSE(r->empty());
  for (const auto &a : *r)
    EXPECT_TRUE(a.is_loopback()) << a.to_string();
}

} // namespace
} // namespace gantry::http
