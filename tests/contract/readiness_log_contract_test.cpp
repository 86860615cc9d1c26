// The ReadinessLog port (dashboard/status_history.h) against each adapter: the in-memory one and
// the SQLite table behind /status.
#include <gtest/gtest.h>

#include <memory>

#include "control/temp_dir.h"
#include "dashboard/status_history.h"
#include "store/sqlite/sqlite_readiness_log.h"
#include "store/sqlite/sqlite_store.h"

namespace gantry::dashboard {
namespace {

struct MemoryFactory {
  std::unique_ptr<ReadinessLog> open() { return std::make_unique<MemoryReadinessLog>(); }
};

struct SqliteFactory {
  testing::TempDir dir;
  std::unique_ptr<ReadinessLog> open() {
    auto s = control::SqliteStore::open(dir.path()); // creates and migrates gantry.db
    EXPECT_TRUE(s) << s.error().message;
    auto log = SqliteReadinessLog::open(control::database_path(dir.path()));
    EXPECT_TRUE(log) << log.error().message;
    return log ? std::move(log).value() : nullptr;
  }
};

template <typename F> class ReadinessLogContract : public ::testing::Test {
protected:
  F factory;
};
using Factories = ::testing::Types<MemoryFactory, SqliteFactory>;
TYPED_TEST_SUITE(ReadinessLogContract, Factories);

TYPED_TEST(ReadinessLogContract, CountsPerModelSinceATime) {
  auto log = this->factory.open();
  ASSERT_TRUE(log);
  ASSERT_TRUE(log->append({{"a", 1000, ModelState::kUp, 1.5},
                           {"b", 1000, ModelState::kDown, 0},
                           {"a", 2000, ModelState::kDegraded, 3000},
                           {"a", 3000, ModelState::kDown, 0},
                           {"b", 3000, ModelState::kUp, 2}}));
  auto all = log->counts(0);
  ASSERT_TRUE(all);
  ASSERT_EQ(all->size(), 2u);
  EXPECT_EQ((*all)[0].model, "a");
  EXPECT_EQ((*all)[0].up, 2);
  EXPECT_EQ((*all)[0].total, 3);
  EXPECT_EQ((*all)[1].up, 1);
  EXPECT_EQ((*all)[1].total, 2);
  auto recent = log->counts(2500);
  ASSERT_TRUE(recent);
  ASSERT_EQ(recent->size(), 2u);
  EXPECT_EQ((*recent)[0].total, 1);
  EXPECT_EQ((*recent)[0].up, 0);
}

TYPED_TEST(ReadinessLogContract, DownSamplesOldestFirstNewestKeptByTheLimit) {
  auto log = this->factory.open();
  ASSERT_TRUE(log);
  ASSERT_TRUE(log->append({{"a", 1000, ModelState::kDown, 0},
                           {"a", 2000, ModelState::kUp, 1},
                           {"a", 3000, ModelState::kDown, 0},
                           {"b", 4000, ModelState::kDown, 0}}));
  auto d = log->down_since(0, 10);
  ASSERT_TRUE(d);
  ASSERT_EQ(d->size(), 3u);
  EXPECT_EQ((*d)[0].t_ms, 1000);
  EXPECT_EQ((*d)[2].model, "b");
  auto last2 = log->down_since(0, 2);
  ASSERT_TRUE(last2);
  ASSERT_EQ(last2->size(), 2u);
  EXPECT_EQ((*last2)[0].t_ms, 3000);
  auto since = log->down_since(3500, 10);
  ASSERT_TRUE(since);
  ASSERT_EQ(since->size(), 1u);
}

TYPED_TEST(ReadinessLogContract, PurgeDropsOlderSamples) {
  auto log = this->factory.open();
  ASSERT_TRUE(log);
  ASSERT_TRUE(log->append({{"a", 1000, ModelState::kUp, 1}, {"a", 5000, ModelState::kUp, 1}}));
  ASSERT_TRUE(log->purge(2000));
  auto c = log->counts(0);
  ASSERT_TRUE(c);
  ASSERT_EQ(c->size(), 1u);
  EXPECT_EQ((*c)[0].total, 1);
}

} // namespace
} // namespace gantry::dashboard
