#include "control/backup_scheduler.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "control/test_store.h"
#include "support/fake_clock.h"

namespace gantry::control {
namespace {

using namespace std::chrono_literals;

TEST(BackupScheduler, WritesSoundCopiesAndKeepsTheNewest) {
  testing::TempStore store;
  FakeClock clock;
  ASSERT_TRUE(store->put_project(Project{"p", {1, 2, 3}, 0}));
  BackupOptions o;
  o.keep = 2;
  o.dir = store.dir() + "/backups";
  BackupScheduler b([&store](const std::string &path) { return store->backup_to(path); }, o, clock,
                    nullptr); // interval 0: no thread, run_once only
  std::vector<std::string> written;
  for (int i = 0; i < 3; ++i) {
    auto f = b.run_once();
    ASSERT_TRUE(f) << f.error().message;
    written.push_back(*f);
    clock.advance(1s);
  }
  auto files = b.list();
  ASSERT_EQ(files.size(), 2u);
  EXPECT_EQ(files[0], written[1]);
  EXPECT_EQ(files[1], written[2]);
  // A backup is a complete database: restore it elsewhere and read the project back.
  const std::string other = store.dir() + "/restored";
  ASSERT_TRUE(restore_database(files[1], other));
  auto reopened = SqliteStore::open(other);
  ASSERT_TRUE(reopened);
  auto p = (*reopened)->get_project("p");
  ASSERT_TRUE(p);
  ASSERT_TRUE(p->has_value());
  EXPECT_EQ((*p)->limits.tpm, 2);
}

} // namespace
} // namespace gantry::control
