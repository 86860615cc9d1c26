// `gantry db backup|restore` through the real binary: exit codes, messages, data directory
// resolution (--data-dir and GANTRY_DATA_DIR).
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "control/temp_dir.h"
#include "store/sqlite/sqlite_store.h"

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

} // namespace
} // namespace gantry::control
