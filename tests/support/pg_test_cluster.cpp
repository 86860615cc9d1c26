// `pg_test_cluster start|stop <dir>`: the one PostgreSQL cluster that ctest's `_pg` variants of
// the integration tests share (a ctest fixture: FIXTURES_SETUP runs `start` before the first of
// them, FIXTURES_CLEANUP runs `stop` after the last, also when some failed). `start` records the
// cluster's directory and port in <dir>; each test process then creates its own databases in it
// (support/store_under_test.h). Starting one cluster per run instead of one per test process saves
// an initdb (seconds) per test.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "support/postgres_process.h"

namespace {

using gantry::testing::PostgresProcess;

// Stops the cluster recorded in <dir> (also one left by a run killed before its cleanup). Its
// server log is kept as <dir>/pg.log: errors the adapters caused that no test asserted on.
void stop_recorded(const std::string &dir) {
  std::ifstream in(dir + "/cluster");
  std::string cluster;
  if (in >> cluster && cluster.starts_with("/tmp/gantry-pg-")) {
    std::error_code ec;
    std::filesystem::copy_file(cluster + "/pg.log", dir + "/pg.log",
                               std::filesystem::copy_options::overwrite_existing, ec);
    PostgresProcess::stop_and_remove(cluster);
  }
  std::error_code ec;
  std::filesystem::remove(dir + "/cluster", ec);
  std::filesystem::remove(dir + "/port", ec);
}

int start(const std::string &dir) {
  stop_recorded(dir);
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  std::string why;
  auto pg = PostgresProcess::start_new(&why);
  if (!pg) {
    std::fprintf(stderr, "pg_test_cluster: %s\n", why.c_str());
    return 1;
  }
  std::ofstream(dir + "/cluster") << pg->dir() << "\n";
  // Written last: its presence means the cluster accepts connections.
  std::ofstream(dir + "/port.tmp") << pg->port() << "\n";
  std::filesystem::rename(dir + "/port.tmp", dir + "/port", ec);
  std::printf("PostgreSQL for the _pg tests on 127.0.0.1:%u (%s)\n", pg->port(), pg->dir().c_str());
  // Left running for the tests: `stop` removes it.
  (void)pg.release();
  return ec ? 1 : 0;
}

} // namespace

int main(int argc, char **argv) {
  const std::string cmd = argc == 3 ? argv[1] : "";
  if (cmd == "start")
    return start(argv[2]);
  if (cmd == "stop") {
    stop_recorded(argv[2]);
    return 0;
  }
  std::fprintf(stderr, "usage: pg_test_cluster start|stop <dir>\n");
  return 2;
}
