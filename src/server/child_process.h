// The processes an autoscale executor starts (issue 14 item 2): a port, so the executors'
// reconcile logic is tested on a FakeClock with a scripted one, and its POSIX adapter.
//
// The adapter forks and execs: the child gets stdin from /dev/null, its stdout joined to the
// gateway's stderr (its log lines stay in the gateway's log; the gateway's own stdout keeps only
// its own lines), no other inherited descriptor, an empty signal mask, and SIGTERM when the
// thread that started it dies (PR_SET_PDEATHSIG: a gateway killed outright leaves no orphaned
// worker; the executor's thread lives as long as the gateway's autoscaler).
//
// Threading: ChildProcesses is called from one thread (the autoscaler's), which must outlive the
// children it starts (see above).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "core/result.h"

namespace gantry::server {

class ProcessPort {
public:
  virtual ~ProcessPort() = default;
  // Starts argv[0] (a path, or a name looked up on $PATH) with the caller's environment plus
  // `env` ("NAME=value"); the child's pid.
  virtual Result<int> spawn(const std::vector<std::string> &argv,
                            const std::vector<std::string> &env) = 0;
  virtual void signal(int pid, int sig) = 0;
  // Its exit code (-signal when a signal ended it) once it has exited, reaping it; nullopt while
  // it runs.
  virtual std::optional<int> poll_exit(int pid) = 0;
};

class ChildProcesses final : public ProcessPort {
public:
  Result<int> spawn(const std::vector<std::string> &argv,
                    const std::vector<std::string> &env) override;
  void signal(int pid, int sig) override;
  std::optional<int> poll_exit(int pid) override;
};

} // namespace gantry::server
