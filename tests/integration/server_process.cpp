#include "integration/server_process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "support/store_under_test.h"

extern char **environ;

namespace gantry::testing {
namespace {

using Clock = std::chrono::steady_clock;

constexpr std::string_view kListening = "Gantry listening on http://";

Error start_error(std::string msg) { return Error{ErrorCode::kInternal, std::move(msg), ""}; }

} // namespace

Result<std::unique_ptr<ServerProcess>> ServerProcess::start(ServerProcessOptions options) {
  std::unique_ptr<ServerProcess> p(new ServerProcess());
  char tmpl[] = "/tmp/gantry-it-XXXXXX";
  if (!mkdtemp(tmpl))
    return start_error(std::string("mkdtemp: ") + std::strerror(errno));
  p->tmp_dir_ = tmpl;
  p->data_dir_ = options.data_dir.empty() ? p->tmp_dir_ + "/data" : options.data_dir;

  std::vector<std::string> args = {
      GANTRY_BINARY, "serve", "--port", std::to_string(options.port), "--data-dir", p->data_dir_};
  // GANTRY_TEST_STORE=postgresql: the same test on PostgreSQL, unless it chose a database itself.
  const bool has_url =
      std::any_of(options.args.begin(), options.args.end(),
                  [](const std::string &a) { return a.starts_with("--database-url"); }) ||
      std::any_of(options.env.begin(), options.env.end(),
                  [](const std::string &e) { return e.starts_with("GANTRY_DATABASE_URL="); });
  if (postgres_selected() && !has_url) {
    auto url = TestDatabases::instance().url_for(p->data_dir_);
    if (!url)
      return start_error(url.error().message);
    p->database_url_ = *url;
    args.push_back("--database-url");
    args.push_back(*url);
  }
  if (!options.config_toml.empty()) {
    const std::string path = p->tmp_dir_ + "/gantry.toml";
    std::ofstream(path) << options.config_toml;
    args.push_back("--config");
    args.push_back(path);
  }
  args.insert(args.end(), options.args.begin(), options.args.end());
  // Built before fork: between fork and exec only async-signal-safe calls are allowed.
  std::vector<char *> argv;
  for (auto &a : args)
    argv.push_back(a.data());
  argv.push_back(nullptr);
  // The server reads GANTRY_* variables; a developer's must not change what the test runs.
  std::vector<char *> envp;
  for (char **e = environ; e && *e; ++e) {
    if (std::strncmp(*e, "GANTRY_", 7) != 0)
      envp.push_back(*e);
  }
  for (auto &e : options.env)
    envp.push_back(e.data());
  // The /status sampler's one-token probes add to the engine's token counters, which many tests
  // count exactly; a test that wants them sets GANTRY_STATUS_PROBE_S in options.env (the first
  // definition wins).
  static char no_status_probes[] = "GANTRY_STATUS_PROBE_S=0";
  envp.push_back(no_status_probes);
  envp.push_back(nullptr);

  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0)
    return start_error(std::string("pipe: ") + std::strerror(errno));
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) {
    close(fds[0]);
    close(fds[1]);
    return start_error(std::string("fork: ") + std::strerror(errno));
  }
  if (pid == 0) {
    // The server dies with the test process even if the test is killed (ctest timeout).
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
      _exit(127);
    dup2(fds[1], STDOUT_FILENO);
    execve(argv[0], argv.data(), envp.data());
    _exit(127);
  }
  close(fds[1]);
  p->pid_ = pid;
  p->stdout_fd_ = fds[0];

  // Read stdout until the listening line, the child's exit, or the deadline.
  const auto deadline = Clock::now() + options.start_timeout;
  std::string out;
  while (true) {
    const auto nl = out.find('\n', out.find(kListening));
    if (out.find(kListening) != std::string::npos && nl != std::string::npos) {
      const auto at = out.find(kListening) + kListening.size();
      const auto colon = out.find(':', at);
      if (colon == std::string::npos || colon > nl) {
        return start_error("cannot parse the listening line: " + out);
      }
      p->port_ = static_cast<std::uint16_t>(std::atoi(out.c_str() + colon + 1));
      break;
    }
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0)
      return start_error("the server did not print its listening line in time: " + out);
    pollfd pfd{p->stdout_fd_, POLLIN, 0};
    const int r = poll(&pfd, 1, static_cast<int>(left));
    if (r < 0 && errno == EINTR)
      continue;
    if (r <= 0)
      continue;
    char buf[4096];
    const ssize_t n = read(p->stdout_fd_, buf, sizeof buf);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0) {
      auto code = p->wait_exit(std::chrono::seconds(5));
      return start_error("the server exited before listening (exit " +
                         (code ? std::to_string(*code) : std::string("?")) + "): " + out);
    }
    out.append(buf, static_cast<size_t>(n));
  }
  if (p->port_ == 0)
    return start_error("the server printed port 0: " + out);
  p->output_ = std::move(out);
  p->drainer_ = std::thread([raw = p.get()] {
    char buf[4096];
    while (true) {
      const ssize_t n = read(raw->stdout_fd_, buf, sizeof buf);
      if (n < 0 && errno == EINTR)
        continue;
      if (n <= 0)
        return;
      std::lock_guard<std::mutex> lk(raw->mu_);
      raw->output_.append(buf, static_cast<size_t>(n));
    }
  });
  return p;
}

ServerProcess::~ServerProcess() {
  if (pid_ > 0 && !exit_code_) {
    kill(pid_, SIGKILL);
    int status = 0;
    while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
  }
  // The child is gone, so its end of the pipe is closed and the drainer sees EOF.
  if (drainer_.joinable())
    drainer_.join();
  if (stdout_fd_ >= 0)
    close(stdout_fd_);
  if (!tmp_dir_.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(tmp_dir_, ec);
  }
}

http::ClientOptions ServerProcess::client_options(std::chrono::milliseconds timeout) const {
  http::ClientOptions o;
  o.host = "127.0.0.1";
  o.port = port_;
  o.timeout = timeout;
  return o;
}

void ServerProcess::signal(int sig) {
  if (pid_ > 0 && !exit_code_)
    kill(pid_, sig);
}

std::optional<int> ServerProcess::wait_exit(std::chrono::milliseconds timeout) {
  if (exit_code_)
    return exit_code_;
  if (pid_ <= 0)
    return std::nullopt;
  const auto deadline = Clock::now() + timeout;
  while (true) {
    int status = 0;
    const pid_t r = waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
      // The child's end of the pipe is closed: let the drainer read the last of its output.
      if (drainer_.joinable())
        drainer_.join();
      return exit_code_;
    }
    if (r < 0 && errno != EINTR)
      return std::nullopt;
    if (Clock::now() >= deadline)
      return std::nullopt;
    // A child's exit has no pollable handle without pidfd; a short poll interval keeps this
    // bounded and is only used at the end of a test.
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

std::string ServerProcess::output() const {
  std::lock_guard<std::mutex> lk(mu_);
  return output_;
}

std::optional<double> metric_value(const std::string &text, const std::string &series) {
  size_t pos = 0;
  while ((pos = text.find(series, pos)) != std::string::npos) {
    const bool line_start = pos == 0 || text[pos - 1] == '\n';
    const size_t after = pos + series.size();
    if (line_start && after < text.size() && text[after] == ' ') {
      return std::strtod(text.c_str() + after + 1, nullptr);
    }
    pos = after;
  }
  return std::nullopt;
}

} // namespace gantry::testing
