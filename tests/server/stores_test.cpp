// open_stores(): the one place adapters are chosen. The server gets every port; a CLI command
// only the store aggregates (no job queue, whose opening would reclaim leases, and no caches);
// the aggregates share the embedded database, and backup_to copies it.
#include "server/stores.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "control/temp_dir.h"
#include "store/sqlite/sqlite_store.h"
#include "support/fake_clock.h"

namespace gantry::server {
namespace {

TEST(OpenStores, TheServerGetsEveryPort) {
  gantry::testing::TempDir dir;
  ServerConfig cfg;
  cfg.data_dir = dir.sub("data");
  ModelSpec m;
  m.name = "m";
  m.breaker_usd_per_minute = 1;
  cfg.models.push_back(m);
  FakeClock clock;
  auto s = open_stores(cfg, clock);
  ASSERT_TRUE(s) << s.error().message;
  EXPECT_TRUE(s->control.keys && s->control.ledger && s->control.budgets);
  EXPECT_TRUE(s->control.admission && s->control.idempotency);
  EXPECT_TRUE(s->jobs.queue && s->jobs.records && s->jobs.events);
  EXPECT_TRUE(s->responses && s->embeddings);
  ASSERT_TRUE(s->backup_to);
  EXPECT_EQ(s->control.admission->breaker_models(), std::vector<std::string>{"m"})
      << "the models' breakers are the admission store's";

  // One embedded database: a key written through one aggregate is seen through a new opening.
  ASSERT_TRUE(s->control.keys->put_project({"p", {}, 1}));
  ASSERT_TRUE(s->control.budgets->record_alert(control::OwnerKind::kProject, "p", 0, 50));
  const std::string copy = dir.sub("copy.db");
  ASSERT_TRUE(s->backup_to(copy));
  EXPECT_TRUE(control::verify_database_file(copy));
}

TEST(OpenStores, ACliCommandGetsOnlyTheStoreAggregates) {
  gantry::testing::TempDir dir;
  ServerConfig cfg;
  cfg.data_dir = dir.path();
  FakeClock clock;
  auto s = open_stores(cfg, clock, StoreSet::kControlOnly);
  ASSERT_TRUE(s) << s.error().message;
  EXPECT_TRUE(s->control.keys && s->control.ledger && s->control.budgets && s->backup_to);
  EXPECT_FALSE(s->control.admission || s->control.idempotency);
  EXPECT_FALSE(s->jobs.queue || s->jobs.records || s->jobs.events);
  EXPECT_FALSE(s->responses || s->embeddings);
}

TEST(OpenStores, AnUnusableDataDirectoryIsAnError) {
  gantry::testing::TempDir dir;
  const std::string file = dir.sub("not-a-dir");
  std::FILE *f = std::fopen(file.c_str(), "w");
  ASSERT_NE(f, nullptr);
  std::fclose(f);
  ServerConfig cfg;
  cfg.data_dir = file;
  FakeClock clock;
  EXPECT_FALSE(open_stores(cfg, clock));
}

} // namespace
} // namespace gantry::server
