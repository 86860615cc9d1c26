#include "server/child_process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

extern char **environ;

namespace gantry::server {

Result<int> ChildProcesses::spawn(const std::vector<std::string> &argv,
                                  const std::vector<std::string> &env) {
  if (argv.empty())
    return Err(Error::invalid("no program to start"));
  // Everything the child needs is built before fork: after it, only async-signal-safe calls.
  std::vector<std::string> envs;
  for (char **e = environ; e && *e; ++e) {
    const std::string one = *e;
    const std::string name = one.substr(0, one.find('='));
    const bool replaced = std::any_of(env.begin(), env.end(), [&](const std::string &x) {
      return x.compare(0, name.size() + 1, name + "=") == 0;
    });
    if (!replaced)
      envs.push_back(one);
  }
  envs.insert(envs.end(), env.begin(), env.end());
  std::vector<char *> cargv, cenv;
  for (const auto &a : argv)
    cargv.push_back(const_cast<char *>(a.c_str()));
  cargv.push_back(nullptr);
  for (const auto &e : envs)
    cenv.push_back(const_cast<char *>(e.c_str()));
  cenv.push_back(nullptr);
  const pid_t parent = ::getpid();
  rlimit lim{};
  const int max_fd = ::getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur != RLIM_INFINITY
                         ? static_cast<int>(std::min<rlim_t>(lim.rlim_cur, 65536))
                         : 4096;
  const pid_t pid = ::fork();
  if (pid < 0)
    return Err(Error::internal(std::string("fork: ") + std::strerror(errno)));
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (::getppid() != parent) // the parent died between fork and prctl
      ::_exit(127);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::signal(SIGPIPE, SIG_DFL);
    const int devnull = ::open("/dev/null", O_RDONLY);
    if (devnull >= 0)
      ::dup2(devnull, 0);
    ::dup2(2, 1);
#ifdef SYS_close_range
    if (::syscall(SYS_close_range, 3U, ~0U, 0U) != 0)
#endif
      for (int fd = 3; fd < max_fd; ++fd)
        ::close(fd);
    ::execvpe(cargv[0], cargv.data(), cenv.data());
    ::_exit(127);
  }
  return static_cast<int>(pid);
}

void ChildProcesses::signal(int pid, int sig) {
  if (pid > 0)
    ::kill(pid, sig);
}

std::optional<int> ChildProcesses::poll_exit(int pid) {
  int status = 0;
  const pid_t r = ::waitpid(pid, &status, WNOHANG);
  if (r == 0)
    return std::nullopt;
  if (r < 0) // not our child any more (reaped elsewhere): gone
    return -1;
  if (WIFEXITED(status))
    return WEXITSTATUS(status);
  return WIFSIGNALED(status) ? -WTERMSIG(status) : -1;
}

} // namespace gantry::server
