// The server's evaluator of the autoscale policies: what it reads, logs and exports.
#include "server/autoscale_monitor.h"

#include <boost/json.hpp>
#include <gtest/gtest.h>

#include <sstream>
#include <vector>

#include "support/fake_clock.h"

namespace gantry::server {
namespace {

using namespace std::chrono_literals;

// What the monitor's readers return: set by the test between ticks.
struct World {
  std::map<std::string, ModelReading> models;
  JobBacklog jobs;
  std::vector<std::string> lines;
};

class AutoscaleMonitorTest : public ::testing::Test {
protected:
  FakeClock clock;
  World world;

  std::unique_ptr<AutoscaleMonitor> make(std::map<std::string, autoscale::PolicyConfig> policies) {
    AutoscaleDeps d;
    d.clock = &clock;
    d.read_model = [this](const std::string &m) -> std::optional<ModelReading> {
      auto it = world.models.find(m);
      if (it == world.models.end())
        return std::nullopt;
      return it->second;
    };
    d.read_jobs = [this] { return world.jobs; };
    d.log = [this](const std::string &line) { world.lines.push_back(line); };
    return std::make_unique<AutoscaleMonitor>(policies, std::move(d));
  }

  static std::string metrics(const AutoscaleMonitor &m) {
    std::ostringstream o;
    m.render_metrics(o);
    return o.str();
  }
};

autoscale::PolicyConfig quick() {
  autoscale::PolicyConfig p;
  p.min_replicas = 0;
  p.max_replicas = 4;
  p.target_ongoing_requests = 2;
  p.upscale_delay = 0s;
  p.downscale_delay = 10s;
  p.downscale_to_zero_delay = 30s;
  return p;
}

TEST_F(AutoscaleMonitorTest, ExportsDesiredAndReplicasWithEscapedLabels) {
  const std::string odd = "we\"ird\nname";
  auto m = make({{"tiny", quick()}, {odd, quick()}});
  ModelReading r;
  r.signals.running_requests = 5;
  r.signals.replicas.ready = 1;
  world.models["tiny"] = r;
  world.models[odd] = r;
  EXPECT_EQ(metrics(*m).find("gantry:desired_replicas{"), std::string::npos)
      << "nothing exported before the first evaluation";
  m->tick();
  const std::string text = metrics(*m);
  EXPECT_NE(text.find("# TYPE gantry:desired_replicas gauge\n"), std::string::npos) << text;
  EXPECT_NE(text.find("gantry:desired_replicas{model_name=\"tiny\"} 3\n"), std::string::npos)
      << text;
  EXPECT_NE(text.find("gantry:replicas{model_name=\"tiny\",state=\"ready\"} 1\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("gantry:replicas{model_name=\"tiny\",state=\"starting\"} 0\n"),
            std::string::npos);
  EXPECT_NE(text.find("gantry:replicas{model_name=\"tiny\",state=\"draining\"} 0\n"),
            std::string::npos);
  EXPECT_NE(text.find("gantry:desired_replicas{model_name=\"we\\\"ird\\nname\"} 3\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("gantry:autoscale_changes_total{model_name=\"tiny\",direction=\"up\"} 1\n"),
            std::string::npos)
      << text;
}

TEST_F(AutoscaleMonitorTest, LogsOneLinePerDecisionThatMoves) {
  auto m = make({{"tiny", quick()}});
  ModelReading r;
  r.signals.replicas.ready = 1;
  world.models["tiny"] = r;
  m->tick(); // starts at 1, idle: scale_to_zero_pending
  ASSERT_EQ(world.lines.size(), 1u);
  for (int i = 0; i < 29; ++i) {
    clock.advance(1s);
    m->tick();
  }
  EXPECT_EQ(world.lines.size(), 1u) << "a pending state is logged once, not every second";
  clock.advance(1s);
  m->tick();
  ASSERT_EQ(world.lines.size(), 2u);
  const auto o = boost::json::parse(world.lines.back()).as_object();
  EXPECT_EQ(o.at("event").as_string(), "autoscale_decision");
  EXPECT_EQ(o.at("model").as_string(), "tiny");
  EXPECT_EQ(o.at("reason").as_string(), "scale_to_zero");
  EXPECT_EQ(o.at("desired").as_int64(), 0);
  EXPECT_EQ(m->last("tiny")->desired, 0);
  EXPECT_NE(metrics(*m).find("direction=\"down\"} 1\n"), std::string::npos);
}

TEST_F(AutoscaleMonitorTest, QueuedJobsReachEveryModelAndWakeItFromZero) {
  autoscale::PolicyConfig p = quick();
  p.downscale_to_zero_delay = 0s;
  auto m = make({{"tiny", p}});
  ModelReading r;
  r.signals.replicas.ready = 0;
  world.models["tiny"] = r;
  m->tick();
  EXPECT_EQ(m->last("tiny")->desired, 0);
  world.jobs.queued = 3;
  world.jobs.oldest_wait_s = 7;
  clock.advance(1s);
  m->tick();
  const autoscale::Decision d = *m->last("tiny");
  EXPECT_EQ(d.desired, 2) << "3 queued jobs at 2 per replica, at once";
  EXPECT_EQ(d.reason, autoscale::Reason::kScaleFromZero);
  const auto o = boost::json::parse(world.lines.back()).as_object();
  EXPECT_EQ(o.at("signals").at("queued_jobs").as_int64(), 3);
  EXPECT_EQ(o.at("signals").at("oldest_wait_s").as_double(), 7);
}

TEST_F(AutoscaleMonitorTest, TokensPerSecondPerReplicaFromTheCounter) {
  auto m = make({{"tiny", quick()}});
  ModelReading r;
  r.signals.running_requests = 1;
  r.signals.replicas.ready = 2;
  r.generated_tokens = 1000;
  world.models["tiny"] = r;
  m->tick();
  clock.advance(2s);
  world.models["tiny"].generated_tokens = 1400;
  world.models["tiny"].signals.running_requests = 9; // a change, so the decision is logged
  m->tick();
  const auto o = boost::json::parse(world.lines.back()).as_object();
  EXPECT_DOUBLE_EQ(o.at("signals").at("tokens_per_s_per_replica").as_double(), 100)
      << "400 tokens in 2 s over 2 replicas";
}

TEST_F(AutoscaleMonitorTest, AModelNotServedHereHoldsItsLastDecision) {
  auto m = make({{"elsewhere", quick()}});
  m->tick();
  EXPECT_FALSE(m->last("elsewhere"));
  EXPECT_EQ(metrics(*m).find("gantry:desired_replicas{"), std::string::npos);
}

TEST_F(AutoscaleMonitorTest, TheEvaluatorThreadStartsAndStops) {
  auto m = make({{"tiny", quick()}});
  ModelReading r;
  r.signals.running_requests = 3;
  r.signals.replicas.ready = 1;
  world.models["tiny"] = r;
  m->start();
  // The first evaluation runs as the thread starts; poll for it with a deadline.
  for (int i = 0; i < 2000 && !m->last("tiny"); ++i)
    std::this_thread::sleep_for(1ms);
  m->stop();
  ASSERT_TRUE(m->last("tiny")) << "no evaluation within 2 s";
  EXPECT_EQ(m->last("tiny")->desired, 2);
}

} // namespace
} // namespace gantry::server
