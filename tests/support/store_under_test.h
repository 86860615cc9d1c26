// Which store the integration tests' servers use, so one test body runs on both (issue 13: the
// PostgreSQL adapters are held to the same tests as SQLite).
//
//   GANTRY_TEST_STORE unset or "sqlite"  every server keeps its state in <data-dir>/gantry.db.
//   GANTRY_TEST_STORE=postgresql         every server also gets --database-url to a database of
//                                        its own (one per data directory, so a restart on the same
//                                        directory finds its state again) in one real cluster.
//
// The cluster: with GANTRY_TEST_PG_CLUSTER=<dir> (what ctest's `_pg` variants set), the one that
// `pg_test_cluster start <dir>` left running for the whole ctest run (a fixture; it is stopped by
// `pg_test_cluster stop <dir>` even when tests fail); otherwise one started on first use by this
// process and stopped at its exit. Each process drops the databases it created when it exits.
//
// Header-only. Threading: called from the test's main thread (ServerProcess::start and the tests).
#pragma once

#include <gtest/gtest.h>

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "core/result.h"
#include "support/postgres_process.h"

namespace gantry::testing {

// Exits the process on a value it does not know: a typo must not silently test SQLite.
inline bool postgres_selected() {
  static const bool pg = [] {
    const char *v = std::getenv("GANTRY_TEST_STORE");
    const std::string s = v ? v : "";
    if (s.empty() || s == "sqlite")
      return false;
    if (s == "postgresql" || s == "postgres")
      return true;
    std::fprintf(stderr, "GANTRY_TEST_STORE=%s: expected sqlite or postgresql\n", s.c_str());
    std::exit(2);
  }();
  return pg;
}

// The databases of this process in one cluster, keyed by data directory.
class TestDatabases {
public:
  static TestDatabases &instance() {
    static TestDatabases d;
    return d;
  }

  // The URL of the database that servers on `data_dir` share; created on first use.
  Result<std::string> url_for(const std::string &data_dir) {
    std::lock_guard<std::mutex> lk(mu_);
    if (auto it = urls_.find(data_dir); it != urls_.end())
      return it->second;
    if (port_ == 0) {
      std::string why;
      if (!connect_cluster(&why))
        return Err(ErrorCode::kInternal, "GANTRY_TEST_STORE=postgresql: " + why);
    }
    // pid and time: unique among processes sharing the cluster, even when pids are reused.
    const auto t = std::chrono::steady_clock::now().time_since_epoch().count();
    const std::string name = "it_" + std::to_string(::getpid()) + "_" +
                             std::to_string(static_cast<unsigned long long>(t) % 1000000007ULL) +
                             "_" + std::to_string(names_.size());
    if (!PostgresProcess::create_database_at(port_, name))
      return Err(ErrorCode::kInternal, "GANTRY_TEST_STORE=postgresql: createdb " + name +
                                           " failed on 127.0.0.1:" + std::to_string(port_));
    names_.push_back(name);
    return urls_[data_dir] = PostgresProcess::url_at(port_, name);
  }

  // `psql -tA -c sql` on `url`: its output without the final newline, or nullopt on an error.
  static std::optional<std::string> psql(const std::string &url, const std::string &sql) {
    const std::string cmd = std::string(PostgresProcess::kBin) +
                            "psql -X -q -tA -v ON_ERROR_STOP=1 '" + url + "' -c \"" + sql +
                            "\" 2>&1";
    FILE *f = ::popen(cmd.c_str(), "r");
    if (f == nullptr)
      return std::nullopt;
    std::string out;
    char buf[4096];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0)
      out.append(buf, n);
    if (::pclose(f) != 0)
      return std::nullopt;
    while (!out.empty() && out.back() == '\n')
      out.pop_back();
    return out;
  }

  // DROP DATABASE ... WITH (FORCE) for the database at `url` (one url_for() made): the store
  // going away under a running server.
  static bool drop(const std::string &url) {
    const auto slash = url.rfind('/');
    if (slash == std::string::npos)
      return false;
    return psql(url.substr(0, slash) + "/postgres",
                "DROP DATABASE " + url.substr(slash + 1) + " WITH (FORCE)")
        .has_value();
  }

  TestDatabases(const TestDatabases &) = delete;
  TestDatabases &operator=(const TestDatabases &) = delete;

private:
  TestDatabases() = default;
  // Runs at exit, after every test's servers are gone; an owned cluster goes away whole.
  ~TestDatabases() {
    if (own_)
      return;
    for (const auto &n : names_)
      (void)PostgresProcess::drop_database_at(port_, n);
  }

  bool connect_cluster(std::string *why) {
    if (const char *dir = std::getenv("GANTRY_TEST_PG_CLUSTER"); dir && *dir) {
      std::ifstream in(std::string(dir) + "/port");
      int port = 0;
      if (!(in >> port) || port <= 0 || port > 65535) {
        *why = std::string("no running cluster recorded in ") + dir +
               "/port (ctest runs `pg_test_cluster start` first: run the `_pg` tests through "
               "ctest, or unset GANTRY_TEST_PG_CLUSTER to start one in this process)";
        return false;
      }
      port_ = static_cast<std::uint16_t>(port);
      return true;
    }
    own_ = PostgresProcess::start_new(why);
    if (!own_)
      return false;
    port_ = own_->port();
    return true;
  }

  std::mutex mu_;
  std::unique_ptr<PostgresProcess> own_;
  std::uint16_t port_ = 0;
  std::map<std::string, std::string> urls_;
  std::vector<std::string> names_;
};

// "--data-dir 'D'" and, on PostgreSQL, " --database-url 'U'": a `gantry keys|db` command on the
// state of the servers that ran on `data_dir`.
inline std::string store_flags(const std::string &data_dir) {
  std::string flags = "--data-dir '" + data_dir + "'";
  if (postgres_selected()) {
    auto url = TestDatabases::instance().url_for(data_dir);
    EXPECT_TRUE(url) << (url ? "" : url.error().message);
    if (url)
      flags += " --database-url '" + *url + "'";
  }
  return flags;
}

} // namespace gantry::testing

// For a test that checks what only the embedded store does (its file, WAL, `gantry db` on the
// file): skipped, with the reason, when the suite runs on PostgreSQL.
#define GANTRY_SQLITE_ONLY(reason)                                                                 \
  do {                                                                                             \
    if (::gantry::testing::postgres_selected())                                                    \
      GTEST_SKIP() << "SQLite only: " << (reason);                                                 \
  } while (0)
