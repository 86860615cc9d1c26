// A real redis-server (Debian's package) for tests: started on a free 127.0.0.1 port with no
// persistence, in a temporary directory, and killed by the destructor. stop()/start() restart it
// on the same port (the outage tests); kill() is kill -9.
//
// Header-only so any test target can use it without a support library.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "support/loopback_port.h"

namespace gantry::testing {

class RedisProcess {
public:
  static constexpr const char *kBinary = "/usr/bin/redis-server";
  static bool available() { return ::access(kBinary, X_OK) == 0; }

  // nullptr when redis-server is missing or did not come up within 5 s.
  // `extra`: more redis-server options ("--requirepass", "s3cret").
  static std::unique_ptr<RedisProcess> start_new(std::vector<std::string> extra = {}) {
    std::unique_ptr<RedisProcess> p(new RedisProcess());
    p->extra_ = std::move(extra);
    char tmpl[] = "/tmp/gantry-redis-XXXXXX";
    if (!::mkdtemp(tmpl))
      return nullptr;
    p->dir_ = tmpl;
    for (int attempt = 0; attempt < 5; ++attempt) {
      p->port_ = free_loopback_port();
      if (p->start())
        return p;
    }
    return nullptr;
  }

  ~RedisProcess() {
    stop();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  bool start() {
    if (pid_ > 0)
      return true;
    pid_ = ::fork();
    if (pid_ == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL); // never outlive the test
      std::vector<std::string> args{kBinary,
                                    "--port",
                                    std::to_string(port_),
                                    "--bind",
                                    "127.0.0.1",
                                    "--save",
                                    "",
                                    "--appendonly",
                                    "no",
                                    "--dir",
                                    dir_,
                                    "--daemonize",
                                    "no",
                                    "--loglevel",
                                    "warning",
                                    "--logfile",
                                    dir_ + "/redis.log"};
      args.insert(args.end(), extra_.begin(), extra_.end());
      std::vector<char *> argv;
      for (auto &a : args)
        argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv(kBinary, argv.data());
      ::_exit(127);
    }
    for (int i = 0; i < 500; ++i) {
      if (loopback_accepts(port_))
        return true;
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return false; // the port was taken meanwhile
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    stop();
    return false;
  }

  void stop() { signal_and_reap(SIGTERM); }
  void kill() { signal_and_reap(SIGKILL); }

  std::uint16_t port() const { return port_; }
  std::string url() const { return "redis://127.0.0.1:" + std::to_string(port_); }

private:
  RedisProcess() = default;

  void signal_and_reap(int sig) {
    if (pid_ <= 0)
      return;
    ::kill(pid_, sig);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
  }

  pid_t pid_ = -1;
  std::uint16_t port_ = 0;
  std::string dir_;
  std::vector<std::string> extra_;
};

} // namespace gantry::testing
