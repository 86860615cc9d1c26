// The webhook dispatcher over the real SQLite records and the real outbound stack, against
// receivers on 127.0.0.1: per-project fairness with a blackhole tenant (audit L4), coarse error
// classes instead of client text (H6's oracle), and 410 disabling a URL per project.
#include "jobs/webhook_dispatcher.h"

#include <gtest/gtest.h>

#include <cmath>

#include <functional>

#include "control/temp_dir.h"
#include "http/test_receivers.h"
#include "http/webhook_client.h"
#include "store/sqlite/sqlite_job_records.h"
#include "store/sqlite/sqlite_store.h"

namespace gantry::jobs {
namespace {

using namespace std::chrono_literals;
using gantry::testing::Receiver;
using gantry::testing::SilentReceiver;
using gantry::testing::TempDir;
using SteadyClock = std::chrono::steady_clock;

std::string hook(uint16_t port) { return "http://127.0.0.1:" + std::to_string(port) + "/hook"; }

class DispatcherTest : public ::testing::Test {
protected:
  void SetUp() override {
    auto store = control::SqliteStore::open(dir_.path()); // creates and migrates gantry.db
    ASSERT_TRUE(store) << store.error().message;
    auto r = SqliteJobRecords::open(control::database_path(dir_.path()));
    ASSERT_TRUE(r) << r.error().message;
    records_ = std::move(r).value();
  }
  void TearDown() override {
    if (dispatcher_)
      dispatcher_->stop();
  }
  void start(std::chrono::milliseconds attempt_deadline) {
    http::WebhookClientOptions wo;
    wo.policy.allow_loopback = true;
    wo.deadline = attempt_deadline;
    webhooks_ = std::make_unique<http::WebhookClient>(wo, resolver_, pool_, clock_);
    WebhookOptions o;
    o.retry_base = 1h; // one attempt per delivery within a test
    o.workers = 4;
    o.per_project_in_flight = 2;
    dispatcher_ = std::make_unique<WebhookDispatcher>(
        *records_, o, clock_,
        [this](const std::string &url, const std::string &body,
               const std::vector<std::pair<std::string, std::string>> &) -> Result<int> {
          GANTRY_ASSIGN_OR_RETURN(auto resp, webhooks_->post(url, body, {}));
          return resp.status;
        },
        [](const Delivery &, int64_t) -> Result<std::vector<std::pair<std::string, std::string>>> {
          return std::vector<std::pair<std::string, std::string>>{{"webhook-id", "x"}};
        });
    dispatcher_->start();
  }
  std::string enqueue(const std::string &job_id, const std::string &project,
                      const std::string &url) {
    Job j;
    j.id = job_id;
    j.project = project;
    j.webhook_url = url;
    j.webhook_events = {"completed"};
    EXPECT_TRUE(dispatcher_->enqueue(j, "completed", "{}"));
    return job_id;
  }
  Delivery delivery(const std::string &job_id) {
    auto ds = records_->deliveries_of(job_id);
    EXPECT_TRUE(ds && ds->size() == 1);
    return ds && ds->size() == 1 ? (*ds)[0] : Delivery{};
  }
  bool wait_for(const std::function<bool()> &done, std::chrono::milliseconds limit) {
    const auto deadline = SteadyClock::now() + limit;
    while (!done()) {
      if (SteadyClock::now() > deadline)
        return false;
      std::this_thread::sleep_for(10ms);
    }
    return true;
  }

  TempDir dir_;
  SystemClock clock_;
  http::AsioResolver resolver_;
  http::OutboundClient pool_{{}, clock_};
  std::unique_ptr<SqliteJobRecords> records_;
  std::unique_ptr<http::WebhookClient> webhooks_;
  std::unique_ptr<WebhookDispatcher> dispatcher_;
};

// L4: one thread delivered everything in order, so a tenant whose receiver accepts and never
// answers held every other tenant's webhooks for its whole backlog (15 s per attempt). Now that
// tenant holds at most its share of the workers.
TEST_F(DispatcherTest, BlackholeTenantDoesNotDelayAnotherTenant) {
  SilentReceiver blackhole;
  Receiver fast({.status = 200});
  start(/*attempt_deadline=*/4s);
  for (int i = 0; i < 6; ++i)
    enqueue("job_a" + std::to_string(i), "slow-tenant", hook(blackhole.port()));
  enqueue("job_b", "fast-tenant", hook(fast.port()));
  const auto t0 = SteadyClock::now();
  ASSERT_TRUE(wait_for([&] { return delivery("job_b").status == "delivered"; }, 5s))
      << "the fast tenant's webhook waited behind the blackhole";
  EXPECT_LT(SteadyClock::now() - t0, 3s);
  EXPECT_EQ(fast.requests(), 1);
  for (int i = 0; i < 6; ++i)
    EXPECT_EQ(delivery("job_a" + std::to_string(i)).status, "pending");
}

// H6's oracle: the tenant reads a coarse class, never addresses, ports or resolver text.
TEST_F(DispatcherTest, DeliveriesRecordCoarseErrorClasses) {
  SilentReceiver blackhole;
  Receiver missing({.status = 404});
  Receiver broken({.status = 503});
  start(/*attempt_deadline=*/500ms);
  enqueue("job_404", "p", hook(missing.port()));
  enqueue("job_503", "p2", hook(broken.port()));
  enqueue("job_refused", "p3", hook(1));                 // nothing listens on 127.0.0.1:1
  enqueue("job_blocked", "p4", "http://10.0.0.5:6379/"); // checked, never connected
  enqueue("job_silent", "p5", hook(blackhole.port()));
  const std::pair<const char *, const char *> want[] = {{"job_404", "non_2xx:4xx"},
                                                        {"job_503", "non_2xx:5xx"},
                                                        {"job_refused", "connect_failed"},
                                                        {"job_blocked", "blocked_destination"},
                                                        {"job_silent", "timeout"}};
  for (const auto &[job, cls] : want) {
    ASSERT_TRUE(wait_for([&] { return delivery(job).attempts == 1; }, 10s)) << job;
    const Delivery d = delivery(job);
    EXPECT_EQ(d.last_error, cls) << job;
    EXPECT_EQ(d.status, "pending") << job << " is retried later";
  }
  EXPECT_EQ(delivery("job_404").last_status, 404);
}

// A 410 disables the URL for the project that registered it, not for every project.
TEST_F(DispatcherTest, GoneDisablesTheUrlOnlyForItsProject) {
  Receiver gone({.status = 410});
  start(5s);
  enqueue("job_a1", "acme", hook(gone.port()));
  ASSERT_TRUE(wait_for([&] { return delivery("job_a1").status == "disabled"; }, 5s));
  EXPECT_EQ(gone.requests(), 1);
  // Another project's webhook to the same URL is still attempted.
  enqueue("job_g1", "globex", hook(gone.port()));
  ASSERT_TRUE(wait_for([&] { return delivery("job_g1").status == "disabled"; }, 5s));
  EXPECT_EQ(gone.requests(), 2) << "globex's delivery was attempted";
  // acme's next delivery to it is not.
  enqueue("job_a2", "acme", hook(gone.port()));
  ASSERT_TRUE(wait_for([&] { return delivery("job_a2").status == "disabled"; }, 5s));
  EXPECT_EQ(delivery("job_a2").attempts, 0);
  EXPECT_EQ(gone.requests(), 2);
}

TEST(WebhookRetryDelay, GrowsWithJitterUpToTheCap) {
  WebhookOptions o;
  o.retry_base = 1000ms;
  o.retry_max = 60'000ms;
  std::chrono::milliseconds prev{0};
  for (int attempt = 1; attempt <= 4; ++attempt) {
    auto d = webhook_retry_delay(o, "msg_x", attempt);
    const double nominal = std::min(1000.0 * std::pow(4.0, attempt - 1), 60'000.0);
    EXPECT_GE(d.count(), static_cast<int64_t>(nominal * 0.8)) << attempt;
    EXPECT_LE(d.count(), static_cast<int64_t>(nominal * 1.2)) << attempt;
    EXPECT_GT(d, prev);
    prev = d;
  }
  EXPECT_LE(webhook_retry_delay(o, "msg_x", 30).count(), 72'000);
  EXPECT_NE(webhook_retry_delay(o, "msg_a", 2), webhook_retry_delay(o, "msg_b", 2))
      << "jitter spreads deliveries that failed together";
}

} // namespace
} // namespace gantry::jobs
