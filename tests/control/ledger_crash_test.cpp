// kill -9 of a process in the middle of ledger writes: the database must pass integrity_check
// and hold every row the process had reported as flushed.
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <string>

#include "control/temp_dir.h"
#include "store/sqlite/sqlite_store.h"

namespace gantry::control {
namespace {

using gantry::testing::TempDir;
using Steady = std::chrono::steady_clock;

struct ChildRun {
  int64_t last_flushed = 0; // the last complete line the child printed before it died
  int status = 0;
};

// Starts the child on `dir`, SIGKILLs it once it reported `kill_after` or more rows flushed (or
// after 5 s), and returns the highest id it reported.
ChildRun run_and_kill(const std::string &dir, int64_t kill_after) {
  int fds[2];
  if (::pipe(fds) != 0)
    throw std::runtime_error("pipe");
  pid_t pid = ::fork();
  if (pid < 0)
    throw std::runtime_error("fork");
  if (pid == 0) {
    ::dup2(fds[1], STDOUT_FILENO);
    ::close(fds[0]);
    ::close(fds[1]);
    ::execl(LEDGER_CRASH_CHILD, LEDGER_CRASH_CHILD, dir.c_str(), static_cast<char *>(nullptr));
    ::_exit(127);
  }
  ::close(fds[1]);
  ChildRun run;
  std::string buf;
  bool killed = false;
  const auto deadline = Steady::now() + std::chrono::seconds(5);
  for (;;) {
    if (!killed && (run.last_flushed >= kill_after || Steady::now() >= deadline)) {
      ::kill(pid, SIGKILL);
      killed = true;
    }
    pollfd p{fds[0], POLLIN, 0};
    if (::poll(&p, 1, 50) <= 0)
      continue;
    char chunk[4096];
    ssize_t n = ::read(fds[0], chunk, sizeof chunk);
    if (n <= 0)
      break; // EOF: the child is gone and everything it wrote was read
    buf.append(chunk, static_cast<size_t>(n));
    size_t nl;
    while ((nl = buf.find('\n')) != std::string::npos) {
      run.last_flushed = std::stoll(buf.substr(0, nl));
      buf.erase(0, nl + 1);
    }
  }
  ::close(fds[0]);
  ::waitpid(pid, &run.status, 0);
  return run;
}

TEST(LedgerCrashTest, KilledWriterLosesNothingItReportedFlushed) {
  TempDir tmp;
  const std::string dir = tmp.sub("data");
  // Each round kills the child at a different point; later rounds reopen a database that was
  // left by a killed process (WAL recovery) and add rows with the same ids, which are ignored.
  for (int64_t kill_after : {500, 3000, 20000}) {
    SCOPED_TRACE("kill after " + std::to_string(kill_after));
    ChildRun run = run_and_kill(dir, kill_after);
    ASSERT_TRUE(WIFSIGNALED(run.status) && WTERMSIG(run.status) == SIGKILL)
        << "the child should have been killed, status " << run.status;
    ASSERT_GT(run.last_flushed, 0) << "the child never reported a flush";

    auto store = SqliteStore::open(dir);
    ASSERT_TRUE(store.ok()) << store.error().message;
    auto integrity = (*store)->integrity_check();
    ASSERT_TRUE(integrity.ok()) << integrity.error().message;
    EXPECT_EQ(*integrity, "ok");
    auto flushed = (*store)->usage_report(GroupBy::kKey, 1, run.last_flushed + 1);
    ASSERT_TRUE(flushed.ok()) << flushed.error().message;
    ASSERT_EQ(flushed->size(), 1u);
    EXPECT_EQ((*flushed)[0].totals.requests, run.last_flushed)
        << "rows 1.." << run.last_flushed << " were reported flushed";
    auto days = (*store)->usage_daily("0000", "9999");
    ASSERT_TRUE(days.ok());
    int64_t rolled_up = 0;
    for (const auto &d : *days)
      rolled_up += d.totals.requests;
    EXPECT_EQ(rolled_up, *(*store)->count_usage()) << "roll-ups disagree with the ledger";
  }
}

} // namespace
} // namespace gantry::control
