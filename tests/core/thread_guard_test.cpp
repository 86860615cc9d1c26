#include "core/thread_guard.h"

#include <gtest/gtest.h>

#include <atomic>
#include <mutex>
#include <string>
#include <vector>

namespace gantry {
namespace {

struct Captured {
  std::mutex mu;
  std::vector<std::string> lines;
};

class ThreadGuardTest : public ::testing::Test {
protected:
  std::vector<std::string> lines() {
    std::lock_guard lk(captured_.mu);
    return captured_.lines;
  }

  Captured captured_;
  ScopedFailureReporter scope_{[this](std::string_view site, const std::exception &e) {
    std::lock_guard lk(captured_.mu);
    captured_.lines.push_back(std::string(site) + ": " + e.what());
  }};
};

TEST_F(ThreadGuardTest, AnExceptionIsReportedAndTheBodyRunsAgain) {
  int calls = 0;
  guarded_loop(
      "test.loop",
      [&] {
        if (++calls < 3)
          throw std::runtime_error("boom " + std::to_string(calls));
      },
      [] { return false; }, std::chrono::milliseconds(1));
  EXPECT_EQ(calls, 3);
  auto l = lines();
  ASSERT_EQ(l.size(), 2u);
  EXPECT_EQ(l[0], "test.loop: boom 1");
  EXPECT_EQ(l[1], "test.loop: boom 2");
}

TEST_F(ThreadGuardTest, AStoppingThreadEndsAfterItsFailureInsteadOfRetrying) {
  int calls = 0;
  guarded_loop(
      "test.stop",
      [&] {
        ++calls;
        throw 42; // not a std::exception
      },
      [] { return true; }, std::chrono::hours(1));
  EXPECT_EQ(calls, 1);
  auto l = lines();
  ASSERT_EQ(l.size(), 1u);
  EXPECT_NE(l[0].find("not a std::exception"), std::string::npos) << l[0];
}

TEST_F(ThreadGuardTest, AStopDuringThePauseIsSeenWithoutWaitingItOut) {
  std::atomic<bool> stop{false};
  std::thread t([&] {
    guarded_loop(
        "test.pause", [&] { throw std::runtime_error("x"); }, [&] { return stop.load(); },
        std::chrono::hours(1));
  });
  while (lines().empty())
    std::this_thread::yield();
  stop = true;
  t.join(); // would hang for an hour if the pause ignored stopping()
  EXPECT_EQ(lines().size(), 1u);
}

TEST_F(ThreadGuardTest, AReporterThatThrowsFallsBackToStderr) {
  ScopedFailureReporter broken(
      [](std::string_view, const std::exception &) { throw std::runtime_error("reporter broke"); });
  EXPECT_NO_THROW(report_failure("test.reporter", std::runtime_error("original")));
}

TEST_F(ThreadGuardTest, TheNewestLiveScopeReceivesReportsWhateverOrderScopesEnd) {
  std::vector<std::string> inner_lines;
  auto inner = std::make_unique<ScopedFailureReporter>(
      [&](std::string_view site, const std::exception &) { inner_lines.emplace_back(site); });
  auto newest = std::make_unique<ScopedFailureReporter>(
      [&](std::string_view site, const std::exception &) { inner_lines.emplace_back(site); });
  inner.reset(); // ends before the newer scope: the newer one stays in charge
  report_failure("a", std::runtime_error("x"));
  newest.reset(); // back to the fixture's scope
  report_failure("b", std::runtime_error("y"));
  EXPECT_EQ(inner_lines, std::vector<std::string>{"a"});
  auto l = lines();
  ASSERT_EQ(l.size(), 1u);
  EXPECT_EQ(l[0], "b: y");
}

} // namespace
} // namespace gantry
