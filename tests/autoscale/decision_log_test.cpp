#include "autoscale/decision_log.h"

#include <boost/json.hpp>
#include <gtest/gtest.h>

#include "support/fake_clock.h"

namespace gantry::autoscale {
namespace {

TEST(DecisionLogTest, OneJsonObjectWithTheDecisionAndItsSignals) {
  FakeClock clock;
  Policy p(PolicyConfig{}, clock);
  Signals s;
  s.waiting_requests = 3;
  s.queued_jobs = 2;
  s.oldest_wait_s = 1.5;
  s.kv_usage = 0.25;
  const Decision d = p.evaluate(s); // from zero
  const std::string line = decision_json("llama \"7b\"\n", d, s, FakeClock::kStartUnixMillis + 42);
  EXPECT_EQ(line.find('\n'), std::string::npos) << "one line: " << line;
  const boost::json::object o = boost::json::parse(line).as_object();
  EXPECT_EQ(o.at("timestamp").as_string(), "2023-11-14T22:13:20.042Z");
  EXPECT_EQ(o.at("event").as_string(), "autoscale_decision");
  EXPECT_EQ(o.at("model").as_string(), "llama \"7b\"\n");
  EXPECT_EQ(o.at("desired").as_int64(), 2);
  EXPECT_EQ(o.at("previous").as_int64(), 0);
  EXPECT_EQ(o.at("reason").as_string(), "scale_from_zero");
  EXPECT_EQ(o.at("trigger").as_string(), "ongoing_requests");
  EXPECT_EQ(o.at("signals").at("queued_jobs").as_int64(), 2);
  EXPECT_EQ(o.at("signals").at("oldest_wait_s").as_double(), 1.5);
  EXPECT_EQ(o.at("replicas").at("ready").as_int64(), 0);
  EXPECT_FALSE(o.at("detail").as_string().empty());
}

TEST(DecisionLogTest, LogsChangesOfCountOrReasonOnly) {
  Decision a;
  a.desired = 2;
  a.reason = Reason::kSteady;
  Decision b = a;
  b.detail = "other numbers";
  EXPECT_FALSE(worth_logging(a, b));
  b.reason = Reason::kScaleUpPending;
  EXPECT_TRUE(worth_logging(a, b));
  b = a;
  b.desired = 3;
  EXPECT_TRUE(worth_logging(a, b));
}

} // namespace
} // namespace gantry::autoscale
