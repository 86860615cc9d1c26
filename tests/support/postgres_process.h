// A real PostgreSQL (Debian's package) for tests: a fresh cluster (initdb) in a temporary
// directory, started with pg_ctl on a free 127.0.0.1 port, stopped and removed by the destructor.
// PostgreSQL refuses to run as root, and CI runs as root: then the cluster belongs to the
// `postgres` system user (created by the package) and every command runs through runuser.
//
// Header-only; several seconds to start (initdb), so suites share one per test binary and give
// each test its own database (create_database()).
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>

#include "support/loopback_port.h"

namespace gantry::testing {

class PostgresProcess {
public:
  static constexpr const char *kBin = "/usr/lib/postgresql/15/bin/";
  static bool available() { return ::access((std::string(kBin) + "pg_ctl").c_str(), X_OK) == 0; }

  // nullptr (and the reason in *why) when PostgreSQL is missing or does not start.
  static std::unique_ptr<PostgresProcess> start_new(std::string *why = nullptr) {
    std::unique_ptr<PostgresProcess> p(new PostgresProcess());
    auto fail = [&](const std::string &msg) -> std::unique_ptr<PostgresProcess> {
      if (why)
        *why = msg;
      return nullptr;
    };
    if (!available())
      return fail("PostgreSQL 15 is not installed (scripts/bootstrap.sh installs it)");
    char tmpl[] = "/tmp/gantry-pg-XXXXXX";
    if (!::mkdtemp(tmpl))
      return fail("mkdtemp failed");
    p->dir_ = tmpl;
    p->as_ = ::geteuid() == 0 ? "runuser -u postgres -- " : "";
    if (::geteuid() == 0) {
      std::filesystem::permissions(p->dir_, std::filesystem::perms::all);
      if (!p->sh("chown postgres " + p->dir_))
        return fail("cannot hand " + p->dir_ + " to the postgres user");
    }
    if (!p->sh(p->as_ + kBin + "initdb -D " + p->dir_ +
               "/data -U gantry --auth=trust -E UTF8 --no-locale >" + p->dir_ + "/initdb.log 2>&1"))
      return fail("initdb failed; see " + p->dir_ + "/initdb.log");
    for (int attempt = 0; attempt < 5; ++attempt) {
      p->port_ = free_loopback_port();
      if (p->start())
        return p;
    }
    return fail("pg_ctl start failed; see " + p->dir_ + "/pg.log");
  }

  ~PostgresProcess() {
    stop();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  bool start() {
    // Unix sockets in the cluster's own directory; TCP on loopback only; fsync off (tests).
    return sh(as_ + kBin + "pg_ctl -D " + dir_ + "/data -l " + dir_ + "/pg.log -w -t 30 -o \"-p " +
              std::to_string(port_) + " -k " + dir_ +
              " -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off"
              " -c full_page_writes=off -c max_connections=200\" start >/dev/null 2>&1");
  }
  void stop() {
    (void)sh(as_ + kBin + "pg_ctl -D " + dir_ + "/data -m fast -w stop >/dev/null 2>&1");
  }
  // kill -9 of the postmaster (its children exit when it is gone).
  void kill() {
    (void)sh("kill -9 $(head -1 " + dir_ + "/data/postmaster.pid) 2>/dev/null");
    (void)sh("sleep 0.2; rm -f " + dir_ + "/data/postmaster.pid");
  }

  // A new empty database; its URL.
  std::string create_database(const std::string &name) {
    (void)create_database_at(port_, name);
    return url(name);
  }
  std::string url(const std::string &db) const { return url_at(port_, db); }
  std::uint16_t port() const { return port_; }
  // The cluster's directory (data/, pg.log, the socket).
  const std::string &dir() const { return dir_; }

  // The same for a cluster this process did not start (one shared by several test processes,
  // tests/support/pg_test_cluster.cpp): only the port is known.
  static bool create_database_at(std::uint16_t port, const std::string &name) {
    return std::system((std::string(kBin) + "createdb -h 127.0.0.1 -p " + std::to_string(port) +
                        " -U gantry " + name + " >/dev/null 2>&1")
                           .c_str()) == 0;
  }
  // WITH (FORCE): a server killed by a test may leave a backend that has not noticed yet.
  static bool drop_database_at(std::uint16_t port, const std::string &name) {
    return std::system((std::string(kBin) + "dropdb --force -h 127.0.0.1 -p " +
                        std::to_string(port) + " -U gantry " + name + " >/dev/null 2>&1")
                           .c_str()) == 0;
  }
  static std::string url_at(std::uint16_t port, const std::string &db) {
    return "postgresql://gantry@127.0.0.1:" + std::to_string(port) + "/" + db;
  }
  // Stops the cluster in `dir` (one start_new() made) and removes the directory.
  static void stop_and_remove(const std::string &dir) {
    const std::string as = ::geteuid() == 0 ? "runuser -u postgres -- " : "";
    (void)std::system(
        (as + kBin + "pg_ctl -D " + dir + "/data -m fast -w stop >/dev/null 2>&1").c_str());
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }

private:
  PostgresProcess() = default;
  bool sh(const std::string &cmd) const { return std::system(cmd.c_str()) == 0; }

  std::string dir_;
  std::string as_;
  std::uint16_t port_ = 0;
};

} // namespace gantry::testing
