// nginx (Debian's package) as a real fixed-response upstream for tests and benchmarks, started
// on 127.0.0.1 with a generated config in a temporary directory — never the system service.
// `locations` is the inside of the server block (location blocks, `return` statements).
//
// Threading: owned by one thread. The process is stopped (and reaped) by the destructor.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>

#include "core/result.h"
#include "support/loopback_port.h"

namespace gantry::testing {

struct NginxOptions {
  std::string locations;  // server-block body
  std::string http_extra; // extra http-level directives (upstream blocks)
  int workers = 0;        // 0: one process (master_process off); else worker processes
  std::uint16_t port = 0; // 0: a free port
};

class NginxProcess {
public:
  static bool available(); // /usr/sbin/nginx exists
  static Result<std::unique_ptr<NginxProcess>> start(NginxOptions options);
  ~NginxProcess();
  NginxProcess(const NginxProcess &) = delete;
  NginxProcess &operator=(const NginxProcess &) = delete;

  std::uint16_t port() const { return port_; }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  const std::string &dir() const { return dir_; } // files written here are servable (root)

private:
  NginxProcess() = default;
  pid_t pid_ = -1;
  std::uint16_t port_ = 0;
  std::string dir_;
  bool master_ = false;
};

} // namespace gantry::testing
