// The executors' reconcile logic (issue 14 item 2) on a FakeClock, over a scripted ProcessPort:
// which processes start and stop for a desired count, how replicas are counted from the
// registry, and that failures are counted and retried with back-off instead of thrashing.
#include "server/replica_executor.h"

#include <gtest/gtest.h>
#include <signal.h>

#include <map>

#include "support/fake_clock.h"

namespace gantry::server {
namespace {

using namespace std::chrono_literals;

// Processes as the test says they behave: they run until the test ends them.
class ScriptedProcesses final : public ProcessPort {
public:
  Result<int> spawn(const std::vector<std::string> &argv,
                    const std::vector<std::string> &env) override {
    if (fail_spawn)
      return Err(Error::internal("fork: out of processes"));
    const int pid = next_pid++;
    running[pid] = argv;
    envs[pid] = env;
    ++spawned;
    return pid;
  }
  void signal(int pid, int sig) override { signals.emplace_back(pid, sig); }
  std::optional<int> poll_exit(int pid) override {
    auto it = exited.find(pid);
    if (it == exited.end())
      return std::nullopt;
    running.erase(pid);
    return it->second;
  }
  void exit(int pid, int code) { exited[pid] = code; }
  int terms(int pid) const {
    int n = 0;
    for (auto &[p, s] : signals)
      n += p == pid && s == SIGTERM;
    return n;
  }

  int next_pid = 100;
  int spawned = 0;
  bool fail_spawn = false;
  std::map<int, std::vector<std::string>> running;
  std::map<int, std::vector<std::string>> envs;
  std::map<int, int> exited;
  std::vector<std::pair<int, int>> signals;
};

ExecutorOptions options(const std::string &executor) {
  ExecutorOptions o;
  o.model = "stories";
  o.spec.executor = executor;
  o.spec.start_timeout = 60s;
  o.spec.command_timeout = 10s;
  o.max_replicas = 3;
  o.kill_after = 30s;
  o.worker_argv = {"/proc/self/exe", "serve", "--role", "worker"};
  o.node_prefix = "host:";
  return o;
}

std::string node(int pid) { return "host:" + std::to_string(pid); }

TEST(LocalExecutor, StartsWorkersReportsThemStartingThenReadyAndDrainsTheSurplus) {
  FakeClock clock;
  ScriptedProcesses p;
  std::vector<std::string> log;
  auto o = options("local");
  o.log = [&](const std::string &l) { log.push_back(l); };
  LocalExecutor e(o, p, clock);

  e.reconcile(2);
  ASSERT_EQ(p.spawned, 2);
  EXPECT_EQ(p.running.at(100), o.worker_argv);
  auto c = e.observe({}, 0);
  EXPECT_EQ(c.starting, 2);
  EXPECT_EQ(c.ready, 0);

  // The first worker announces itself: live in the registry → ready.
  c = e.observe({node(100)}, 1);
  EXPECT_EQ(c.starting, 1);
  EXPECT_EQ(c.ready, 1);
  e.reconcile(2);
  EXPECT_EQ(p.spawned, 2) << "nothing more to start while the count is met";

  // Down to one: the worker still starting goes (it serves nothing yet), by SIGTERM.
  e.reconcile(1);
  EXPECT_EQ(p.terms(101), 1);
  EXPECT_EQ(p.terms(100), 0);
  c = e.observe({node(100)}, 1);
  EXPECT_EQ(c.ready, 1);
  EXPECT_EQ(c.draining, 1);
  p.exit(101, 0);
  c = e.observe({node(100)}, 1);
  EXPECT_EQ(c.draining, 0);
  EXPECT_EQ(e.failures(), 0u) << "a worker that was asked to stop is no failure";

  // To zero: the ready one drains; its exit leaves no process.
  e.reconcile(0);
  EXPECT_EQ(p.terms(100), 1);
  c = e.observe({}, 0);
  EXPECT_EQ(c.draining, 1);
  p.exit(100, 0);
  c = e.observe({}, 0);
  EXPECT_EQ(c.draining + c.ready + c.starting, 0);
  EXPECT_EQ(e.processes(), 0);
}

TEST(LocalExecutor, NeverStartsMoreThanMaxReplicas) {
  FakeClock clock;
  ScriptedProcesses p;
  LocalExecutor e(options("local"), p, clock);
  e.reconcile(50);
  EXPECT_EQ(p.spawned, 3);
}

TEST(LocalExecutor, AWorkerThatDiesIsCountedAndReplacedOnlyAfterABackOff) {
  FakeClock clock;
  ScriptedProcesses p;
  std::vector<std::string> log;
  auto o = options("local");
  o.log = [&](const std::string &l) { log.push_back(l); };
  LocalExecutor e(o, p, clock);
  e.reconcile(1);
  p.exit(100, 1); // crashes while loading
  (void)e.observe({}, 0);
  EXPECT_EQ(e.failures(), 1u);
  bool logged = false;
  for (auto &l : log)
    logged = logged || l.find("\"event\":\"autoscale_executor_failure\"") != std::string::npos;
  EXPECT_TRUE(logged);
  // The policy asks again every second: no restart within the back-off (1 s, then 2 s, ...).
  e.reconcile(1);
  EXPECT_EQ(p.spawned, 1);
  clock.advance(1s);
  e.reconcile(1);
  EXPECT_EQ(p.spawned, 2);
  p.exit(101, 1);
  (void)e.observe({}, 0);
  clock.advance(1s);
  e.reconcile(1);
  EXPECT_EQ(p.spawned, 2) << "the second failure waits 2 s";
  clock.advance(1s);
  e.reconcile(1);
  EXPECT_EQ(p.spawned, 3);
  // Over a minute of a worker that always dies, far fewer than one start per evaluation.
  for (int s = 0; s < 60; ++s) {
    if (!p.running.empty())
      p.exit(p.running.begin()->first, 1);
    (void)e.observe({}, 0);
    clock.advance(1s);
    e.reconcile(1);
  }
  EXPECT_LE(p.spawned, 9) << "exponential back-off, not a restart loop";
}

TEST(LocalExecutor, AWorkerNeverLiveWithinStartTimeoutIsKilledAndCounted) {
  FakeClock clock;
  ScriptedProcesses p;
  LocalExecutor e(options("local"), p, clock);
  e.reconcile(1);
  clock.advance(59s);
  EXPECT_EQ(e.observe({}, 0).starting, 1);
  clock.advance(1s);
  auto c = e.observe({}, 0);
  EXPECT_EQ(c.starting, 0);
  EXPECT_EQ(e.failures(), 1u);
  ASSERT_FALSE(p.signals.empty());
  EXPECT_EQ(p.signals.back(), std::make_pair(100, SIGKILL));
}

TEST(LocalExecutor, ADrainThatOverrunsIsKilled) {
  FakeClock clock;
  ScriptedProcesses p;
  LocalExecutor e(options("local"), p, clock);
  e.reconcile(1);
  (void)e.observe({node(100)}, 1);
  e.reconcile(0);
  clock.advance(29s);
  (void)e.observe({}, 0);
  EXPECT_EQ(p.signals.back(), std::make_pair(100, SIGTERM));
  clock.advance(1s);
  (void)e.observe({}, 0);
  EXPECT_EQ(p.signals.back(), std::make_pair(100, SIGKILL));
}

TEST(CommandExecutor, RunsTheHookWithTheCountAndCountsReplicasFromTheRegistry) {
  FakeClock clock;
  ScriptedProcesses p;
  auto o = options("command");
  o.spec.scale_command = {"scale.sh", "--group", "gpu"};
  CommandExecutor e(o, p, clock);
  e.reconcile(2);
  ASSERT_EQ(p.spawned, 1);
  EXPECT_EQ(p.running.at(100), (std::vector<std::string>{"scale.sh", "--group", "gpu", "2"}));
  EXPECT_EQ(p.envs.at(100),
            (std::vector<std::string>{"GANTRY_MODEL=stories", "GANTRY_DESIRED_REPLICAS=2"}));
  e.reconcile(2);
  EXPECT_EQ(p.spawned, 1) << "one run at a time";
  p.exit(100, 0);
  auto c = e.observe({}, 1);
  EXPECT_EQ(c.ready, 1);
  EXPECT_EQ(c.starting, 1);
  e.reconcile(2);
  EXPECT_EQ(p.spawned, 1) << "applied already";
  e.reconcile(0);
  EXPECT_EQ(p.spawned, 2);
  EXPECT_EQ(p.running.at(101).back(), "0");
}

TEST(CommandExecutor, AFailingOrHangingHookIsCountedAndRetriedWithBackOff) {
  FakeClock clock;
  ScriptedProcesses p;
  auto o = options("command");
  o.spec.scale_command = {"false"};
  CommandExecutor e(o, p, clock);
  e.reconcile(1);
  p.exit(100, 1);
  (void)e.observe({}, 0);
  EXPECT_EQ(e.failures(), 1u);
  e.reconcile(1);
  EXPECT_EQ(p.spawned, 1) << "back-off";
  clock.advance(1s);
  e.reconcile(1);
  EXPECT_EQ(p.spawned, 2);
  // This one hangs: killed at command_timeout, counted when reaped.
  clock.advance(10s);
  (void)e.observe({}, 0);
  EXPECT_EQ(p.signals.back(), std::make_pair(101, SIGKILL));
  p.exit(101, -9);
  (void)e.observe({}, 0);
  EXPECT_EQ(e.failures(), 2u);
  // A minute of failures at one evaluation a second: a handful of runs.
  for (int s = 0; s < 60; ++s) {
    for (auto &[pid, argv] : p.running)
      if (!p.exited.count(pid))
        p.exit(pid, 1);
    (void)e.observe({}, 0);
    clock.advance(1s);
    e.reconcile(1);
  }
  EXPECT_LE(p.spawned, 8);
}

// executor = "external" (KEDA follows gantry:desired_replicas): nothing is started or stopped
// here; the counts come from the registry and the last decision.
TEST(ExternalExecutor, StartsNothingAndCountsWhatTheLastDecisionAskedForAsStarting) {
  FakeClock clock;
  ScriptedProcesses p;
  ExternalExecutor e(options("external"), p, clock);
  e.reconcile(3);
  EXPECT_EQ(p.spawned, 0);
  auto c = e.observe({}, 1);
  EXPECT_EQ(c.ready, 1);
  EXPECT_EQ(c.starting, 2);
  e.reconcile(100); // clamped to max_replicas like the others
  c = e.observe({}, 0);
  EXPECT_EQ(c.starting, options("external").max_replicas);
  e.reconcile(0);
  c = e.observe({}, 2); // pods still terminating: ready, nothing starting
  EXPECT_EQ(c.ready, 2);
  EXPECT_EQ(c.starting, 0);
  e.stop_all(std::chrono::milliseconds(10));
  EXPECT_EQ(p.spawned, 0);
}

} // namespace
} // namespace gantry::server
