// The real `gantry serve` binary in a child process, for integration tests: started on port 0,
// ready once it printed its "Gantry listening on" line, and always gone (SIGKILL, reaped) when
// the object is destroyed, so a failing assertion never leaks a server. With
// GANTRY_TEST_STORE=postgresql each server also gets --database-url (support/store_under_test.h).
//
// Threading: owned by the test's main thread. A private thread drains the child's stdout so the
// child never blocks on a full pipe.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "core/result.h"
#include "http/client.h"

namespace gantry::testing {

struct ServerProcessOptions {
  // Flags after `gantry serve --port 0 --data-dir <tmp>`, e.g. {"--max-seqs", "1"}.
  std::vector<std::string> args;
  // When non-empty, written to <tmp>/gantry.toml and passed as --config.
  std::string config_toml;
  std::chrono::milliseconds start_timeout{30'000};
  // Extra environment ("GANTRY_ADMIN_TOKEN=..."); the caller's GANTRY_* variables are dropped.
  std::vector<std::string> env;
  // When non-empty, the data directory to use instead of a fresh one (a restart after a crash).
  std::string data_dir;
  // The port to listen on; 0 = any free one (a restarted backend must keep its address).
  std::uint16_t port = 0;
};

class ServerProcess {
public:
  // Starts the binary (GANTRY_BINARY) and waits for its listening line.
  static Result<std::unique_ptr<ServerProcess>> start(ServerProcessOptions options);
  static Result<std::unique_ptr<ServerProcess>> start(std::vector<std::string> args,
                                                      std::string config_toml = {}) {
    ServerProcessOptions o;
    o.args = std::move(args);
    o.config_toml = std::move(config_toml);
    return start(std::move(o));
  }
  ~ServerProcess(); // SIGKILL when still running, then reaps; removes the temporary directory

  ServerProcess(const ServerProcess &) = delete;
  ServerProcess &operator=(const ServerProcess &) = delete;

  std::uint16_t port() const { return port_; }
  std::string data_dir() const { return data_dir_; }
  // The PostgreSQL database this server keeps its state in (GANTRY_TEST_STORE=postgresql, see
  // support/store_under_test.h); empty when it is on SQLite or the test passed its own URL.
  const std::string &database_url() const { return database_url_; }
  pid_t pid() const { return pid_; }
  std::string base_url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  http::ClientOptions
  client_options(std::chrono::milliseconds timeout = std::chrono::seconds(20)) const;

  // Sends `sig` (SIGTERM, SIGINT) to the child.
  void signal(int sig);
  // Waits up to `timeout` for the child to exit; its exit code, or -signal when it was killed
  // by a signal, or std::nullopt when it is still running at the deadline.
  std::optional<int> wait_exit(std::chrono::milliseconds timeout);
  // Everything the child printed on stdout so far.
  std::string output() const;

private:
  ServerProcess() = default;

  pid_t pid_ = -1;
  std::uint16_t port_ = 0;
  std::string tmp_dir_;
  std::string data_dir_;
  std::string database_url_;
  std::optional<int> exit_code_;
  int stdout_fd_ = -1;
  std::thread drainer_;
  mutable std::mutex mu_;
  std::string output_;
};

// A GET /metrics sample parsed into the value of one series, e.g.
// metric_value(text, "gantry:num_requests_running{model_name=\"stories260K\"}").
std::optional<double> metric_value(const std::string &metrics_text, const std::string &series);

} // namespace gantry::testing
