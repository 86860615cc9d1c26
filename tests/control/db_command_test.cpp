// `gantry db backup|restore` through the real binary: exit codes, messages, data directory
// resolution (--data-dir and GANTRY_DATA_DIR). Its _pg variant (GANTRY_TEST_STORE=postgresql)
// checks that both refuse, naming the PostgreSQL tools, when the state is in PostgreSQL.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "control/temp_dir.h"
#include "store/sqlite/sqlite_store.h"
#include "support/store_under_test.h"

namespace gantry::control {
namespace {

using gantry::testing::TempDir;

struct CommandRun {
  int rc = -1;
  std::string output; // stdout and stderr
};

CommandRun gantry(const std::string &args, const std::string &env = {}) {
  const std::string cmd = env + (env.empty() ? "" : " ") + "'" GANTRY_BINARY "' " + args + " 2>&1";
  CommandRun run;
  FILE *p = ::popen(cmd.c_str(), "r");
  if (p == nullptr)
    return run;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0)
    run.output.append(buf, n);
  int status = ::pclose(p);
  run.rc = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return run;
}

std::string q(const std::string &s) { return "'" + s + "'"; }

TEST(DbCommandTest, BackupThenRestoreRefusingACorruptFile) {
  GANTRY_SQLITE_ONLY("copies and checks the data directory's gantry.db file");
  TempDir tmp;
  const std::string data = tmp.sub("data");
  {
    auto store = SqliteStore::open(data);
    ASSERT_TRUE(store.ok()) << store.error().message;
    ApiKey k;
    k.id = "k1";
    k.project = "p";
    k.hash = "h";
    ASSERT_TRUE((*store)->insert_key(k).ok());
    std::vector<UsageRecord> rows(500);
    for (size_t i = 0; i < rows.size(); ++i)
      rows[i].request_id = "r" + std::to_string(i);
    ASSERT_TRUE((*store)->append_usage(rows).ok());
  }

  const std::string backup = tmp.sub("backup.db");
  CommandRun r = gantry("db backup " + q(backup) + " --data-dir " + q(data));
  ASSERT_EQ(r.rc, 0) << r.output;
  EXPECT_NE(r.output.find("bytes"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find(backup), std::string::npos) << r.output;

  r = gantry("db backup " + q(tmp.sub("x.db")) + " --data-dir " + q(tmp.sub("nothing")));
  EXPECT_NE(r.rc, 0) << "a missing database is an error, not an empty backup: " << r.output;

  const std::string bad = tmp.sub("bad.db");
  std::filesystem::copy_file(backup, bad);
  {
    std::fstream f(bad, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(std::filesystem::file_size(bad) / 2));
    const std::string junk(8192, '\x33');
    f.write(junk.data(), static_cast<std::streamsize>(junk.size()));
  }
  r = gantry("db restore " + q(bad) + " --data-dir " + q(data));
  EXPECT_NE(r.rc, 0) << r.output;
  EXPECT_NE(r.output.find("refusing to restore"), std::string::npos) << r.output;

  {
    auto store = SqliteStore::open(data);
    ASSERT_TRUE(store.ok());
    r = gantry("db restore " + q(backup) + " --data-dir " + q(data));
    EXPECT_NE(r.rc, 0) << "restore while the database is open: " << r.output;
    EXPECT_NE(r.output.find("in use"), std::string::npos) << r.output;
  }

  const std::string other = tmp.sub("other");
  r = gantry("db restore " + q(backup), "GANTRY_DATA_DIR=" + q(other));
  ASSERT_EQ(r.rc, 0) << r.output;
  EXPECT_NE(r.output.find("restored"), std::string::npos) << r.output;
  auto restored = SqliteStore::open(other);
  ASSERT_TRUE(restored.ok()) << restored.error().message;
  EXPECT_TRUE((*restored)->get_key("k1")->has_value());
  EXPECT_EQ(*(*restored)->count_usage(), 500);
}

TEST(DbCommandTest, OnPostgresBothRefuseAndNameThePostgresTools) {
  if (!gantry::testing::postgres_selected())
    GTEST_SKIP()
        << "PostgreSQL only: runs as DbCommandTest.OnPostgresBothRefuseAndNameThePostgresTools_pg";
  TempDir tmp;
  const std::string data = tmp.sub("data");
  // A SQLite file in the data directory, as a node that ran embedded before would leave.
  {
    auto store = SqliteStore::open(data);
    ASSERT_TRUE(store.ok()) << store.error().message;
    ApiKey k;
    k.id = "sqlite-only";
    k.project = "p";
    k.hash = "h";
    ASSERT_TRUE((*store)->insert_key(k).ok());
  }
  const std::string backup = tmp.sub("backup.db");
  CommandRun r = gantry("db backup " + q(backup) + " " + gantry::testing::store_flags(data));
  EXPECT_EQ(r.rc, 1) << r.output;
  EXPECT_NE(r.output.find("pg_dump"), std::string::npos) << r.output;
  EXPECT_FALSE(std::filesystem::exists(backup)) << "a copy of a file the servers do not use";

  // The URL from the environment, as a deployment sets it: restore must not replace gantry.db
  // and report success while PostgreSQL, which the servers read, is unchanged.
  const std::string url = *gantry::testing::TestDatabases::instance().url_for(data);
  std::filesystem::copy_file(control::database_path(data), backup);
  r = gantry("db restore " + q(backup) + " --data-dir " + q(data), "GANTRY_DATABASE_URL=" + q(url));
  EXPECT_EQ(r.rc, 1) << r.output;
  EXPECT_NE(r.output.find("pg_restore"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("restored"), std::string::npos) << r.output;
}

} // namespace
} // namespace gantry::control
